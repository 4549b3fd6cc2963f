"""Meshline's Dagster definitions, built from the settings when they are loaded (not at import time).

`dagster dev` (workspace.yaml) loads `defs`; tests call `build_defs(Settings(...))` for each warehouse.
"""


import dagster as dg

from assets.dbt import build_dbt_assets, dbt_project
from assets.flows.declared import build_flow
from assets.settings import DBT_PROJECT_DIR, Settings
from expectations.registry import Registry
from orchestration.jobs import DBT_JOB, dbt_job, flow_job, flow_job_name, retention_job, synthetic_job
from orchestration.resources import build_resources
from orchestration.schedules import nightly_hygiene, nightly_retention, nightly_synthetic
from orchestration.sensors import build_sensors


@dg.run_failure_sensor(name="run_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING)
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    """Every failed run is reported with its job and error."""
    err = context.failure_event.message or "unknown error"
    context.log.error(f"run {context.dagster_run.run_id} of {context.dagster_run.job_name} failed: {err[:500]}")


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    settings.check_redaction_key()
    config = settings.config()
    ops = config.operations
    partitions = dg.DailyPartitionsDefinition(start_date=ops.start_date, end_offset=0)
    pool = settings.warehouse_pool

    assets: list[dg.AssetsDefinition] = []
    checks: list[dg.AssetChecksDefinition] = []
    flow_assets: dict[str, list[dg.AssetKey]] = {}
    flows = config.flows
    for flow in flows:
        flow_defs, flow_checks = build_flow(flow, config, partitions, pool)
        assets += flow_defs
        checks += flow_checks
        flow_assets[flow] = [k for a in flow_defs for k in a.keys]
    project = dbt_project(DBT_PROJECT_DIR, settings.dbt_target, settings.dbt_profiles_dir())
    dbt_defs = build_dbt_assets(project, pool=pool)

    flow_jobs = [flow_job(flow, config.descriptions.get(flow)) for flow in flows]
    build_job = dbt_job(dbt_defs)
    syn_job = synthetic_job(settings, ops.synthetic_retention_days)
    prune_job = retention_job(settings, ops.operational_retention_days)
    # The nightly re-judges a partition until its longest SLA has passed as of the other side's data:
    # the SLA plus the day the other side needs to load, or the lookback if that reaches further.
    lookbacks = {flow: max([*(b.lookback_hours for b in config.flow_boundaries(flow)), 6.0,
                            *(r.sla.total_seconds() / 3600 + 24 for r in config.rules.get(flow, []))]) for flow in flows}
    registry = Registry()
    contracts = {b.name: registry.get(b.contract, b.contract_version) for b in config.boundaries.values()}
    sensors = build_sensors({flow: flow_job_name(flow) for flow in flows}, DBT_JOB, contracts, config,
                            interval_s=ops.sensor_interval_s, running=ops.compensation,
                            targets=[*flow_jobs, build_job])
    return dg.Definitions(
        assets=[*assets, dbt_defs],
        asset_checks=checks,
        jobs=[*flow_jobs, build_job, syn_job, prune_job],
        schedules=[nightly_hygiene(flow_assets, lookbacks, list(dbt_defs.keys)),
                   nightly_synthetic(syn_job, ops.synthetic_retention_days),
                   nightly_retention(prune_job, ops.operational_retention_days)],
        sensors=[run_failure_alert, *sensors],
        resources=build_resources(settings, config, project),
        executor=executor(ops.executor, ops.max_concurrent),
    )


def executor(kind: str, max_concurrent: int) -> dg.ExecutorDefinition:
    """How each run's steps execute: one after another in the run's own process (the default), in a
    process each on the run's machine, or as Celery tasks that
    workers on other machines take from the broker (MESHLINE_CELERY_BROKER_URL, read where it is used
    so the broker's password never enters Dagster's configuration)."""
    if kind == "in_process":
        # A flow's steps are light (the loads are the only real work, and the warehouse pool runs one
        # writing run at a time): a process per step cost more than the steps themselves.
        return dg.in_process_executor
    if kind == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured({"broker": {"env": "MESHLINE_CELERY_BROKER_URL"}, "backend": "rpc://"},
                                          name="meshline_celery")
    return dg.multiprocess_executor.configured({"max_concurrent": max_concurrent}, name="meshline_multiprocess")


@dg.definitions
def defs() -> dg.Definitions:
    """The code location's definitions, built once per process (code server, daemon, each run worker).
    What was built is then frozen out of the garbage collector's reach (`gc.freeze`): Dagster's, dbt's
    and the definitions' objects live as long as the process, and every full collection (the
    interpreter's exit included) would walk them again."""
    import gc

    built = build_defs()
    gc.freeze()
    return built
