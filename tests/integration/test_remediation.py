"""Remediation on DuckDB and Postgres: the compensating-backfill sensor (run requests, run keys, cursor,
backoff, the attempt cap and escalation), the compensating run itself (a late CRM lead loads, the
reconciliation passes, the incident closes with its time to resolve), and dead-letter replay."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.flows.boundary import COMPENSATE_TAG
from assets.loading import Warehouse
from assets.remediation.compensation import REMEDIATION_TAG, plan_compensation
from assets.remediation.state import CheckOutcome, now, record_check, verify_audit_log
from assets.sandbox import FaultRates, LeadHandoffSandbox
from expectations.registry import Registry
from orchestration.sensors import build_sensors
from tests.conftest import SIM_END, TEST_REDACTION_KEY
from tests.helpers import day_keys, materialize_day, snapshot

FLOW_JOBS = {"lead_handoff": "lead_handoff_job", "quote_to_cash": "quote_to_cash_job",
             "subscription_updates": "subscription_updates_job"}


def _fail(wh, flow, asset, check, part, passed=False, remediable=True, targets=(), severity="critical"):
    return record_check(wh, CheckOutcome(
        flow=flow, contract=asset, contract_severity=severity, asset=asset, check_name=check, partition_key=part,
        passed=passed, severity="ERROR", remediable=remediable, description="test", run_id="r-test",
        target_partitions=tuple(targets)))


def _finish_run(instance, key):
    """A finished run carrying the remediation tag of `key`, as the launched compensating run would."""
    @dg.asset(name=f"noop_{abs(hash(key)) % 10**8}")
    def noop():
        return 1

    dg.materialize([noop], instance=instance, tags={REMEDIATION_TAG: key})


def lh(requests):
    return [r for r in requests if "lead_handoff" in r.run_key]


def _remediation(wh, flow, part):
    with wh.session() as s:
        return s.query("SELECT status, attempts, next_attempt_at, last_run_key FROM meshline.remediations"
                       " WHERE flow = ? AND partition_key = ?", (flow, part))[0]


def test_sensor_launches_each_failure_once_then_backs_off_caps_and_escalates(warehouse_url):
    from assets.config import load_config
    from assets.resources import NotifierResource, SourcesResource, WarehouseResource
    from assets.settings import DEFAULT_CONFIG

    wh = Warehouse(warehouse_url, redaction_key=TEST_REDACTION_KEY.encode())
    assert _fail(wh, "lead_handoff", "marketing_leads", "rule_handed_off", "2026-03-11") == "opened"
    _fail(wh, "lead_handoff", "marketing_leads", "volume_marketing_leads", "2026-03-11")  # same flow and day
    _fail(wh, "quote_to_cash", "crm_opportunities", "rule_invoiced", "2026-03-12")
    _fail(wh, "subscription_updates", "product_plan_events", "partition_gaps_product_plan_events", "2026-03-13",
          targets=("2026-03-09", "2026-03-10"))
    _fail(wh, "lead_handoff", "crm_leads", "contract_crm_leads", "2026-03-13", remediable=False)  # within SLO

    contracts = {n: Registry().get(n) for n in ("marketing_leads", "crm_opportunities", "product_plan_events")}
    sensor = build_sensors(FLOW_JOBS, "dbt_build_job", contracts, load_config(DEFAULT_CONFIG), interval_s=30,
                           running=True, targets=[])[0]
    instance = dg.DagsterInstance.ephemeral()
    # No partition here was ever loaded, so the probe says a reload can change each one (a gap).
    resources = {"warehouse": WarehouseResource(url=warehouse_url, redaction_key=TEST_REDACTION_KEY),
                 "notifier": NotifierResource(), "sources": SourcesResource(boundaries={})}
    ctx = dg.build_sensor_context(instance=instance, resources=resources)
    reqs = sensor(ctx)
    assert sorted((r.run_key, r.job_name, r.partition_key) for r in reqs) == [
        ("compensate:lead_handoff:2026-03-11:1", "lead_handoff_job", "2026-03-11"),
        ("compensate:quote_to_cash:2026-03-12:1", "quote_to_cash_job", "2026-03-12"),
        ("compensate:subscription_updates:2026-03-09:1", "subscription_updates_job", "2026-03-09"),
        ("compensate:subscription_updates:2026-03-10:1", "subscription_updates_job", "2026-03-10")]
    assert all(r.tags[COMPENSATE_TAG] == "true" and r.tags[REMEDIATION_TAG] == r.run_key for r in reqs)

    # The same failure again before any run started: no new attempt, only the same run keys again
    # (which Dagster launches at most once), so a tick that failed after requesting cannot lose a launch.
    _fail(wh, "lead_handoff", "marketing_leads", "rule_handed_off", "2026-03-11")
    ctx2 = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, resources=resources)
    assert sorted(r.run_key for r in sensor(ctx2)) == sorted(r.run_key for r in reqs)
    assert _remediation(wh, "lead_handoff", "2026-03-11")[:2] == ("launched", 1)

    # The compensating run finishes and the check still fails: dbt downstream, then a backed-off retry.
    key1 = "compensate:lead_handoff:2026-03-11:1"
    _finish_run(instance, key1)
    t0 = now()
    paged = []
    reqs, _ = plan_compensation(wh, instance, FLOW_JOBS, "dbt_build_job", at=t0,
                                on_exhausted=lambda *a: paged.append(a))
    # (the other flows' runs never started here: their same run keys are requested again, see above)
    assert [(r.run_key, r.job_name) for r in lh(reqs)] == [(f"compensate-dbt:{key1}", "dbt_build_job")]
    status, attempts, due, _ = _remediation(wh, "lead_handoff", "2026-03-11")
    assert (status, attempts) == ("pending", 1) and timedelta(minutes=2) < due - t0 < timedelta(minutes=8)
    assert lh(plan_compensation(wh, instance, FLOW_JOBS, None, at=t0 + timedelta(minutes=1))[0]) == []  # backing off
    for n in (2, 3):
        at = t0 + timedelta(hours=n)
        reqs, _ = plan_compensation(wh, instance, FLOW_JOBS, None, at=at)
        assert [r.run_key for r in lh(reqs)] == [f"compensate:lead_handoff:2026-03-11:{n}"]
        _finish_run(instance, lh(reqs)[0].run_key)
        reqs, _ = plan_compensation(wh, instance, FLOW_JOBS, None, at=at + timedelta(minutes=1),
                                    on_exhausted=lambda *a: paged.append(a))
    assert _remediation(wh, "lead_handoff", "2026-03-11")[:2] == ("escalated", 3)
    assert paged == [("lead_handoff", "2026-03-11", 3)]
    assert lh(plan_compensation(wh, instance, FLOW_JOBS, None, at=t0 + timedelta(days=1))[0]) == []  # a human's turn

    # quote_to_cash: the check passes in the compensating run → incident and remediation resolved.
    assert _fail(wh, "quote_to_cash", "crm_opportunities", "rule_invoiced", "2026-03-12",
                 passed=True) == "resolved"
    _finish_run(instance, "compensate:quote_to_cash:2026-03-12:1")
    plan_compensation(wh, instance, FLOW_JOBS, "dbt_build_job", at=t0)
    assert _remediation(wh, "quote_to_cash", "2026-03-12")[0] == "resolved"
    with wh.session() as s:
        actions = [a for (a,) in s.query("SELECT action FROM meshline.audit_log ORDER BY seq")]
    assert actions.count("remediation.launch") == 6 and "remediation.escalate" in actions
    assert "remediation.resolve" in actions and verify_audit_log(wh) == []


@pytest.fixture
def late_sandbox(tmp_path):
    """Only never-synced MQLs, so that handing them off late makes every reconciliation pass."""
    sb = LeadHandoffSandbox(tmp_path / "sandbox")
    sb.generate(end=SIM_END, days=4, leads_per_day=60, seed=13,
                faults=FaultRates(never_synced=0.08, duplicated=0, slow=0, malformed_marketing=0, malformed_crm=0,
                                  late=0))
    return sb


def _judged_twice(warehouse_url, sandbox):
    """Every day loaded and judged twice, the second pass with the CRM fully loaded: (truth, instance,
    warehouse, the days rule_handed_off leaves open incidents on, oldest first)."""
    truth = sandbox.ground_truth()
    keys = day_keys(truth)
    instance = dg.DagsterInstance.ephemeral()
    for key in keys + keys:
        materialize_day(warehouse_url, sandbox, key, instance=instance)
    wh = Warehouse(warehouse_url, redaction_key=TEST_REDACTION_KEY.encode())
    with wh.session() as s:
        failing = sorted(p for (p,) in s.query(
            "SELECT DISTINCT partition_key FROM meshline.incidents WHERE check_name = 'rule_handed_off'"
            " AND status = 'open'"))
    return truth, instance, wh, failing


def test_compensating_run_loads_a_late_lead_and_closes_the_incident(warehouse_url, late_sandbox, monkeypatch,
                                                                     capsys):
    truth, instance, wh, failing = _judged_twice(warehouse_url, late_sandbox)
    assert failing, "the sandbox must leave some MQLs unsynced past the SLA"
    day = failing[0]
    assert late_sandbox.hand_off_late(truth["never_synced"]) == len(truth["never_synced"])

    def reconciliation(res):
        return next(e for e in res.get_asset_check_evaluations() if e.check_name == "rule_handed_off")

    # An ordinary re-run reads token > watermark − lookback: leads stamped earlier stay unread.
    plain = materialize_day(warehouse_url, late_sandbox, day, instance=instance)
    with duckdb.connect(str(late_sandbox.paths.marketing), read_only=True) as con:
        mql = dict(con.execute("SELECT lead_id, mql_at FROM marketing_leads").fetchall())
    with wh.session() as s:
        wm = s.scalar("SELECT watermark FROM meshline.watermarks WHERE asset = 'crm_leads' AND partition_key = ?",
                      (day,))
    early = [x for x in truth["never_synced"] if str(mql[x].date()) == day and mql[x] <= wm - timedelta(hours=6)]
    assert early and not reconciliation(plain).passed

    # The compensating run re-extracts the window: the leads load, the check passes, the incident closes.
    fixed = materialize_day(warehouse_url, late_sandbox, day, instance=instance, tags={COMPENSATE_TAG: "true"})
    assert reconciliation(fixed).passed
    crm = next(e for e in fixed.get_asset_materialization_events() if e.asset_key.path[-1] == "crm_leads")
    assert crm.materialization.metadata["compensating"].value is True
    assert crm.materialization.metadata["rows_loaded"].value >= len(early)
    with wh.session() as s:
        inc = s.query("SELECT status, minutes_to_resolve, resolved_by_run FROM meshline.incidents WHERE"
                      " check_name = 'rule_handed_off' AND partition_key = ?", (day,))
    assert inc == [("resolved", pytest.approx(inc[0][1]), fixed.run_id)] and inc[0][1] > 0
    # Re-running the compensation is harmless.
    before = snapshot(warehouse_url)
    again = materialize_day(warehouse_url, late_sandbox, day, instance=instance, tags={COMPENSATE_TAG: "true"})
    assert reconciliation(again).passed and snapshot(warehouse_url) == before

    # `meshline incidents`: the open ones and the resolved one, and MTTR per contract and severity.
    from orchestration.cli.ops import incidents

    monkeypatch.setenv("MESHLINE_WAREHOUSE_URL", warehouse_url)
    assert incidents([]) == 0
    out = capsys.readouterr().out
    with wh.session() as s:
        n_open = s.scalar("SELECT count(*) FROM meshline.incidents WHERE status = 'open'")
        mean = s.scalar("SELECT avg(minutes_to_resolve) FROM meshline.incidents WHERE contract = 'marketing_leads'"
                        " AND status = 'resolved'")
    assert out.startswith(f"{n_open} open,") and "MTTR (resolved incidents):" in out
    assert re.search(r"marketing_leads\s+P2\s+\d+ resolved\s+mean \d", out) and mean > 0


def test_the_sensor_probes_each_failure_and_escalates_what_no_reload_can_fix(warehouse_url, late_sandbox, tmp_path):
    """A failing partition whose sources hold nothing the warehouse lacks is escalated at once, with the
    probe's counts and no run; one whose source now has the missing records is compensated."""
    from assets.config import load_config
    from assets.remediation.probe import probe_reload
    from assets.resources import NotifierResource, SourcesResource, WarehouseResource
    from tests.helpers import lead_handoff_defs

    truth, instance, wh, failing = _judged_twice(warehouse_url, late_sandbox)
    assert len(failing) >= 2, "the sandbox must leave MQLs of two days unsynced past the SLA"
    stuck, fixed = failing[0], failing[1]
    with duckdb.connect(str(late_sandbox.paths.marketing), read_only=True) as con:
        day_of = {lead: str(at.date()) for lead, at in con.execute("SELECT lead_id, mql_at FROM marketing_leads").fetchall()}
    late = [x for x in truth["never_synced"] if day_of[x] == fixed]
    assert late_sandbox.hand_off_late(late) == len(late) > 0  # the CRM catches up on one day only

    config = load_config(Path(_config(tmp_path, late_sandbox)))
    sources = lead_handoff_defs(warehouse_url, late_sandbox)[2]["sources"]
    contracts = {n: Registry().get(n) for n in ("marketing_leads", "crm_leads")}
    before = snapshot(warehouse_url)
    nothing, something = (probe_reload(wh, sources, config, contracts, "lead_handoff", d) for d in (stuck, fixed))
    assert not nothing.changes and something.changes
    assert nothing.evidence["crm_leads"]["rows_new"] == 0 and nothing.evidence["crm_leads"]["rows_in_source"] > 0
    assert something.evidence["crm_leads"]["rows_new"] == len(late)

    sensor = build_sensors({"lead_handoff": "lead_handoff_job"}, "dbt_build_job", contracts, config, interval_s=30,
                           running=True, targets=[])[0]
    ctx = dg.build_sensor_context(instance=instance, resources={
        "warehouse": WarehouseResource(url=warehouse_url, redaction_key=TEST_REDACTION_KEY),
        "notifier": NotifierResource(), "sources": SourcesResource(boundaries=sources.boundaries)})
    reqs = sensor(ctx)
    assert [r.partition_key for r in reqs] == [fixed]
    assert _remediation(wh, "lead_handoff", stuck)[:2] == ("escalated", 0)
    for d in failing[2:]:  # every other failing day is escalated too: its CRM never caught up
        assert _remediation(wh, "lead_handoff", d)[0] == "escalated"
    with wh.session() as s:
        escalated = sorted(p for (p,) in s.query(
            "SELECT partition_key FROM meshline.remediations WHERE status = 'escalated'"))
        pages = [json.loads(p) for (p,) in s.query(
            "SELECT payload FROM meshline.alerts WHERE kind = 'remediation_unfixable' ORDER BY sent_at")]
        escalations = [json.loads(d) for (d,) in s.query(
            "SELECT details FROM meshline.audit_log WHERE action = 'remediation.escalate'")]
    assert sorted(p["partition"] for p in pages) == escalated and fixed not in escalated
    page = next(p for p in pages if p["partition"] == stuck)
    assert page["probe"] == nothing.evidence and "a reload cannot change it" in page["text"]
    assert page["owner"] and "@" in page["owner"]
    assert all(e["reason"] == "no reload can change it" for e in escalations)
    # Counts only: the evidence holds no value of any record.
    assert all(isinstance(n, int) for p in pages for counts in p["probe"].values() for n in counts.values())
    # The probes (the test's and the sensor's) wrote nothing: rows, dead letters and watermarks are as
    # the runs left them.
    assert snapshot(warehouse_url) == before


