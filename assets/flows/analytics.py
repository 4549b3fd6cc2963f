"""warehouse_analytics: checks every boundary gets, beside its contract — volume, freshness, gaps.

All three read `meshline.load_log` and `meshline.watermarks`, so they cost nothing at the source:

- volume: rows the partition's loads read against the trailing 14 partitions' average; fails (WARN)
  beyond the tolerance (default ±50%); passes, saying so, while there are fewer than 3 to compare with;
- freshness: as of the partition's end (or now, for today's), the newest change token loaded for the
  boundary is no older than the contract's `freshness_hours` SLO;
- partition gap: no partition between the boundary's first load and this one is missing a load.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from assets.flows.common import asset_key, per_partition, recorded
from assets.loading.ddl import META_SCHEMA
from assets.loading.warehouse import Tx
from assets.loading.watermark import daily_window
from assets.resources import WarehouseResource
from expectations.contract import Contract

TRAILING = 14
MIN_HISTORY = 3
DEFAULT_TOLERANCE = 0.5


def volume_verdict(current: int, history: list[int], tolerance: float) -> tuple[bool, float | None, str]:
    """(passed, deviation from the trailing average, why). Pure."""
    if len(history) < MIN_HISTORY:
        return True, None, f"{len(history)} earlier partition(s: Tx): too few to compare (needs {MIN_HISTORY})"
    avg = sum(history) / len(history)
    if avg == 0:
        return current == 0, None, "trailing average is 0"
    dev = (current - avg) / avg
    ok = abs(dev) <= tolerance
    return ok, dev, f"{current} rows vs trailing average {avg:.0f} ({dev:+.0%}; tolerance ±{tolerance:.0%})"


def _volumes(s: Tx, asset: str) -> dict[str, int]:
    return {k: int(v) for k, v in s.query(
        f"SELECT partition_key, max(rows_read) FROM {META_SCHEMA}.load_log WHERE asset = ? GROUP BY partition_key",
        (asset,))}


def analytics_checks(contract: Contract, partitions_def: dg.PartitionsDefinition, pool: str | None,
                     tolerance: float = DEFAULT_TOLERANCE) -> list[dg.AssetChecksDefinition]:
    key = asset_key(contract)
    name = contract.name
    fresh_h = contract.slos.get("freshness_hours")

    @dg.asset_check(asset=key, name=f"volume_{name}", partitions_def=partitions_def, pool=pool,
                    metadata={"tolerance": tolerance},
                    description=f"Rows read against the trailing {TRAILING} partitions' average (±{tolerance:.0%}).")
    def volume(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Any:
        wh = warehouse.get()
        with wh.session() as s:
            vols = _volumes(s, name)
        yield from per_partition(context, wh, lambda day: [judge_volume(context, wh, vols, day)])

    def judge_volume(context: dg.AssetCheckExecutionContext, wh: Any, vols: dict[str, int], day: str
                     ) -> dg.AssetCheckResult:
        history = [vols[k] for k in sorted(k for k in vols if k < day)[-TRAILING:]]
        current = vols.get(day, 0)
        ok, dev, why = volume_verdict(current, history, tolerance)
        md: dict[str, float] = {"rows_read": current, "trailing_partitions": len(history)}
        if dev is not None:
            md["deviation"] = round(dev, 4)
        return recorded(context, wh, contract, f"volume_{name}", dg.AssetCheckResult(
            passed=ok, severity=dg.AssetCheckSeverity.WARN, description=why, metadata=md),
            partition_key=day, remediable=True)

    @dg.asset_check(asset=key, name=f"freshness_{name}", partitions_def=partitions_def, pool=pool,
                    metadata={"freshness_hours": fresh_h or "none"},
                    description="The newest change token loaded, as of the partition's end, is within the SLO.")
    def freshness(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Any:
        wh = warehouse.get()
        yield from per_partition(context, wh, lambda day: [judge_freshness(context, wh, day)])

    def judge_freshness(context: dg.AssetCheckExecutionContext, wh: Any, day: str) -> dg.AssetCheckResult:
        w = daily_window(day)
        as_of = min(w.end, datetime.now(UTC).replace(tzinfo=None))
        with wh.session() as s:
            newest = s.scalar(f"SELECT max(watermark) FROM {META_SCHEMA}.watermarks WHERE asset = ? AND"
                              " partition_key <= ?", (name, day))
        if newest is None:
            return recorded(context, wh, contract, f"freshness_{name}", dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN, description="nothing loaded yet for this boundary"),
                partition_key=day, remediable=True)
        lag_h = (as_of - newest).total_seconds() / 3600
        ok = fresh_h is None or lag_h <= fresh_h
        return recorded(context, wh, contract, f"freshness_{name}", dg.AssetCheckResult(
            passed=ok, severity=dg.AssetCheckSeverity.WARN,
            description=f"newest change {lag_h:.1f} h before {as_of:%Y-%m-%d %H:%M}"
                        + (f" (SLO {fresh_h:g} h)" if fresh_h is not None else " (no SLO)"),
            metadata={"lag_hours": round(lag_h, 2), "newest_change": newest.isoformat()}),
            partition_key=day, remediable=True)

    @dg.asset_check(asset=key, name=f"partition_gaps_{name}", partitions_def=partitions_def, pool=pool,
                    description="Every partition from the boundary's first load up to this one has been loaded.")
    def gaps(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Any:
        wh = warehouse.get()
        with wh.session() as s:
            loaded = set(_volumes(s, name))
        yield from per_partition(context, wh, lambda key: [judge_gaps(context, wh, loaded, key)])

    def judge_gaps(context: dg.AssetCheckExecutionContext, wh: Any, loaded: set[str], key: str) -> dg.AssetCheckResult:
        day = datetime.strptime(key, "%Y-%m-%d").date()
        first = min((datetime.strptime(k, "%Y-%m-%d").date() for k in loaded), default=day)
        missing = [(first + timedelta(days=i)).isoformat() for i in range((day - first).days + 1)
                   if (first + timedelta(days=i)).isoformat() not in loaded]
        return recorded(context, wh, contract, f"partition_gaps_{name}", dg.AssetCheckResult(
            passed=not missing, severity=dg.AssetCheckSeverity.WARN,
            description=f"{len(missing)} partition(s) never loaded since {first}" if missing else "no gaps",
            metadata={"missing_partitions": dg.MetadataValue.json(missing[:31]), "gaps": len(missing)}),
            partition_key=key, remediable=True, targets=tuple(missing))

    return [volume, freshness, gaps]
