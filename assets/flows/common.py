"""What every flow's assets and checks share: asset keys, the retry policy, how a partitioned check's
outcome is recorded for incidents and compensation, and how a check runs over a range of partitions."""

from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

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


def per_partition(context: dg.AssetCheckExecutionContext, wh: Warehouse | None,
                  evaluate: Callable[[str], Iterable[dg.AssetCheckResult]]) -> Iterator[Any]:
    """A partitioned check's results, for the run's one partition or for each partition of its range.

    Dagster gives a result yielded in a ranged run (a backfill's, under the assets' BackfillPolicy) no
    partition, so over a range each partition's verdict is yielded as an evaluation of that partition,
    exactly as a run of the partition alone would record it, and the check's outputs follow once all
    are judged. A failed blocking evaluation still fails the step, after every partition has its
    verdict. (A check function that yields from here is typed `-> Any`: Dagster's type names one
    result, its runtime takes a generator.)

    `wh`, the warehouse the check reads, is held open through the step (`Warehouse.held`): each
    partition's reads and records would otherwise open the DuckDB file again, several times each."""
    with wh.held() if wh is not None else nullcontext():
        yield from _per_partition(context, evaluate)


def _per_partition(context: dg.AssetCheckExecutionContext,
                   evaluate: Callable[[str], Iterable[dg.AssetCheckResult]]) -> Iterator[Any]:
    if context.has_partition_key:
        yield from evaluate(context.partition_key)
        return
    op = context.op_execution_context
    keys = sorted(op.selected_asset_check_keys, key=str)
    specs = {k: op.assets_def.get_spec_for_check_key(k) for k in keys}
    for part in context.partition_keys:
        for r in evaluate(part):
            key = dg.AssetCheckKey(r.asset_key, r.check_name) if r.asset_key and r.check_name else keys[0]
            yield dg.AssetCheckEvaluation(
                asset_key=key.asset_key, check_name=key.name, passed=r.passed, metadata=r.metadata,
                severity=r.severity, description=r.description, blocking=specs[key].blocking, partition=part)
    for key in keys:
        yield dg.Output(None, output_name=op.assets_def.get_output_name_for_asset_check_key(key))


def recorded(context: dg.AssetCheckExecutionContext, wh: Warehouse, contract: Contract, check_name: str,
             result: dg.AssetCheckResult, *, partition_key: str, remediable: bool,
             targets: tuple[str, ...] = ()) -> dg.AssetCheckResult:
    """Store a partitioned check's outcome in `meshline.check_results` and open or resolve its incident
    (assets.remediation.state); the compensating-backfill sensor reads what is stored. `remediable`:
    a failure a compensating run can act on (not, e.g., dead letters within the contract's SLO)."""
    sev = "ERROR" if result.severity == dg.AssetCheckSeverity.ERROR else "WARN"
    what = record_check(wh, CheckOutcome(
        flow=contract.boundary_flow, contract=contract.name, contract_severity=contract.severity,
        asset=contract.name, check_name=check_name, partition_key=partition_key, passed=result.passed,
        severity=sev, remediable=remediable and not result.passed, description=result.description or "",
        run_id=context.run.run_id, target_partitions=targets))
    if what:
        context.log.info(f"incident {what}: {contract.name} {check_name} {partition_key}")
    return result
