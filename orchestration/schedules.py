"""Nightly schedules.

`nightly_hygiene` (01:00 UTC): every flow's partitions from yesterday back as far as its boundaries'
lookback reaches (6 h → yesterday and the day before), each as one run of the flow's boundary assets
with all their checks. Run keys `nightly_hygiene:<flow>:<partition>:<night>` make a re-evaluated tick
launch nothing twice. `dbt_nightly` (02:00 UTC) then builds staging and marts over what was loaded — a
schedule of its own because dbt's models are not partitioned and one schedule targets one job.
"""

import math
from datetime import date, timedelta

import dagster as dg

HYGIENE_CRON = "0 1 * * *"


def hygiene_partitions(night: date, lookback_hours: float) -> list[str]:
    """Partition keys a night's hygiene reloads: yesterday, and the days the lookback reaches into."""
    back = max(1, math.ceil(lookback_hours / 24) + 1)
    return [(night - timedelta(days=i)).isoformat() for i in range(back, 0, -1)]


def nightly_hygiene(flow_assets: dict[str, list], lookback_hours: dict[str, float]) -> dg.ScheduleDefinition:
    """`flow_assets`: flow → its boundary asset keys. Each run request selects one flow's assets (with
    their checks) for one partition."""
    everything = [k for keys in flow_assets.values() for k in keys]

    @dg.schedule(name="nightly_hygiene", cron_schedule=HYGIENE_CRON, execution_timezone="UTC",
                 target=dg.AssetSelection.assets(*everything),
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Every flow: yesterday's partitions plus the lookback, with all checks "
                             "(dbt_nightly builds the marts at 02:00).")
    def _schedule(context: dg.ScheduleEvaluationContext):
        night = context.scheduled_execution_time.date()
        out = []
        for flow, keys in flow_assets.items():
            for part in hygiene_partitions(night, lookback_hours.get(flow, 6.0)):
                out.append(dg.RunRequest(run_key=f"nightly_hygiene:{flow}:{part}:{night}", asset_selection=keys,
                                         partition_key=part, tags={"meshline/pass": "nightly_hygiene"}))
        return out

    return _schedule


def dbt_nightly(dbt_job) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(name="dbt_nightly", job=dbt_job, cron_schedule="0 2 * * *", execution_timezone="UTC",
                                 default_status=dg.DefaultScheduleStatus.RUNNING,
                                 description="dbt build (staging, marts, scorecard) after nightly_hygiene's loads.")
