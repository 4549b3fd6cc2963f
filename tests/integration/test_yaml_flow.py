"""A flow that is none of the shipped three, declared in meshline.yaml alone: its own contracts (in the
folder MESHLINE_CONTRACTS_DIR names), its own file-drop sources and its reconciliation rules. Without a
line of Python it gets its assets, its rule checks, its job, the nightly hygiene's runs and the
compensating sensor's, and its checks find exactly the faults the test injected, on DuckDB and Postgres."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import dagster as dg
import pytest
import yaml

from assets.loading import Warehouse
from assets.remediation.compensation import plan_compensation
from assets.settings import PROJECT_ROOT, Settings
from expectations.contract import CONTRACTS_DIR
from tests.conftest import TEST_REDACTION_KEY
from tests.integration.test_rules import DAY, _deals, _invoices

FLOW_YAML = """
billing_sync:
  description: Closed-won deals reach billing as one invoice each, on the same terms.
  boundaries:
    deals: {contract: deals, source: {kind: files, folder: "${LANDING}/deals"}}
    invoices: {contract: invoices, source: {kind: files, folder: "${LANDING}/invoices"}}
  rules:
    invoiced:
      kind: presence
      from: deals
      to: invoices
      match: {deal_id: deal_id}
      partition_by: closed_at
      sla: 24h
      where: [{column: stage, op: "=", value: won}]
      severity: critical
    one_invoice_each: {kind: cardinality, from: deals, to: invoices, match: {deal_id: deal_id},
                       partition_by: closed_at, at_most: 1}
    no_stray_invoices: {kind: orphans, from: deals, to: invoices, match: {deal_id: deal_id},
                        b_partition_by: issued_at}
    same_terms:
      kind: agreement
      from: deals
      to: invoices
      match: {deal_id: deal_id}
      partition_by: closed_at
      fields: [{from: amount, to: amount, tolerance: 0.01}, {from: currency}, {from: plan, to: plan_code, map: {pro: PRO}}]
