"""Jobs: one per flow (its boundary assets with their checks, one daily partition), the dbt build, and
the synthetic end-to-end run."""


from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from assets.settings import Settings

DBT_JOB = "dbt_build_job"
FLOW_DESCRIPTIONS = {
    "lead_handoff": "Load one day of the lead handoff flow (marketing → CRM) and run its checks.",
    "quote_to_cash": "Load one day of quote-to-cash (CRM opportunities → billing invoices) and run its checks.",
    "subscription_updates": "Load one day of subscription updates (product plan events → billing "
                            "subscriptions) and run its checks.",
}


def flow_job_name(flow: str) -> str:
    return f"{flow}_job"


def flow_job(flow: str, description: str | None = None) -> UnresolvedAssetJobDefinition:
    what = f"{description.rstrip('.')}. " if description else ""
    return dg.define_asset_job(flow_job_name(flow), selection=dg.AssetSelection.groups(flow),
                               description=FLOW_DESCRIPTIONS.get(flow, f"{what}Load one day of {flow} and run its checks."))


def dbt_job(dbt_assets: Any) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(DBT_JOB, selection=dg.AssetSelection.assets(dbt_assets),
                               description="dbt build: staging → marts, with dbt tests as asset checks.")


def synthetic_job(settings: Settings, retention_days: int) -> dg.JobDefinition:
    @dg.op(name="synthetic_end_to_end", description="One synthetic end-to-end run (assets.hygiene.synthetic), "
           "then the retention of synthetic results and runs. Fails when a failure mode was missed.")
    def _run(context: dg.OpExecutionContext) -> None:
        from assets.hygiene.synthetic import prune, run_synthetic

        r = run_synthetic(settings, progress=context.log.info)
        pruned = prune(settings, instance=context.instance, days=retention_days)
        context.log.info(f"synthetic {r.run_id}: {len(r.scores) - len(r.missed)}/{len(r.scores)} modes detected, "
                         f"{r.false_positives} false positive(s); pruned {pruned}")
        if r.missed or r.false_positives:
            raise dg.Failure(description=f"synthetic run {r.run_id} missed {r.missed or 'nothing'} with "
                                         f"{r.false_positives} false positive(s)", allow_retries=False)

    @dg.job(name="synthetic_job", tags={"meshline/pass": "synthetic"},
            description="Synthetic end-to-end run: every failure mode injected into an isolated sandbox, scored.")
    def _job() -> None:
        _run()

    return _job


def retention_job(settings: Settings, days: int) -> dg.JobDefinition:
    @dg.op(name="prune_operational_records", description="Retention: operational records and the hygiene and "
           "compensation runs older than meshline.yaml's retention.operational_days (the audit log is kept).")
    def _prune(context: dg.OpExecutionContext) -> None:
        from assets.remediation.retention import prune_operational

        pruned = prune_operational(settings.warehouse(), context.instance, days)
        context.log.info(f"pruned past {days} days: {pruned}")

    @dg.job(name="retention_job", tags={"meshline/pass": "retention"},
            description="Prune what grows with every run (meshline.yaml retention.operational_days).")
    def _job() -> None:
        _prune()

    return _job
