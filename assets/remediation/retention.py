"""Retention of what grows with every run: past `days`, the warehouse's operational records that nothing
reads any more, and the Dagster runs (with their event logs) of the nightly hygiene and of compensation.
Open-source Dagster deletes nothing by itself. The audit log is kept (its own retention, `audit-log
prune`), and so is whatever is still open or still drives a check:

- check results the compensating sensor has handled;
- load-log rows superseded by a later load of the same partition (the latest one per partition feeds
  the volume, gap and contract checks);
- alerts;
- resolved incidents and remediations;
- resolved dead letters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from assets.loading.ddl import META_SCHEMA, ensure_meta
from assets.loading.warehouse import Warehouse
from assets.remediation.state import audit, ensure, now

if TYPE_CHECKING:
    import dagster as dg

# table → the condition (on rows older than the cutoff, `?`) that makes a row prunable
PRUNABLE = {
    "check_results": "handled_at IS NOT NULL AND evaluated_at < ?",
    "load_log": ("finished_at < ? AND EXISTS (SELECT 1 FROM {schema}.load_log later WHERE later.asset ="
                 " load_log.asset AND later.partition_key = load_log.partition_key AND later.finished_at >"
                 " load_log.finished_at)"),
    "alerts": "sent_at < ?",
    "incidents": "status = 'resolved' AND resolved_at < ?",
    "remediations": "status = 'resolved' AND updated_at < ?",
    "dead_letters": "status = 'resolved' AND resolved_at < ?",
}
# Dagster runs whose tags mark them as the nightly hygiene's or a compensation's
RUN_TAGS = (("meshline/pass", "nightly_hygiene"), ("meshline/compensate", "true"), ("meshline/remediation", None))


def prune_operational(wh: Warehouse, instance: dg.DagsterInstance | None, days: int,
                      at: datetime | None = None) -> dict[str, int]:
    """Delete what is older than `days` (see the module's docstring); returns the rows deleted per table
    and the Dagster runs deleted. Recorded in the audit log."""
    if days < 1:
        raise ValueError("the operational retention must be at least one day")
    at = at or now()
    cutoff = at - timedelta(days=days)
    out: dict[str, int] = {}
    with wh.transaction() as tx:
        ensure_meta(tx)
        ensure(tx)
        for table, where in PRUNABLE.items():
            out[table] = tx.execute_count(
                f"DELETE FROM {META_SCHEMA}.{table} WHERE {where.format(schema=META_SCHEMA)}", (cutoff,))
        out["dagster_runs"] = _prune_runs(instance, cutoff) if instance is not None else 0
        audit(tx, "retention", "retention.prune", "meshline", {**out, "days": days}, at)
    return out


def _prune_runs(instance: dg.DagsterInstance, cutoff: datetime) -> int:
    import dagster as dg

    doomed = [rec.dagster_run.run_id
              for rec in instance.get_run_records(filters=dg.RunsFilter(created_before=cutoff.replace(tzinfo=UTC)))
              if any(key in rec.dagster_run.tags and value in (None, rec.dagster_run.tags[key])
                     for key, value in RUN_TAGS)]
    for run_id in doomed:
        instance.delete_run(run_id)
    return len(doomed)
