"""What every flow's assets and checks share: asset keys, the retry policy, and how a partitioned
check's outcome is recorded for incidents and compensation."""

from datetime import datetime, timedelta

import dagster as dg

from assets.loading.warehouse import Tx, Warehouse
from assets.remediation.state import CheckOutcome, record_check
from expectations.contract import Contract

COMPENSATE_TAG = "meshline/compensate"  # on a run: reload partitions regardless of the watermark, replaying dead letters

RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def asset_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey(["raw", contract.name])


def judged_as_of(s: Tx, table: str, sla: timedelta = timedelta(0)) -> tuple[datetime | None, datetime]:
    """(the other side's newest loaded change, the cutoff for "past the SLA" as of it). Reconciliations
    judge a record late only against what the other side has actually loaded, so a side that is merely
    behind never reads as a sync failure; before it has loaded anything, nothing is past the SLA."""
    as_of = s.scalar(f"SELECT max(updated_at) FROM {table}")
    return as_of, (as_of - sla) if as_of is not None else datetime(1900, 1, 1)


def recorded(context: dg.AssetCheckExecutionContext, wh: Warehouse, contract: Contract, check_name: str,
             result: dg.AssetCheckResult, *, remediable: bool, targets: tuple[str, ...] = ()) -> dg.AssetCheckResult:
    """Store a partitioned check's outcome in `meshline.check_results` and open or resolve its incident
    (assets.remediation.state); the compensating-backfill sensor reads what is stored. `remediable`:
    a failure a compensating run can act on (not, e.g., dead letters within the contract's SLO)."""
    sev = "ERROR" if result.severity == dg.AssetCheckSeverity.ERROR else "WARN"
    what = record_check(wh, CheckOutcome(
        flow=contract.boundary_flow, contract=contract.name, contract_severity=contract.severity,
        asset=contract.name, check_name=check_name, partition_key=context.partition_key, passed=result.passed,
        severity=sev, remediable=remediable and not result.passed, description=result.description or "",
        run_id=context.run.run_id, target_partitions=targets))
    if what:
        context.log.info(f"incident {what}: {contract.name} {check_name} {context.partition_key}")
    return result
