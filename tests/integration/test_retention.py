"""Retention of what grows with every run: past the window, operational records nothing reads any more
and the Dagster runs of the nightly hygiene and of compensation go; what is open, what drives a check
and the audit log stay."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from assets.loading import Warehouse
from assets.remediation.dlq import resolve
from assets.remediation.retention import prune_operational
from assets.remediation.state import CheckOutcome, now, record_check
from tests.helpers import day_keys, materialize_day


def _count(wh: Warehouse, sql: str) -> int:
    with wh.session() as s:
        return int(s.scalar(sql))


def test_old_operational_records_and_hygiene_runs_are_pruned_and_the_rest_kept(warehouse_url, sandbox):
    wh = Warehouse(warehouse_url)
    key = day_keys(sandbox.ground_truth())[0]
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(2):  # two loads of one partition: the first's load-log rows are superseded
        materialize_day(warehouse_url, sandbox, key, instance=instance, tags={"meshline/pass": "nightly_hygiene"})
    materialize_day(warehouse_url, sandbox, key, instance=instance, tags={"meshline/compensate": "true"})

    @dg.asset
    def unrelated() -> int:
        return 1

    kept_run = dg.materialize([unrelated], instance=instance).run_id
    for passed in (False, True):  # an incident opened, then resolved
        record_check(wh, CheckOutcome(flow="lead_handoff", contract="crm_leads", contract_severity="critical",
                                      asset="crm_leads", check_name="contract_crm_leads", partition_key=key,
                                      passed=passed, severity="ERROR", remediable=True, description="x", run_id="r"))
    with wh.transaction() as tx:
        tx.execute("UPDATE meshline.check_results SET handled_at = evaluated_at WHERE asset = 'crm_leads'")
        tx.execute("INSERT INTO meshline.alerts (alert_id, contract, kind, window_start, window_end, dead_letters,"
                   " rate, status, notifier, payload, sent_at) VALUES ('a1', 'crm_leads', 'count', ?, ?, 1, 0.1,"
                   " 'sent', 'log', '{}', ?)", (now(), now(), now()))
    with wh.session() as s:
        one_dead_letter = s.scalar("SELECT min(dead_letter_id) FROM meshline.dead_letters")
    assert resolve(wh, [one_dead_letter], "accepted as lost", "test") == 1
    open_letters = _count(wh, "SELECT count(*) FROM meshline.dead_letters WHERE status = 'open'")
    unhandled = _count(wh, "SELECT count(*) FROM meshline.check_results WHERE handled_at IS NULL")
    partitions = _count(wh, "SELECT count(*) FROM (SELECT DISTINCT asset, partition_key FROM meshline.load_log) p")
    handled = _count(wh, "SELECT count(*) FROM meshline.check_results WHERE handled_at IS NOT NULL")
    resolved = _count(wh, "SELECT count(*) FROM meshline.incidents WHERE status = 'resolved'")
    still_open = _count(wh, "SELECT count(*) FROM meshline.incidents WHERE status = 'open'")
    audit_rows = _count(wh, "SELECT count(*) FROM meshline.audit_log")
    assert open_letters > 0 and unhandled > 0 and handled > 0 and resolved > 0 and audit_rows > 0
    assert _count(wh, "SELECT count(*) FROM meshline.load_log") == 3 * partitions

    assert prune_operational(wh, instance, days=90)["check_results"] == 0  # nothing is old yet
    out = prune_operational(wh, instance, days=90, at=now() + timedelta(days=200))

    assert out["load_log"] == 2 * partitions and out["alerts"] == 1 and out["incidents"] == resolved
    assert out["dead_letters"] == 1 and out["check_results"] == handled and out["dagster_runs"] == 3
    assert _count(wh, "SELECT count(*) FROM meshline.load_log") == partitions  # the latest load of each
    assert _count(wh, "SELECT count(*) FROM meshline.dead_letters") == open_letters
    assert _count(wh, "SELECT count(*) FROM meshline.check_results") == unhandled
    assert _count(wh, "SELECT count(*) FROM meshline.incidents") == still_open
    assert [r.run_id for r in instance.get_runs()] == [kept_run]
    # the audit log keeps everything, and records the pruning
    assert _count(wh, "SELECT count(*) FROM meshline.audit_log") == audit_rows + 2
    with wh.session() as s:
        assert s.scalar("SELECT count(*) FROM meshline.audit_log WHERE action = 'retention.prune'") == 2
