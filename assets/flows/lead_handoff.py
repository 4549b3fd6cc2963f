"""lead_handoff: marketing automation → CRM.

Assets `raw/marketing_leads` and `raw/crm_leads`; their contract checks; and the reconciliation check
that exposes the flow's sync failures for the MQLs of one day: an MQL older than the handoff SLA with
no CRM lead (`missing`), and an MQL turned into more than one CRM lead (`duplicated`). "Older than the
SLA" is judged as of the CRM side's latest loaded change, so a CRM that is merely behind does not read
as a missing handoff before its own data is in.
"""


from datetime import timedelta
from typing import Any

import dagster as dg

from assets.config import Boundary
from assets.flows.boundary import build_boundaries
from assets.flows.common import asset_key, judged_as_of, recorded
from assets.loading.ddl import raw_table
from assets.loading.warehouse import Warehouse
from assets.loading.watermark import daily_window
from assets.resources import WarehouseResource
from expectations.contract import Contract
from expectations.registry import load_contract

FLOW = "lead_handoff"
HANDOFF_SLA = timedelta(hours=24)
SLA = HANDOFF_SLA  # the flow's reconciliation SLA: how far back the nightly re-judges
LOOKBACK = timedelta(hours=6)
SAMPLE_KEYS = 5


def contracts() -> tuple[Contract, Contract]:
    return load_contract("marketing_leads"), load_contract("crm_leads")


def reconcile(wh: Warehouse, partition_key: str, sla: timedelta = HANDOFF_SLA) -> dict[str, Any]:
    """Counts (and a few sample lead ids, which are not PII) for the MQLs of one day."""
    marketing, crm = contracts()
    window = daily_window(partition_key)
    m, c = raw_table(marketing), raw_table(crm)
    with wh.session() as s:
        as_of, cutoff = judged_as_of(s, c, sla)
        rows = s.query(
            f"WITH mql AS (SELECT lead_id, mql_at FROM {m} WHERE mql_at >= ? AND mql_at < ?),"
            f" crm AS (SELECT marketing_lead_id, count(*) AS n FROM {c}"
            f"  WHERE marketing_lead_id IN (SELECT lead_id FROM mql) GROUP BY marketing_lead_id)"
            f" SELECT mql.lead_id, coalesce(crm.n, 0) AS n, mql.mql_at <= ? AS due"
            f" FROM mql LEFT JOIN crm ON crm.marketing_lead_id = mql.lead_id ORDER BY mql.lead_id",
            (window.start, window.end, cutoff))
    missing = [r[0] for r in rows if r[1] == 0 and r[2]]
    duplicated = [r[0] for r in rows if r[1] > 1]
    pending = [r[0] for r in rows if r[1] == 0 and not r[2]]
    return {"mqls": len(rows), "missing": missing, "duplicated": duplicated, "pending": len(pending),
            "as_of": as_of.isoformat() if as_of else None}


def handoff_reconciliation_check(partitions_def: dg.PartitionsDefinition, pool: str | None
                                 ) -> dg.AssetChecksDefinition:
    marketing, crm = contracts()

    @dg.asset_check(
        asset=asset_key(marketing), name="handoff_reconciliation", partitions_def=partitions_def,
        additional_deps=[asset_key(crm)], pool=pool,
        description=(f"MQLs of the day with no CRM lead after the {HANDOFF_SLA.total_seconds() / 3600:.0f} h "
                     "handoff SLA, and MQLs with more than one CRM lead."),
        metadata={"handoff_sla_hours": HANDOFF_SLA.total_seconds() / 3600},
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        wh = warehouse.get()
        if not (wh.table_exists("raw", crm.name) and wh.table_exists("raw", marketing.name)):
            return recorded(context, wh, marketing, "handoff_reconciliation", dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.ERROR,
                description="raw.marketing_leads or raw.crm_leads has never been loaded"), remediable=True)
        r = reconcile(wh, context.partition_key)
        n_missing, n_dup = len(r["missing"]), len(r["duplicated"])
        return recorded(context, wh, marketing, "handoff_reconciliation", dg.AssetCheckResult(
            passed=n_missing == 0 and n_dup == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{n_missing} MQL(s) missing in the CRM past the SLA, {n_dup} duplicated",
            metadata={
                "mqls": r["mqls"], "missing": n_missing, "duplicated": n_dup, "pending": r["pending"],
                "as_of": r["as_of"] or "never",
                "sample_missing_lead_ids": dg.MetadataValue.json(r["missing"][:SAMPLE_KEYS]),
                "sample_duplicated_lead_ids": dg.MetadataValue.json(r["duplicated"][:SAMPLE_KEYS]),
            },
        ), remediable=True)

    return _check


def build(partitions_def: dg.PartitionsDefinition, pool: str | None, boundaries: list[Boundary] | None = None
          ) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """(assets, checks) of the lead_handoff flow. `boundaries` (from meshline.yaml) may pin other
    contract versions and lookbacks; by default the registry's pins and a 6 h lookback."""
    _, assets, checks = build_boundaries(("marketing_leads", "crm_leads"), partitions_def, pool, boundaries, LOOKBACK)
    checks.append(handoff_reconciliation_check(partitions_def, pool))
    return assets, checks