def _config(tmp_path, sandbox) -> str:
    path = tmp_path / "meshline.yaml"
    path.write_text(f"""version: 1
flows:
  lead_handoff:
    boundaries:
      marketing_leads:
        source: {{kind: sql, url: "{sandbox.marketing_url}", table: marketing_leads}}
      crm_leads:
        source: {{kind: sql, url: "{sandbox.crm_url}", table: crm_leads}}
""")
    return str(path)


def _loaded_for_the_cli(warehouse_url, sandbox, tmp_path, monkeypatch, keys) -> Warehouse:
    """The days `keys` loaded through Dagster, and the environment `meshline dlq` reads pointed at them."""
    for key in keys:
        materialize_day(warehouse_url, sandbox, key)
    monkeypatch.setenv("MESHLINE_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("MESHLINE_CONFIG", _config(tmp_path, sandbox))
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / "home"))
    return Warehouse(warehouse_url, redaction_key=TEST_REDACTION_KEY.encode())


def test_a_dead_letter_fixed_at_the_source_is_replayed_and_resolved(warehouse_url, sandbox, tmp_path, monkeypatch,
                                                                       capsys):
    from orchestration.cli.ops import dlq

    wh = _loaded_for_the_cli(warehouse_url, sandbox, tmp_path, monkeypatch, day_keys(sandbox.ground_truth()))
    with wh.session() as s:
        bad = s.query("SELECT dead_letter_id, source_locator, partition_key FROM meshline.dead_letters WHERE"
                      " asset = 'marketing_leads' AND reason_code = 'invalid_format' ORDER BY dead_letter_id")
        open_before = s.scalar("SELECT count(*) FROM meshline.dead_letters WHERE status = 'open'")
    assert bad
    dl_id, row_id, part = bad[0]
    with duckdb.connect(str(sandbox.paths.marketing)) as con:  # the owner fixes the e-mail at the source
        con.execute("UPDATE marketing_leads SET email = 'fixed.lead@example.com' WHERE row_id = ?", [int(row_id)])

    assert dlq(["list", "--asset", "marketing_leads", "--reason", "invalid_format"]) == 0
    assert dl_id[:12] in capsys.readouterr().out
    assert dlq(["list", "--older-than", "2d"]) == 0  # all were first seen just now
    assert capsys.readouterr().out.startswith("0 dead letter(s)")
    assert dlq(["list", "--older-than", "soon"]) == 2
    assert dlq(["replay", "--asset", "marketing_leads", "--partition", part]) == 0
    out = capsys.readouterr().out
    assert "1 resolved" in out and "[1/1] marketing_leads" in out
    with wh.session() as s:
        status, by_run, how = s.query("SELECT status, resolved_by_run, resolution FROM meshline.dead_letters"
                                      " WHERE dead_letter_id = ?", (dl_id,))[0]
        loaded = s.scalar("SELECT count(*) FROM raw.marketing_leads WHERE email = 'fixed.lead@example.com'")
        open_after = s.scalar("SELECT count(*) FROM meshline.dead_letters WHERE status = 'open'")
        audit = s.query("SELECT actor, action, target FROM meshline.audit_log WHERE action = 'dlq.replay'")
    assert (status, how) == ("resolved", "replayed") and by_run.startswith("dlq-replay-") and loaded == 1
    assert open_after == open_before - 1  # the others, not fixed, stay open
    assert len(audit) == 1 and audit[0][0].startswith("cli:") and audit[0][2] == f"marketing_leads/{part}"

    before = snapshot(warehouse_url)
    assert dlq(["replay", "--asset", "marketing_leads", "--partition", part]) == 0
    assert "0 resolved" in capsys.readouterr().out
    assert snapshot(warehouse_url) == before  # replaying twice changes nothing

    # resolve by hand: audited, and only open dead letters
    other = next(i for i, _, _ in bad[1:]) if len(bad) > 1 else None
    if other is None:
        with wh.session() as s:
            other = s.scalar("SELECT dead_letter_id FROM meshline.dead_letters WHERE status = 'open' LIMIT 1")
    assert dlq(["resolve", other, "--note", "accepted as lost"]) == 0
    assert dlq(["resolve", other, "--note", "again"]) == 1
    assert verify_audit_log(wh) == []


