"""Meshline's Dagster definitions, built from Settings when they are loaded (not at import time).

`dagster dev` (workspace.yaml) loads `defs`, a lazily built Definitions; tests call
`build_defs(Settings(...))` directly for each warehouse.
"""


import os

import dagster as dg

from assets.dbt import build_dbt_assets, dbt_cli, dbt_project
from assets.flows import lead_handoff, quote_to_cash, subscription_updates
from orchestration.config import Config, ConfigError, load_config
from orchestration.resources import DataDocsResource, SourcesResource, WarehouseResource
from orchestration.settings import DBT_PROJECT_DIR, Settings

LEAD_HANDOFF_JOB = "lead_handoff_job"
QUOTE_TO_CASH_JOB = "quote_to_cash_job"
SUBSCRIPTION_UPDATES_JOB = "subscription_updates_job"
DBT_JOB = "dbt_build_job"


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=settings.partition_start, end_offset=0)


def sandbox_sources(settings: Settings) -> dict[str, dict[str, str]]:
    """The simulated source systems under MESHLINE_HOME, by boundary: what `sandbox` stands for in each
    source key that may say it (a database `url`, an API `base_url`, a landing `folder`)."""
    from assets.sandbox import LeadHandoffSandbox
    from assets.sandbox.quote_to_cash import QuoteToCashSandbox
    from assets.sandbox.subscription_updates import SubscriptionSandbox

    lh = LeadHandoffSandbox(settings.sandbox_dir)
    q2c = QuoteToCashSandbox(settings.sandbox_dir / "quote_to_cash")
    subs = SubscriptionSandbox(settings.sandbox_dir / "subscription_updates")
    # An API's base URL is only known once its server runs, in the process that reads it: the
    # sources resource starts the billing API over `sandbox_db` there (assets.sandbox.billing_api).
    return {"marketing_leads": {"url": lh.marketing_url}, "crm_leads": {"url": lh.crm_url},
            "crm_opportunities": {"url": q2c.crm_url},
            "billing_invoices": {"url": q2c.billing_url, "base_url": "sandbox", "sandbox_db": str(q2c.billing_path)},
            "product_plan_events": {"folder": str(subs.events_dir)},
            "billing_subscriptions": {"base_url": "sandbox", "sandbox_db": str(subs.billing_path)}}


SANDBOX_KEYS = ("url", "base_url", "folder")


def source_specs(settings: Settings, config: Config) -> dict[str, dict]:
    """Each boundary's source spec from meshline.yaml, with `sandbox` resolved."""
    sandbox = sandbox_sources(settings)
    specs = {}
    for b in config.boundaries.values():
        spec = dict(b.source)
        for key in SANDBOX_KEYS:
            if spec.get(key) != "sandbox":
                continue
            sim = sandbox.get(b.name, {})
            if key not in sim:
                offers = sorted(n for n, s in sandbox.items() if key in s)
                raise ConfigError(f"{config.path}: flows.{b.flow}.boundaries.{b.name}.source.{key}: the sandbox "
                                  f"simulates no {spec.get('kind')} source for boundary {b.name!r} (it has "
                                  f"{', '.join(offers)})")
            spec[key] = sim[key]
            if key == "base_url":
                spec["sandbox_db"] = sim["sandbox_db"]
        specs[b.name] = spec
    return specs


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

    schedules = [
        dg.build_schedule_from_partitioned_job(
            lead_handoff_job, name="lead_handoff_daily", hour_of_day=1, minute_of_hour=0,
            description="Yesterday's lead-handoff partition, every night at 01:00 UTC."),
        dg.build_schedule_from_partitioned_job(
            q2c_job, name="quote_to_cash_daily", hour_of_day=1, minute_of_hour=15,
            description="Yesterday's quote-to-cash partition, every night at 01:15 UTC."),
        dg.build_schedule_from_partitioned_job(
            subs_job, name="subscription_updates_daily", hour_of_day=1, minute_of_hour=30,
            description="Yesterday's subscription-updates partition, every night at 01:30 UTC."),
        dg.ScheduleDefinition(name="dbt_nightly", job=dbt_job, cron_schedule="0 2 * * *",
                              execution_timezone="UTC", description="dbt build after the nightly loads."),
    ]
    return dg.Definitions(
        assets=[*lh_assets, *q2c_assets, *sub_assets, dbt_defs],
        asset_checks=[*lh_checks, *q2c_checks, *sub_checks],
        jobs=[lead_handoff_job, q2c_job, subs_job, dbt_job],
        schedules=schedules,
        sensors=[run_failure_alert],
        resources={
            "warehouse": WarehouseResource(url=settings.warehouse_url),
            "sources": SourcesResource(boundaries=source_specs(settings, config)),
            "data_docs": DataDocsResource(root=str(settings.home)),
            "dbt": dbt_cli(project),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs()
