"""Remediation sensors: compensating backfills for failed checks, and paging the owners.

`compensating_backfill` (every 30 s). Partitioned checks store their outcomes in
`meshline.check_results` and open or resolve incidents (assets.remediation.state). Each tick:

1. new remediable failures (reconciliation, contract breach, volume, freshness, gaps) put their
   (flow, partition) under compensation — the partitions a gap check names, not the one it ran on;
2. a (flow, partition) whose attempt is due is launched: the flow's job for exactly that partition —
   the checked boundary asset itself included — tagged `meshline/compensate=true`, so every boundary
   re-extracts its window regardless of the watermark and replays its dead letters. The run key
   `compensate:<flow>:<partition>:<attempt>` makes one failure one launch;
3. once that run has finished, the downstream dbt build is requested (run key `compensate-dbt:...`);
   if the flow's incidents for the partition are all resolved, the remediation is resolved; if not,
   the next attempt is due after an exponential backoff with jitter — and past `max_attempts`
   (default 3) it is escalated: the owner is paged and the sensor stops trying.

`dead_letter_pager` (every 5 min): per-contract dead-letter thresholds and incident SLOs
(assets.remediation.paging), paging through the notifier the environment configures.
"""

import json
import random
from datetime import datetime, timedelta

import dagster as dg

from assets.flows.boundary import COMPENSATE_TAG
from assets.loading.ddl import META_SCHEMA
from assets.remediation.state import audit, ensure, now
from orchestration.resources import WarehouseResource

REMEDIATION_TAG = "meshline/remediation"
MAX_ATTEMPTS = 3
BACKOFF_BASE = timedelta(minutes=5)
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def backoff(attempt: int, base: timedelta = BACKOFF_BASE, rng: random.Random | None = None) -> timedelta:
    """Delay before attempt `attempt + 1`: base · 2^(attempt − 1), jittered ±50%."""
    return base * (2 ** max(0, attempt - 1)) * (rng or random).uniform(0.5, 1.5)


def _compensating_request(job: str, part: str, key: str) -> dg.RunRequest:
    return dg.RunRequest(run_key=key, job_name=job, partition_key=part,
                         tags={COMPENSATE_TAG: "true", REMEDIATION_TAG: key, "meshline/attempt": key.rsplit(":", 1)[1]})


def _take_failures(tx, at: datetime) -> tuple[dict[tuple[str, str], list[str]], datetime | None]:
    """Unhandled remediable failures by (flow, target partition); marks every unhandled result handled."""
    rows = tx.query(f"SELECT flow, check_name, target_partitions, passed, remediable, evaluated_at FROM"
                    f" {META_SCHEMA}.check_results WHERE handled_at IS NULL ORDER BY evaluated_at")
    failures: dict[tuple[str, str], list[str]] = {}
    latest = None
    for flow, check, targets, passed, remediable, evaluated in rows:
        latest = evaluated
        if passed or not remediable:
            continue
        for part in filter(None, targets.split(",")):
            failures.setdefault((flow, part), []).append(check)
    if rows:
        tx.execute(f"UPDATE {META_SCHEMA}.check_results SET handled_at = ? WHERE handled_at IS NULL"
                   " AND evaluated_at <= ?", (at, latest))
    return failures, latest


