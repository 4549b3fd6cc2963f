"""The compensation state machine: failed partitioned checks → compensating runs of the flow's partition.

Partitioned checks store their outcomes in `meshline.check_results` and open or resolve incidents
(assets.remediation.state). Each tick of the compensating-backfill sensor (`plan_compensation`):

1. new remediable failures (reconciliation, contract breach, volume, freshness, gaps) put their
   (flow, partition) under compensation — the partitions a gap check names, not the one it ran on;
2. a (flow, partition) whose attempt is due is probed first (assets.remediation.probe: a dry run of
   the reload). When no reload can change anything, it is escalated at once, the probe's counts as
   the evidence, and nothing is launched. Otherwise it is launched: the flow's job for that partition,
   tagged `meshline/compensate=true`, so every boundary re-extracts its window regardless of the
   watermark and replays its dead letters. The run key `compensate:<flow>:<partition>:<attempt>` makes
   one failure one launch;
3. once that run has finished, the downstream dbt build is requested; if the flow's incidents for the
   partition are all resolved, the remediation is resolved; if not, the next attempt is due after an
   exponential backoff with jitter, and past `max_attempts` it is escalated: the owner is paged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import dagster as dg

from assets.flows.boundary import COMPENSATE_TAG
from assets.loading.ddl import META_SCHEMA
from assets.loading.warehouse import Tx, Warehouse
from assets.remediation.probe import Probe
from assets.remediation.state import audit, ensure, now

REMEDIATION_TAG = "meshline/remediation"
MAX_ATTEMPTS = 3
BACKOFF_BASE = timedelta(minutes=5)
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def backoff(attempt: int, base: timedelta = BACKOFF_BASE, rng: random.Random | None = None) -> timedelta:
    """Delay before attempt `attempt + 1`: base · 2^(attempt − 1), jittered ±50%."""
    delay: timedelta = base * (2 ** max(0, attempt - 1)) * (rng or random).uniform(0.5, 1.5)
    return delay


def _compensating_request(job: str, part: str, key: str) -> dg.RunRequest:
    return dg.RunRequest(run_key=key, job_name=job, partition_key=part,
                         tags={COMPENSATE_TAG: "true", REMEDIATION_TAG: key, "meshline/attempt": key.rsplit(":", 1)[1]})


def _escalate(tx: Tx, flow: str, part: str, at: datetime, details: dict[str, object]) -> None:
    """The (flow, partition) waits for a human from now on; audited with why."""
    tx.execute(f"UPDATE {META_SCHEMA}.remediations SET status = 'escalated', updated_at = ? WHERE"
               " flow = ? AND partition_key = ?", (at, flow, part))
    audit(tx, "sensor:compensating_backfill", "remediation.escalate", f"{flow}/{part}", details, at)


def _take_failures(tx: Tx, at: datetime) -> tuple[dict[tuple[str, str], list[str]], datetime | None]:
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


def plan_compensation(wh: Warehouse, instance: dg.DagsterInstance, flow_jobs: dict[str, str], dbt_job: str | None,
                      *, at: datetime | None = None, max_attempts: int = MAX_ATTEMPTS,
                      base: timedelta = BACKOFF_BASE,
                      on_exhausted: Callable[[str, str, int], None] | None = None,
                      log: Callable[[str], None] | None = None,
                      probe: Callable[[str, str], Probe | None] | None = None,
                      on_unfixable: Callable[[Probe], None] | None = None,
                      probe_budget_s: float = 30.0) -> tuple[list[dg.RunRequest], datetime | None]:
    """One tick of the compensating-backfill logic. Returns (run requests, newest check result handled).

    `probe(flow, partition)` says whether a reload can change anything (None: it cannot tell, so the
    attempt is launched); probing stops for the tick after `probe_budget_s`, and what was not probed
    waits for the next tick."""
    at = at or now()
    probing_until = time.monotonic() + probe_budget_s
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
                    _escalate(tx, flow, part, at, {"attempts": attempts})
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
        if probe is not None:
            if time.monotonic() > probing_until:
                continue  # due, not probed yet: the next tick
            found = probe(flow, part)
            if found is not None and not found.changes:
                with wh.transaction() as tx:
                    _escalate(tx, flow, part, at, {"attempts": attempts, "reason": "no reload can change it",
                                                   "probe": found.evidence})
                say(f"{flow} {part}: no reload can change it ({found.words()}): escalated without a run")
                if on_unfixable:
                    on_unfixable(found)
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