def test_a_replay_that_dies_before_its_audit_row_leaves_nothing_resolved(warehouse_url, sandbox, tmp_path,
                                                                         monkeypatch):
    """The replay's audit row is written in the reload's own transaction: if the process dies before it
    (here, the audit write fails), the reload is not committed either, so no dead letter is ever resolved
    without its `dlq.replay` record."""
    import assets.remediation.dlq as q
    from orchestration.cli.ops import dlq

    key = day_keys(sandbox.ground_truth())[0]
    wh = _loaded_for_the_cli(warehouse_url, sandbox, tmp_path, monkeypatch, [key])
    with wh.session() as s:
        row_id = s.scalar("SELECT source_locator FROM meshline.dead_letters WHERE asset = 'marketing_leads' AND"
                          " reason_code = 'invalid_format' AND partition_key = ? ORDER BY dead_letter_id", (key,))
    assert row_id is not None
    with duckdb.connect(str(sandbox.paths.marketing)) as con:
        con.execute("UPDATE marketing_leads SET email = 'fixed.lead@example.com' WHERE row_id = ?", [int(row_id)])
    before = snapshot(warehouse_url)

    def dies(*args, **kwargs):
        raise RuntimeError("killed before the audit row")

    real_audit = q.audit
    monkeypatch.setattr(q, "audit", dies)
    with pytest.raises(RuntimeError, match="killed"):
        dlq(["replay", "--asset", "marketing_leads", "--partition", key])
    assert snapshot(warehouse_url) == before
    with wh.session() as s:
        assert s.scalar("SELECT count(*) FROM meshline.dead_letters WHERE resolved_by_run LIKE ?", ("dlq-replay-%",)) == 0
    monkeypatch.setattr(q, "audit", real_audit)
    assert dlq(["replay", "--asset", "marketing_leads", "--partition", key]) == 0
    with wh.session() as s:
        resolved = s.scalar("SELECT count(*) FROM meshline.dead_letters WHERE resolved_by_run LIKE ?", ("dlq-replay-%",))
        details = s.query("SELECT details FROM meshline.audit_log WHERE action = 'dlq.replay'")
    assert resolved == 1 and len(details) == 1 and json.loads(details[0][0])["resolved"] == 1