def plan_compensation(wh, instance, flow_jobs: dict[str, str], dbt_job: str | None, *, at: datetime | None = None,
                      max_attempts: int = MAX_ATTEMPTS, base: timedelta = BACKOFF_BASE,
                      on_exhausted=None, log=None) -> tuple[list[dg.RunRequest], datetime | None]:
    """One tick of the compensating-backfill logic. Returns (run requests, newest check result handled)."""
    at = at or now()
    say = log or (lambda msg: None)
    requests: list[dg.RunRequest] = []
    with wh.transaction() as tx:
        ensure(tx)
        failures, latest = _take_failures(tx, at)
        for (flow, part), checks in failures.items():
            if flow not in flow_jobs:
                continue
            state = tx.query(f"SELECT status FROM {META_SCHEMA}.remediations WHERE flow = ? AND partition_key = ?",
                             (flow, part))
            if state and state[0][0] in ("pending", "launched", "escalated"):
                continue  # already under compensation (or waiting for a human)
            reason = ",".join(sorted(set(checks)))
            if state:
                tx.execute(f"UPDATE {META_SCHEMA}.remediations SET status = 'pending', attempts = 0, next_attempt_at = ?,"
                           " reason = ?, opened_at = ?, updated_at = ? WHERE flow = ? AND partition_key = ?",
                           (at, reason, at, at, flow, part))
            else:
                tx.execute(f"INSERT INTO {META_SCHEMA}.remediations (flow, partition_key, status, attempts,"
                           " next_attempt_at, reason, opened_at, updated_at) VALUES (?, ?, 'pending', 0, ?, ?, ?, ?)",
                           (flow, part, at, reason, at, at))
            audit(tx, "sensor:compensating_backfill", "remediation.open", f"{flow}/{part}", {"checks": reason}, at)
        active = tx.query(f"SELECT flow, partition_key, status, attempts, next_attempt_at, last_run_key FROM"
                          f" {META_SCHEMA}.remediations WHERE status IN ('pending', 'launched') ORDER BY opened_at")

    for flow, part, status, attempts, due, run_key in active:
        if status == "launched":
            runs = instance.get_runs(filters=dg.RunsFilter(tags={REMEDIATION_TAG: run_key}), limit=1)
            if not runs:
                # Requested but no run yet (queued for launch, or the tick that requested it failed):
                # request it again under the same run key, which Dagster launches at most once.
                requests.append(_compensating_request(flow_jobs[flow], part, run_key))
                continue
            if runs[0].status not in FINISHED:
                continue  # still running
            if dbt_job:
                requests.append(dg.RunRequest(run_key=f"compensate-dbt:{run_key}", job_name=dbt_job,
                                              tags={REMEDIATION_TAG: f"dbt:{run_key}"}))
            with wh.transaction() as tx:
                still_open = tx.scalar(f"SELECT count(*) FROM {META_SCHEMA}.incidents WHERE flow = ? AND"
                                       " partition_key = ? AND status = 'open'", (flow, part))
                if not still_open:
                    tx.execute(f"UPDATE {META_SCHEMA}.remediations SET status = 'resolved', updated_at = ? WHERE"
                               " flow = ? AND partition_key = ?", (at, flow, part))
                    audit(tx, "sensor:compensating_backfill", "remediation.resolve", f"{flow}/{part}",
                          {"attempts": attempts, "run_key": run_key}, at)
                    say(f"{flow} {part}: resolved after {attempts} compensating run(s)")
                    continue
                if attempts >= max_attempts:
                    tx.execute(f"UPDATE {META_SCHEMA}.remediations SET status = 'escalated', updated_at = ? WHERE"
                               " flow = ? AND partition_key = ?", (at, flow, part))
                    audit(tx, "sensor:compensating_backfill", "remediation.escalate", f"{flow}/{part}",
                          {"attempts": attempts}, at)
                else:
                    tx.execute(f"UPDATE {META_SCHEMA}.remediations SET status = 'pending', next_attempt_at = ?,"
                               " updated_at = ? WHERE flow = ? AND partition_key = ?",
                               (at + backoff(attempts, base), at, flow, part))
            if attempts >= max_attempts:
                say(f"{flow} {part}: still failing after {attempts} compensating run(s): escalated")
                if on_exhausted:
                    on_exhausted(flow, part, attempts)
            continue
        if due > at:
            continue
        n = attempts + 1
        key = f"compensate:{flow}:{part}:{n}"
        requests.append(_compensating_request(flow_jobs[flow], part, key))
        with wh.transaction() as tx:
            tx.execute(f"UPDATE {META_SCHEMA}.remediations SET status = 'launched', attempts = ?, last_run_key = ?,"
                       " updated_at = ? WHERE flow = ? AND partition_key = ?", (n, key, at, flow, part))
            audit(tx, "sensor:compensating_backfill", "remediation.launch", f"{flow}/{part}", {"run_key": key}, at)
        say(f"{flow} {part}: compensating run {n}/{max_attempts} requested ({key})")
    return requests, latest


def build_sensors(flow_jobs: dict[str, str], dbt_job: str, contracts: dict, *, max_attempts: int = MAX_ATTEMPTS,
                  base: timedelta = BACKOFF_BASE, interval_s: int = 30, targets: list | None = None
                  ) -> list[dg.SensorDefinition]:
    """`flow_jobs`: flow → job name; `targets`: the job definitions themselves (what the sensor may launch)."""
    flow_owner = {}
    for c in contracts.values():
        if c.boundary_flow not in flow_owner or c.critical:
            flow_owner[c.boundary_flow] = c

    import os

    # MESHLINE_COMPENSATION=off ships the sensor stopped (`meshline audit` then reports no backfill tools).
    on = os.environ.get("MESHLINE_COMPENSATION", "on") != "off"

    @dg.sensor(name="compensating_backfill", minimum_interval_seconds=interval_s, jobs=targets,
               default_status=dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED,
               description="Failed partitioned checks → a compensating run of the flow's partition (re-extract, "
                           "replay dead letters), then dbt; capped attempts with backoff, then the owner is paged.")
    def compensating_backfill(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        from assets.remediation.notify import Notifier
        from assets.remediation.paging import page_exhausted

        wh = warehouse.get()
        notifier = Notifier.from_env()
        cursor = json.loads(context.cursor) if context.cursor else {"handled_through": None, "requested": 0}

        def exhausted(flow, part, attempts):
            page_exhausted(wh, flow_owner.get(flow), flow, part, attempts, notifier)

        requests, latest = plan_compensation(wh, context.instance, flow_jobs, dbt_job, max_attempts=max_attempts,
                                             base=base, on_exhausted=exhausted, log=context.log.info)
        cursor["requested"] += len(requests)
        if latest is not None:
            cursor["handled_through"] = latest.isoformat()
        context.update_cursor(json.dumps(cursor, sort_keys=True))
        if not requests:
            return dg.SkipReason("no failed check awaits compensation")
        return requests

    @dg.sensor(name="dead_letter_pager", minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Pages contract owners on dead-letter count, rate and growth thresholds and on "
                           "incidents open past their SLO; grouped per contract and window, suppressed unless worse.")
    def dead_letter_pager(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        from assets.remediation.notify import Notifier
        from assets.remediation.paging import escalate_incidents, page_dead_letters

        wh = warehouse.get()
        notifier = Notifier.from_env()
        pages = page_dead_letters(wh, list(contracts.values()), notifier)
        pages += escalate_incidents(wh, contracts, notifier)
        sent = [p for p in pages if p["status"] == "sent"]
        context.update_cursor(json.dumps({"last_tick": now().isoformat(), "sent": len(sent)}))
        return dg.SkipReason(f"{len(sent)} page(s) sent, {len(pages) - len(sent)} suppressed or failed")

    return [compensating_backfill, dead_letter_pager]
