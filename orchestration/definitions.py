"""Meshline's Dagster definitions, built from Settings when they are loaded (not at import time).

`dagster dev` (workspace.yaml) loads `defs`, a lazily built Definitions; tests call
`build_defs(Settings(...))` directly for each warehouse.
"""


import os

import dagster as dg

from assets.dbt import build_dbt_assets, dbt_cli, dbt_project
from assets.flows import lead_handoff, quote_to_cash, subscription_updates
from orchestration.config import load_config, source_specs
from orchestration.resources import DataDocsResource, SourcesResource, WarehouseResource
from orchestration.settings import DBT_PROJECT_DIR, Settings

LEAD_HANDOFF_JOB = "lead_handoff_job"
QUOTE_TO_CASH_JOB = "quote_to_cash_job"
SUBSCRIPTION_UPDATES_JOB = "subscription_updates_job"
DBT_JOB = "dbt_build_job"


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=settings.partition_start, end_offset=0)


@dg.run_failure_sensor(name="run_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING)
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    """Every failed run is reported with its job and error (the paging notifier builds on this)."""
    err = context.failure_event.message or "unknown error"
    context.log.error(f"run {context.dagster_run.run_id} of {context.dagster_run.job_name} failed: {err[:500]}")


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    os.environ.update(settings.dbt_env())  # the dbt profile reads its target and connection from these
    partitions = daily_partitions(settings)
    pool = settings.warehouse_pool
    config = load_config(settings.config_path)

    lh_assets, lh_checks = lead_handoff.build(partitions, pool, config.flow_boundaries(lead_handoff.FLOW))
    q2c_assets, q2c_checks = quote_to_cash.build(partitions, pool, config.flow_boundaries(quote_to_cash.FLOW))
    sub_assets, sub_checks = subscription_updates.build(
        partitions, pool, config.flow_boundaries(subscription_updates.FLOW))
    project = dbt_project(DBT_PROJECT_DIR, settings.dbt_target)
    dbt_defs = build_dbt_assets(project, pool=pool, dbt_vars={
        "handoff_sla_hours": lead_handoff.HANDOFF_SLA.total_seconds() / 3600,
        "invoice_sla_hours": quote_to_cash.INVOICE_SLA.total_seconds() / 3600,
        "plan_sync_sla_hours": subscription_updates.PLAN_SYNC_SLA.total_seconds() / 3600})

    lead_handoff_job = dg.define_asset_job(
        LEAD_HANDOFF_JOB, selection=dg.AssetSelection.groups(lead_handoff.FLOW),
        description="Load one day of the lead handoff flow (marketing → CRM) and run its checks.")
    q2c_job = dg.define_asset_job(
        QUOTE_TO_CASH_JOB, selection=dg.AssetSelection.groups(quote_to_cash.FLOW),
        description="Load one day of quote-to-cash (CRM opportunities → billing invoices) and run its checks.")
    subs_job = dg.define_asset_job(
        SUBSCRIPTION_UPDATES_JOB, selection=dg.AssetSelection.groups(subscription_updates.FLOW),
        description="Load one day of subscription updates (product plan events → billing subscriptions) "
                    "and run its checks.")
    dbt_job = dg.define_asset_job(
        DBT_JOB, selection=dg.AssetSelection.assets(dbt_defs),
        description="dbt build: staging → marts, with dbt tests as asset checks.")

    from orchestration.schedules import nightly_hygiene, nightly_synthetic, synthetic_job

    flow_jobs = {lead_handoff.FLOW: LEAD_HANDOFF_JOB, quote_to_cash.FLOW: QUOTE_TO_CASH_JOB,
                 subscription_updates.FLOW: SUBSCRIPTION_UPDATES_JOB}
    lookbacks = {flow: max((b.lookback_hours for b in config.flow_boundaries(flow)), default=6.0) for flow in flow_jobs}
    all_jobs = [lead_handoff_job, q2c_job, subs_job, dbt_job]
    flow_assets = {lead_handoff.FLOW: [k for a in lh_assets for k in a.keys],
                   quote_to_cash.FLOW: [k for a in q2c_assets for k in a.keys],
                   subscription_updates.FLOW: [k for a in sub_assets for k in a.keys]}
    syn_job = synthetic_job(settings)
    schedules = [nightly_hygiene(flow_assets, lookbacks, list(dbt_defs.keys)), nightly_synthetic(syn_job)]
    from expectations.registry import Registry
    from orchestration.sensors import build_sensors

    registry = Registry()
    contracts = {b.name: registry.get(b.contract, b.contract_version) for b in config.boundaries.values()}
    remediation = build_sensors(
        flow_jobs, DBT_JOB, contracts,
        interval_s=int(os.environ.get("MESHLINE_SENSOR_INTERVAL_S", "30")),
        targets=all_jobs)
    return dg.Definitions(
        assets=[*lh_assets, *q2c_assets, *sub_assets, dbt_defs],
        asset_checks=[*lh_checks, *q2c_checks, *sub_checks],
        jobs=[lead_handoff_job, q2c_job, subs_job, dbt_job, syn_job],
        schedules=schedules,
        sensors=[run_failure_alert, *remediation],
        resources={
            "warehouse": WarehouseResource(url=settings.warehouse_url),
            "sources": SourcesResource(boundaries=source_specs(settings, config)),
            "data_docs": DataDocsResource(root=str(settings.home)),
            "dbt": dbt_cli(project),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location's definitions, built once per process (webserver's code server, daemon, each
    run worker) and kept for its life. What was built is then frozen out of the garbage collector's reach
    (`gc.freeze`): the ~250k objects of Dagster, dbt and the definitions are never garbage, yet every full
    collection walked them, the interpreter's exit included (1-1.5 s per run worker on a 2-core machine).
    Garbage made later, by the runs, is collected as before."""
    import gc

    built = build_defs()
    gc.freeze()
    return built
