"""Nightly schedules.

`nightly_hygiene` (01:00 UTC): every flow's partitions from yesterday back as far as its boundaries'
lookback reaches, or its longest rule's SLA plus a day (24 h → the three days before), newest first, each as
one run of the flow's boundary assets with all their checks, then one run of the dbt models (staging,
marts, scorecard). Run keys
`nightly_hygiene:<flow>:<partition>:<night>` make a re-evaluated tick launch nothing twice. The runs
carry `meshline/pass=nightly_hygiene` and go one at a time in the order requested — under the embedded
default through the warehouse pool, in production through the run queue's tag limit
(deploy/dagster.yaml) — so dbt builds over what the loads left.
"""


import math
from datetime import date, timedelta

import dagster as dg

HYGIENE_CRON = "0 1 * * *"


def hygiene_partitions(night: date, lookback_hours: float) -> list[str]:
    """Partition keys a night's hygiene reloads, newest first: yesterday, then the days the lookback
    reaches into. Newest first, so that an older day's rules are judged with the other side's newest
    data already loaded that night (a rule is due as of the other side's newest change)."""
    back = max(1, math.ceil(lookback_hours / 24) + 1)
    return [(night - timedelta(days=i)).isoformat() for i in range(1, back + 1)]


def nightly_hygiene(flow_assets: dict[str, list[dg.AssetKey]], lookback_hours: dict[str, float],
                    dbt_assets: list[dg.AssetKey]) -> dg.ScheduleDefinition:
    """`flow_assets`: flow → its boundary asset keys; `dbt_assets`: the dbt models. Each run request
    selects one flow's assets (with their checks) for one partition, or, last, the dbt models."""
    everything = [k for keys in flow_assets.values() for k in keys] + list(dbt_assets)

    @dg.schedule(name="nightly_hygiene", cron_schedule=HYGIENE_CRON, execution_timezone="UTC",
                 target=dg.AssetSelection.assets(*everything),
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Every flow: yesterday's partitions plus the lookback, with all checks; then the "
                             "dbt build.")
    def _schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        night = context.scheduled_execution_time.date()
        out = []
        for flow, keys in flow_assets.items():
            for part in hygiene_partitions(night, lookback_hours.get(flow, 6.0)):
                out.append(dg.RunRequest(run_key=f"nightly_hygiene:{flow}:{part}:{night}", asset_selection=keys,
                                         partition_key=part, tags={"meshline/pass": "nightly_hygiene"}))
        out.append(dg.RunRequest(run_key=f"nightly_hygiene:dbt:{night}", asset_selection=list(dbt_assets),
                                 tags={"meshline/pass": "nightly_hygiene"}))
        return out

    return _schedule


def nightly_synthetic(job: dg.JobDefinition, retention_days: int) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(name="nightly_synthetic", job=job, cron_schedule="0 3 * * *", execution_timezone="UTC",
                                 default_status=dg.DefaultScheduleStatus.RUNNING,
                                 description=f"A synthetic end-to-end run every night at 03:00 UTC, {retention_days} days kept.")


def nightly_retention(job: dg.JobDefinition, days: int) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(name="nightly_retention", job=job, cron_schedule="0 2 * * *", execution_timezone="UTC",
                                 default_status=dg.DefaultScheduleStatus.RUNNING,
                                 description=f"Operational records and hygiene runs older than {days} days pruned, "
                                             "every night at 02:00 UTC.")
