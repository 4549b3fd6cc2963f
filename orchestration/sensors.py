"""Remediation sensors: compensating backfills for failed checks, and paging the owners.

`compensating_backfill` runs one tick of the compensation state machine
(assets.remediation.compensation); `dead_letter_pager` (every 5 min) pages on per-contract dead-letter
thresholds and incident SLOs (assets.remediation.paging). Both read the warehouse and page through the
notifier resource.
"""


from typing import Any

import dagster as dg

from assets.config import Config
from assets.remediation.compensation import BACKOFF_BASE, MAX_ATTEMPTS, plan_compensation
from assets.remediation.paging import (
    escalate_incidents,
    page_dead_letters,
    page_exhausted,
    page_unfixable,
    resend_failed,
)
from assets.remediation.probe import Probe, probe_reload
from assets.resources import NotifierResource, SourcesResource, WarehouseResource
from expectations.contract import Contract


def build_sensors(flow_jobs: dict[str, str], dbt_job: str, contracts: dict[str, Contract], config: Config, *,
                  interval_s: int, running: bool, targets: list[Any]) -> list[dg.SensorDefinition]:
    """`flow_jobs`: flow → job name; `targets`: the job definitions the compensating sensor may launch."""
    flow_owner: dict[str, Contract] = {}
    for c in contracts.values():
        if c.boundary_flow not in flow_owner or c.critical:
            flow_owner[c.boundary_flow] = c

    @dg.sensor(name="compensating_backfill", minimum_interval_seconds=interval_s, jobs=targets,
               default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
               description="Failed partitioned checks → a compensating run of the flow's partition (re-extract, "
                           "replay dead letters), then dbt, when a dry run of the reload shows it can change "
                           "something; otherwise, and after capped attempts with backoff, the owner is paged.")
    def compensating_backfill(context: dg.SensorEvaluationContext, warehouse: WarehouseResource,
                              notifier: NotifierResource, sources: SourcesResource) -> list[dg.RunRequest] | dg.SkipReason:
        wh, pager = warehouse.get(), notifier.get()

        def exhausted(flow: str, part: str, attempts: int) -> None:
            page_exhausted(wh, flow_owner.get(flow), flow, part, attempts, pager)

        def unfixable(found: Probe) -> None:
            page_unfixable(wh, flow_owner.get(found.flow), found, pager)

        requests, _ = plan_compensation(wh, context.instance, flow_jobs, dbt_job, max_attempts=MAX_ATTEMPTS,
                                        base=BACKOFF_BASE, on_exhausted=exhausted, log=context.log.info,
                                        probe=lambda flow, part: probe_reload(wh, sources, config, contracts, flow, part),
                                        on_unfixable=unfixable)
        return requests or dg.SkipReason("no failed check awaits compensation")

    @dg.sensor(name="dead_letter_pager", minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Pages contract owners on dead-letter count, rate and growth thresholds and on "
                           "incidents open past their SLO; grouped per contract and window, suppressed unless worse.")
    def dead_letter_pager(context: dg.SensorEvaluationContext, warehouse: WarehouseResource,
                          notifier: NotifierResource) -> dg.SkipReason:
        wh, pager = warehouse.get(), notifier.get()
        pages = page_dead_letters(wh, list(contracts.values()), pager)
        pages += escalate_incidents(wh, contracts, pager)
        resent = resend_failed(wh, pager, budget_s=20)
        sent = [p for p in pages if p["status"] == "sent"]
        return dg.SkipReason(f"{len(sent)} page(s) sent, {len(pages) - len(sent)} suppressed or failed; "
                             f"{resent['sent']} failed page(s) resent, {resent['failed']} still failing")

    return [compensating_backfill, dead_letter_pager]
