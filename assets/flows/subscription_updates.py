"""subscription_updates: product → billing.

Assets `raw/product_plan_events` (an event stream; the event id is the idempotency key) and
`raw/billing_subscriptions`, their contract checks, and the reconciliation check that exposes the
flow's sync failures. For every account whose latest plan event occurred on the partition's day:

- `not_reflected`  billing's subscription does not carry the event's plan and billing has not applied any
                   plan since the event, past the SLA (judged as of billing's latest loaded change, so a
                   billing feed that is merely behind does not read as a failure);
- `plan_mismatch`  billing applied a plan after the event, but not the event's plan;
- `pending`        not reflected yet, within the SLA.
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
from expectations.registry import load_contract

FLOW = "subscription_updates"
PLAN_SYNC_SLA = timedelta(hours=12)
SLA = PLAN_SYNC_SLA  # the flow's reconciliation SLA: how far back the nightly re-judges
BOUNDARIES = ("product_plan_events", "billing_subscriptions")
SAMPLE_KEYS = 5


def reconcile(wh: Warehouse, partition_key: str, sla: timedelta = PLAN_SYNC_SLA) -> dict[str, Any]:
    """Per status, the accounts (not PII) whose latest plan event falls on the day."""
    events, subs = (raw_table(load_contract(n)) for n in BOUNDARIES)
    w = daily_window(partition_key)
    with wh.session() as s:
        as_of, cutoff = judged_as_of(s, subs, sla)
        rows = s.query(
            f"WITH latest AS (SELECT account_id, plan, occurred_at, row_number() OVER"
            f"  (PARTITION BY account_id ORDER BY occurred_at DESC, event_id DESC) AS rn FROM {events}),"
            f" billed AS (SELECT account_id, plan, plan_effective_at, row_number() OVER"
            f"  (PARTITION BY account_id ORDER BY updated_at DESC, subscription_id DESC) AS rn FROM {subs})"
            f" SELECT l.account_id, l.plan, l.occurred_at <= ? AS due, b.plan, b.plan_effective_at >= l.occurred_at"
            f" FROM latest l LEFT JOIN billed b ON b.account_id = l.account_id AND b.rn = 1"
            f" WHERE l.rn = 1 AND l.occurred_at >= ? AND l.occurred_at < ? ORDER BY l.account_id",
            (cutoff, w.start, w.end))
    out: dict[str, Any] = {"accounts": len(rows), "in_sync": 0, "not_reflected": [], "plan_mismatch": [], "pending": 0,
                 "as_of": as_of.isoformat() if as_of else None}
    for account, plan, due, billed_plan, applied_since in rows:
        if billed_plan == plan:
            out["in_sync"] += 1
        elif billed_plan is not None and applied_since:
            out["plan_mismatch"].append(account)
        elif due:
            out["not_reflected"].append(account)
        else:
            out["pending"] += 1
    return out


def plan_sync_check(partitions_def: dg.PartitionsDefinition, pool: str | None) -> dg.AssetChecksDefinition:
    events, subs = (load_contract(n) for n in BOUNDARIES)

    @dg.asset_check(
        asset=asset_key(events), name="plan_sync_reconciliation", partitions_def=partitions_def,
        additional_deps=[asset_key(subs)], pool=pool,
        description=(f"Accounts whose latest plan change (of the day) billing has not reflected within the "
                     f"{PLAN_SYNC_SLA.total_seconds() / 3600:.0f} h SLA, or reflected with another plan."),
        metadata={"plan_sync_sla_hours": PLAN_SYNC_SLA.total_seconds() / 3600},
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        wh = warehouse.get()
        if not all(wh.table_exists("raw", n) for n in BOUNDARIES):
            return recorded(context, wh, events, "plan_sync_reconciliation", dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.ERROR,
                description="a subscription_updates table has never been loaded"), remediable=True)
        r = reconcile(wh, context.partition_key)
        n_nr, n_mm = len(r["not_reflected"]), len(r["plan_mismatch"])
        return recorded(context, wh, events, "plan_sync_reconciliation", dg.AssetCheckResult(
            passed=n_nr == 0 and n_mm == 0, severity=dg.AssetCheckSeverity.ERROR,
            description=f"{n_nr} plan change(s) not reflected in billing past the SLA, {n_mm} billed on another plan",
            metadata={"accounts": r["accounts"], "in_sync": r["in_sync"], "not_reflected": n_nr,
                      "plan_mismatch": n_mm, "pending": r["pending"], "as_of": r["as_of"] or "never",
                      "sample_account_ids": dg.MetadataValue.json(
                          (r["not_reflected"] + r["plan_mismatch"])[:SAMPLE_KEYS])},
        ), remediable=True)

    return _check


def build(partitions_def: dg.PartitionsDefinition, pool: str | None, boundaries: list[Boundary] | None = None
          ) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    _, assets, checks = build_boundaries(BOUNDARIES, partitions_def, pool, boundaries)
    checks.append(plan_sync_check(partitions_def, pool))
    return assets, checks
