"""quote_to_cash: CRM → billing/ERP.

Assets `raw/crm_opportunities` and `raw/billing_invoices`, their contract checks, and two
reconciliation checks that expose the flow's sync failures:

- `invoice_reconciliation` (on the deals of one day, by close date): closed-won deals with no invoice
  after the invoicing SLA, and invoices whose amount or currency differs from the deal;
- `invoice_has_deal` (on the invoices of one day, by issue date): invoices for an opportunity the CRM
  does not have.

"After the SLA" is judged as of billing's latest loaded change, and "does not have" as of the CRM's,
so a side that is merely behind does not read as a failure before its data is in.
"""

from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from assets.config import Boundary
from assets.flows.boundary import build_boundaries
from assets.flows.common import asset_key, judged_as_of, recorded
from assets.loading.ddl import raw_table
from assets.loading.warehouse import Warehouse
from assets.loading.watermark import daily_window
from assets.resources import WarehouseResource
from expectations.registry import load_contract

FLOW = "quote_to_cash"
INVOICE_SLA = timedelta(hours=48)
SLA = INVOICE_SLA  # the flow's reconciliation SLA: how far back the nightly re-judges
BOUNDARIES = ("crm_opportunities", "billing_invoices")
SAMPLE_KEYS = 5


def reconcile_deals(wh: Warehouse, partition_key: str, sla: timedelta = INVOICE_SLA) -> dict[str, Any]:
    deals, invoices = (raw_table(load_contract(n)) for n in BOUNDARIES)
    w = daily_window(partition_key)
    with wh.session() as s:
        as_of, cutoff = judged_as_of(s, invoices, sla)
        rows = s.query(
            f"SELECT d.opportunity_id, count(i.invoice_id) AS n, d.closed_at <= ? AS due,"
            f" sum(CASE WHEN i.currency <> d.currency THEN 1 ELSE 0 END) AS cur_mm,"
            f" sum(CASE WHEN i.currency = d.currency AND abs(i.amount - d.amount) > 0.005 THEN 1 ELSE 0 END) AS amt_mm"
            f" FROM {deals} d LEFT JOIN {invoices} i ON i.opportunity_id = d.opportunity_id"
            f" WHERE d.stage = 'closed_won' AND d.closed_at >= ? AND d.closed_at < ?"
            f" GROUP BY d.opportunity_id, d.closed_at ORDER BY d.opportunity_id",
            (cutoff, w.start, w.end))
    return {"closed_won": len(rows),
            "missing": [r[0] for r in rows if r[1] == 0 and r[2]],
            "pending": len([r for r in rows if r[1] == 0 and not r[2]]),
            "currency_mismatch": [r[0] for r in rows if (r[3] or 0) > 0],
            "amount_mismatch": [r[0] for r in rows if (r[4] or 0) > 0],
            "as_of": as_of.isoformat() if as_of else None}


def reconcile_invoices(wh: Warehouse, partition_key: str) -> dict[str, Any]:
    deals, invoices = (raw_table(load_contract(n)) for n in BOUNDARIES)
    w = daily_window(partition_key)
    with wh.session() as s:
        as_of, _ = judged_as_of(s, deals)
        rows = s.query(
            f"SELECT i.invoice_id, d.opportunity_id IS NOT NULL AS has_deal, i.issued_at <= ? AS judged"
            f" FROM {invoices} i LEFT JOIN {deals} d ON d.opportunity_id = i.opportunity_id"
            f" WHERE i.issued_at >= ? AND i.issued_at < ? ORDER BY i.invoice_id",
            (as_of or datetime(1900, 1, 1), w.start, w.end))
    return {"invoices": len(rows), "no_deal": [r[0] for r in rows if not r[1] and r[2]],
            "as_of": as_of.isoformat() if as_of else None}


def _both_loaded(wh: Warehouse) -> bool:
    return all(wh.table_exists("raw", n) for n in BOUNDARIES)


def invoice_reconciliation_check(partitions_def: dg.PartitionsDefinition, pool: str | None) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset_key(load_contract("crm_opportunities")), name="invoice_reconciliation",
        partitions_def=partitions_def, additional_deps=[asset_key(load_contract("billing_invoices"))], pool=pool,
        description=(f"Closed-won deals of the day with no invoice after the {INVOICE_SLA.total_seconds() / 3600:.0f} h "
                     "SLA, or an invoice whose amount or currency differs from the deal."),
        metadata={"invoice_sla_hours": INVOICE_SLA.total_seconds() / 3600},
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        wh = warehouse.get()
        deals = load_contract("crm_opportunities")
        if not _both_loaded(wh):
            return recorded(context, wh, deals, "invoice_reconciliation", dg.AssetCheckResult(
                passed=False, description="a quote_to_cash table has never been loaded"), remediable=True)
        r = reconcile_deals(wh, context.partition_key)
        bad = len(r["missing"]) + len(r["amount_mismatch"]) + len(r["currency_mismatch"])
        return recorded(context, wh, deals, "invoice_reconciliation", dg.AssetCheckResult(
            passed=bad == 0, severity=dg.AssetCheckSeverity.ERROR,
            description=(f"{len(r['missing'])} closed-won deal(s) not invoiced past the SLA, "
                         f"{len(r['amount_mismatch'])} amount and {len(r['currency_mismatch'])} currency mismatch(es)"),
            metadata={"closed_won": r["closed_won"], "missing_invoice": len(r["missing"]),
                      "amount_mismatch": len(r["amount_mismatch"]), "currency_mismatch": len(r["currency_mismatch"]),
                      "pending": r["pending"], "as_of": r["as_of"] or "never",
                      "sample_opportunity_ids": dg.MetadataValue.json(
                          (r["missing"] + r["amount_mismatch"] + r["currency_mismatch"])[:SAMPLE_KEYS])},
        ), remediable=True)

    return _check


def invoice_has_deal_check(partitions_def: dg.PartitionsDefinition, pool: str | None) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset_key(load_contract("billing_invoices")), name="invoice_has_deal", partitions_def=partitions_def,
        additional_deps=[asset_key(load_contract("crm_opportunities"))], pool=pool,
        description="Invoices of the day for an opportunity the CRM does not have.",
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        wh = warehouse.get()
        invoices = load_contract("billing_invoices")
        if not _both_loaded(wh):
            return recorded(context, wh, invoices, "invoice_has_deal", dg.AssetCheckResult(
                passed=False, description="a quote_to_cash table has never been loaded"), remediable=True)
        r = reconcile_invoices(wh, context.partition_key)
        return recorded(context, wh, invoices, "invoice_has_deal", dg.AssetCheckResult(
            passed=not r["no_deal"], severity=dg.AssetCheckSeverity.ERROR,
            description=f"{len(r['no_deal'])} invoice(s) with no deal in the CRM",
            metadata={"invoices": r["invoices"], "no_deal": len(r["no_deal"]), "as_of": r["as_of"] or "never",
                      "sample_invoice_ids": dg.MetadataValue.json(r["no_deal"][:SAMPLE_KEYS])},
        ), remediable=True)

    return _check


def build(partitions_def: dg.PartitionsDefinition, pool: str | None, boundaries: list[Boundary] | None = None
          ) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    _, assets, checks = build_boundaries(BOUNDARIES, partitions_def, pool, boundaries)
    checks += [invoice_reconciliation_check(partitions_def, pool), invoice_has_deal_check(partitions_def, pool)]
    return assets, checks