"""


def _contract(name: str, key: str, columns: dict) -> dict:
    return {"contract": name, "version": "1.0.0", "severity": "critical", "description": f"{name} as exported",
            "boundary": {"flow": "billing_sync", "source_system": "erp", "table": name},
            "idempotency_key": key, "change_token": "updated_at", "owners": {"contract": "revops@meshline.example"},
            "columns": {key: {"type": "integer", "required": True}, **columns,
                        "updated_at": {"type": "timestamp", "required": True}}}


@pytest.fixture
def yaml_flow(tmp_path, home, monkeypatch, warehouse_url):
    contracts = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, contracts)  # a team's folder holds the shipped contracts and its own
    for spec in (_contract("deals", "deal_id", {"stage": {"type": "string"}, "amount": {"type": "number"},
                                                 "currency": {"type": "string"}, "plan": {"type": "string"},
                                                 "closed_at": {"type": "timestamp"}}),
                 _contract("invoices", "invoice_id", {"deal_id": {"type": "integer"}, "amount": {"type": "number"},
                                                       "currency": {"type": "string"}, "plan_code": {"type": "string"},
                                                       "issued_at": {"type": "timestamp"}})):
        (contracts / spec["contract"]).mkdir()
        (contracts / spec["contract"] / "1.0.0.yml").write_text(yaml.safe_dump(spec))
    landing = tmp_path / "landing"
    for name, rows in (("deals", _deals()), ("invoices", _invoices())):
        (landing / name).mkdir(parents=True)
        (landing / name / "export.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "meshline.yaml"
    shipped = (PROJECT_ROOT / "meshline.yaml").read_text()
    config.write_text(shipped.replace("\nflows:\n", "\nflows:\n" + "\n".join(
        "  " + line for line in FLOW_YAML.strip("\n").splitlines()) + "\n", 1))
    monkeypatch.setenv("MESHLINE_CONTRACTS_DIR", str(contracts))
    monkeypatch.setenv("MESHLINE_CONFIG", str(config))
    monkeypatch.setenv("MESHLINE_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("LANDING", str(landing))
    return Settings.from_env()


def test_a_flow_declared_in_yaml_alone_loads_checks_and_finds_exactly_the_injected_faults(yaml_flow):
    from orchestration.definitions import build_defs

    defs = build_defs(yaml_flow)
    job = defs.resolve_job_def("billing_sync_job")
    assert "Closed-won deals reach billing" in job.description
    instance = dg.DagsterInstance.ephemeral()
    # Billing exports its invoices the next day: that day is loaded first, then the deals' day is judged.
    job.execute_in_process(partition_key="2026-03-02", instance=instance, raise_on_error=False)
    res = job.execute_in_process(partition_key=DAY, instance=instance, raise_on_error=False)
    loaded = {e.materialization.asset_key.path[-1] for e in res.get_asset_materialization_events()}
    assert loaded == {"deals", "invoices"}
    evaluations = res.get_asset_check_evaluations()
    checks = {e.check_name: e for e in evaluations if e.asset_key == dg.AssetKey(["raw", "deals"])}
    # each rule's verdict shows on its other boundary too, informational there
    on_invoices = {e.check_name: (e.passed, e.severity) for e in evaluations
                   if e.asset_key == dg.AssetKey(["raw", "invoices"]) and e.check_name.startswith("rule_")}
    assert on_invoices == {name: (c.passed, dg.AssetCheckSeverity.WARN)
                           for name, c in checks.items() if name.startswith("rule_")}
    found = {name: (c.passed, c.metadata["failing"].value, c.metadata["sample_keys"].value)
             for name, c in checks.items() if name.startswith("rule_")}
    assert found == {
        "rule_invoiced": (False, 1, ["9"]),              # deal 9 never invoiced; deal 10 within its SLA
        "rule_one_invoice_each": (False, 1, ["8"]),      # deal 8 invoiced twice
        "rule_no_stray_invoices": (False, 1, ["10"]),    # invoice 10 is for a deal the CRM lacks
        "rule_same_terms": (False, 5, ["2", "4", "5", "8", "8"]),
    }
    assert checks["rule_invoiced"].severity == dg.AssetCheckSeverity.ERROR
    assert checks["rule_one_invoice_each"].severity == dg.AssetCheckSeverity.WARN
    on = {k.asset_key.path[-1] for k in defs.resolve_asset_graph().asset_check_keys if k.name == "rule_invoiced"}
    assert on == {"deals", "invoices", "crm_opportunities", "billing_invoices"}  # quote_to_cash has one too

    wh = Warehouse(yaml_flow.warehouse_url, redaction_key=TEST_REDACTION_KEY.encode())
    with wh.session() as s:
        findings = dict(s.query("SELECT rule, failing FROM meshline.rule_findings WHERE partition_key = ?", (DAY,)))
        incidents = s.query("SELECT check_name, partition_key, status FROM meshline.incidents")
    assert findings == {"invoiced": 1, "one_invoice_each": 1, "no_stray_invoices": 1, "same_terms": 5}
    assert ("rule_invoiced", DAY, "open") in incidents, incidents

    # The compensating sensor's plan and the nightly hygiene both cover the new flow.
    reqs, _ = plan_compensation(wh, dg.DagsterInstance.ephemeral(), {"billing_sync": "billing_sync_job"}, None)
    assert ("billing_sync_job", DAY) in [(r.job_name, r.partition_key) for r in reqs]  # (03-02: freshness)
    nightly = defs.resolve_schedule_def("nightly_hygiene")
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 2, 1),
                                    repository_def=defs.get_repository_def())
    requests = nightly.evaluate_tick(ctx).run_requests or []
    mine = [r for r in requests if r.run_key and ":billing_sync:" in r.run_key]
    assert {r.partition_key for r in mine} == {DAY, "2026-02-28", "2026-02-27"}  # its 24 h SLA, plus a day
    assert set(mine[0].asset_selection) == {dg.AssetKey(["raw", "deals"]), dg.AssetKey(["raw", "invoices"])}


def test_a_rule_that_cannot_run_fails_the_definitions_with_file_line_and_key(yaml_flow, tmp_path):
    from assets.config import ConfigError

    config = tmp_path / "meshline.yaml"
    config.write_text(config.read_text().replace("match: {deal_id: deal_id}\n", "match: {deal_id: deal_idd}\n", 1))
    with pytest.raises(ConfigError, match=r"meshline.yaml:\d+: flows.billing_sync.rules.invoiced.match.deal_id: "
                                          r"contract invoices has no column 'deal_idd'"):
        yaml_flow.config()


def test_meshline_validate_summarises_flows_and_rules_and_refuses_a_pin_to_nothing(yaml_flow, tmp_path, capsys):
    import os

    from orchestration.cli import main

    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "billing_sync: 2 boundaries (deals@1.0.0, invoices@1.0.0), 4 rule(s)" in out
    assert "invoiced [presence, critical]: every deals row has a matching invoices row (deal_id=deal_id) within 24 h" in out
    pins = tmp_path / "contracts" / "pins.yml"
    pins.write_text(pins.read_text() + "no_such_contract: 1.0.0\n")
    assert os.environ["MESHLINE_CONTRACTS_DIR"] == str(tmp_path / "contracts")
    assert main(["validate"]) == 2
    assert "no contract named 'no_such_contract'" in capsys.readouterr().err
    assert main(["contracts", "test"]) == 2


def test_the_readme_example_flow_is_valid(yaml_flow, tmp_path, monkeypatch):
    import re

    from assets.config import load_config

    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Adding your own flow", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "readme.yaml"
    path.write_text("version: 1\n" + example)
    config = load_config(path, {"CRM_DB_URL": "duckdb:///x", "ERP_URL": "https://erp.example"})
    assert [r.name for r in config.rules["billing_sync"]] == ["invoiced", "one_invoice_each", "same_terms"]


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)  # dbt's Postgres path: the demo's test
def test_the_scorecard_counts_a_yaml_flows_rule_failures(yaml_flow):
    from orchestration.definitions import build_defs

    defs = build_defs(yaml_flow)
    instance = dg.DagsterInstance.ephemeral()
    for key in ("2026-03-02", DAY):
        defs.resolve_job_def("billing_sync_job").execute_in_process(partition_key=key, instance=instance,
                                                                    raise_on_error=False)
    wh = Warehouse(yaml_flow.warehouse_url, redaction_key=TEST_REDACTION_KEY.encode())
    from assets.loading.ddl import ensure_tables
    from expectations.registry import Registry

    with wh.transaction() as tx:  # the shipped flows' marts need their raw tables, here empty
        for name in ("marketing_leads", "crm_leads", "crm_opportunities", "billing_invoices", "product_plan_events",
                     "billing_subscriptions"):
            ensure_tables(tx, Registry().get(name))
    res = defs.resolve_job_def("dbt_build_job").execute_in_process(instance=instance, raise_on_error=False)
    built = {e.materialization.asset_key for e in res.get_asset_materialization_events()}
    assert dg.AssetKey(["marts", "hygiene_scorecard"]) in built, [str(e.message)[:300] for e in res.all_events
                                                                   if e.is_step_failure]
    with wh.session() as s:
        row = s.query("SELECT rows_read, reconciliation_failures FROM marts.hygiene_scorecard"
                      " WHERE flow = 'billing_sync' AND partition_key = ?", (DAY,))
    assert row == [(11, 8)]  # the 11 deals read that day (invoices came the next); 1 + 1 + 1 + 5 rule failures
