"""`meshline audit` on DuckDB and Postgres: each of the 12 items is Y on a healthy state and N when the
state or configuration lacks what it checks; a critical N makes the command exit 1."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from assets.config import load_config
from assets.flows.declared import store
from assets.flows.rules import Findings
from assets.hygiene.audit import evaluate
from assets.loading import Warehouse
from assets.loading.ddl import ensure_tables
from assets.remediation.state import CheckOutcome, ensure, now, record_check, record_postmortem
from assets.settings import DEFAULT_CONFIG, PROJECT_ROOT, Settings
from expectations.registry import Registry
from orchestration.cli.audit import main

GOOD_ENV = {"MESHLINE_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook", "MESHLINE_REDACTION_KEY": "k" * 32}
GOOD = {"alert_webhook_url": GOOD_ENV["MESHLINE_ALERT_WEBHOOK_URL"], "redaction_key": GOOD_ENV["MESHLINE_REDACTION_KEY"]}
FLOWS = {"lead_handoff": ("marketing_leads", "crm_leads"), "quote_to_cash": ("crm_opportunities", "billing_invoices"),
         "subscription_updates": ("product_plan_events", "billing_subscriptions")}


@pytest.fixture
def healthy(warehouse_url, tmp_path):
    """A warehouse in the state a well-run Meshline leaves: contracts published, every boundary loaded
    and checked, the scorecard built, a recent synthetic run, an intact audit log."""
    from assets.catalog import publish

    reg = Registry()
    publish(reg, warehouse_url)
    wh = Warehouse(warehouse_url)
    with wh.transaction() as tx:
        ensure(tx)
        for flow, names in FLOWS.items():
            for n in names:
                ensure_tables(tx, reg.get(n))
                tx.execute("INSERT INTO meshline.load_log (load_id, flow, asset, partition_key, rows_read, rows_loaded,"
                           " rows_superseded, rows_dead_lettered, rows_held, contract_version, run_id, started_at,"
                           " finished_at) VALUES (?, ?, ?, '2026-03-10', 10, 10, 0, 0, 0, '1.0.0', 'r', ?, ?)",
                           (f"l-{n}", flow, n, now(), now()))
        tx.execute("CREATE SCHEMA IF NOT EXISTS marts")
        tx.execute("CREATE TABLE marts.hygiene_scorecard (flow TEXT, partition_key TEXT)")
        for flow in FLOWS:
            tx.execute("INSERT INTO marts.hygiene_scorecard VALUES (?, '2026-03-10')", (flow,))
        tx.execute("INSERT INTO meshline.synthetic_runs VALUES ('s1', ?, ?, 9, 9, 0, 'passed')", (now(), now()))
        for rules in load_config(DEFAULT_CONFIG).rules.values():  # every declared rule judged once
            for rule in rules:
                store(tx, rule, Findings(rule.name, rule.kind, "2026-03-10", checked=3), "r")
    for flow, names in FLOWS.items():
        for n in names:
            record_check(wh, CheckOutcome(flow=flow, contract=n, contract_severity="standard", asset=n,
                                          check_name=f"volume_{n}", partition_key="2026-03-10", passed=True,
                                          severity="WARN", remediable=True, description="ok", run_id="r"))
    return Settings(home=tmp_path / "home", warehouse_url=warehouse_url, **GOOD), wh


def _verdicts(settings, **changes) -> dict[int, bool]:
    return {it.number: it.ok for it in evaluate(dataclasses.replace(settings, **changes))}


def test_a_healthy_state_meets_all_twelve(healthy, monkeypatch, capsys):
    settings, _ = healthy
    items = evaluate(settings)
    assert [it.number for it in items if not it.ok] == [], [(it.name, it.evidence) for it in items if not it.ok]
    assert all(it.evidence for it in items)
    monkeypatch.setenv("MESHLINE_WAREHOUSE_URL", settings.warehouse_url)
    monkeypatch.setenv("MESHLINE_HOME", str(settings.home))
    for k, v in GOOD_ENV.items():
        monkeypatch.setenv(k, v)
    assert main([]) == 0 and "12/12 met; every critical item met" in capsys.readouterr().out


def _write_config(tmp_path, text: str) -> Settings:
    path = tmp_path / "meshline.yaml"
    path.write_text(text)
    return path


def test_each_item_reports_n_when_what_it_checks_is_missing(healthy, tmp_path, monkeypatch, capsys):
    settings, wh = healthy

    def change(sql, params=()):
        with wh.transaction() as tx:
            tx.execute(sql, params)

    change("DELETE FROM meshline.contracts WHERE contract = 'crm_leads'")
    assert _verdicts(settings)[1] is False
    from assets.catalog import publish

    publish(Registry(), settings.warehouse_url)
    change("DELETE FROM meshline.rule_findings WHERE rule = 'plan_applied'")
    items = {it.number: it for it in evaluate(settings)}
    assert not items[2].ok and "rules never evaluated: subscription_updates.plan_applied" in items[2].evidence
    change("DELETE FROM marts.hygiene_scorecard WHERE flow = 'quote_to_cash'")
    assert _verdicts(settings)[2] is False
    change("DELETE FROM meshline.load_log WHERE asset = 'billing_invoices'")
    assert _verdicts(settings)[3] is False
    assert _verdicts(settings, alert_webhook_url=None)[4] is False
    change("UPDATE meshline.synthetic_runs SET started_at = ?", (now() - timedelta(hours=30),))
    assert _verdicts(settings)[5] is False
    change("CREATE TABLE raw.unkeyed (x INTEGER)")
    assert _verdicts(settings)[7] is False
    change("DROP TABLE raw.unkeyed")
    assert _verdicts(settings)[7] is True
    if settings.warehouse_url.startswith("duckdb"):  # no primary key there: a repeated key is what fails
        change("INSERT INTO raw.crm_leads (crm_lead_id, row_id) VALUES (1, 1), (2, 2)")
        assert _verdicts(settings)[7] is True
        change("INSERT INTO raw.crm_leads (crm_lead_id, row_id) VALUES (1, 3)")
        items = {it.number: it for it in evaluate(settings)}
        assert not items[7].ok and "crm_leads (repeated crm_lead_id)" in items[7].evidence
        change("DELETE FROM raw.crm_leads WHERE row_id = 3")
        assert _verdicts(settings)[7] is True
    stopped = (PROJECT_ROOT / "meshline.yaml").read_text().replace("compensation: true", "compensation: false", 1)
    assert _verdicts(settings, config_path=_write_config(tmp_path, stopped))[10] is False
    assert _verdicts(settings, redaction_key=None)[12] is False

    # 11: a resolved P1 without a postmortem; recording one makes it Y again
    for passed in (False, True):
        record_check(wh, CheckOutcome(flow="lead_handoff", contract="crm_leads", contract_severity="critical",
                                      asset="crm_leads", check_name="contract_crm_leads", partition_key="2026-03-11",
                                      passed=passed, severity="ERROR", remediable=True, description="x", run_id="r"))
    assert _verdicts(settings)[11] is False
    with wh.session() as s:
        iid = s.scalar("SELECT incident_id FROM meshline.incidents WHERE severity = 'P1'")
    assert record_postmortem(wh, iid, "https://wiki.example/pm/1", "test")
    assert _verdicts(settings)[11] is True

    # 12 again: a tampered audit log
    change("UPDATE meshline.audit_log SET actor = 'someone else' WHERE seq = 1")
    assert _verdicts(settings)[12] is False

    # 6 and 8: configuration — a flow validated on one side only; an HTTP source that never retries
    one_side = dataclasses.replace(settings, config_path=_write_config(tmp_path, """version: 1
flows:
  lead_handoff:
    boundaries:
      marketing_leads:
        source: {kind: sql, url: sandbox, table: marketing_leads}
"""))
    assert _verdicts(one_side)[6] is False
    text = (PROJECT_ROOT / "meshline.yaml").read_text().replace("page_size: 500", "page_size: 500\n          max_retries: 0", 1)
    no_retry = dataclasses.replace(settings, config_path=_write_config(tmp_path, text))
    assert _verdicts(no_retry)[8] is False

    # 9 and 12: contracts — no runbook; an e-mail column not marked PII
    real_get = Registry.get

    def get(self, name, version=None):
        c = real_get(self, name, version)
        if name == "crm_opportunities":
            c = dataclasses.replace(c, runbook=None)
        if name == "marketing_leads":
            c = dataclasses.replace(c, columns=tuple(dataclasses.replace(col, pii=False) for col in c.columns))
        return c

    monkeypatch.setattr(Registry, "get", get)
    v = _verdicts(settings)
    assert v[9] is False and v[12] is False
    monkeypatch.setenv("MESHLINE_WAREHOUSE_URL", settings.warehouse_url)
    monkeypatch.setenv("MESHLINE_HOME", str(settings.home))
    assert main([]) == 1 and "critical not met" in capsys.readouterr().out
