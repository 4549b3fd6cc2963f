"""The Definitions load and every job, schedule, sensor and check resolves, for both warehouses."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from assets.settings import WAREHOUSE_POOL, Settings
from tests.conftest import TEST_REDACTION_KEY


@pytest.fixture
def settings(home, warehouse_url) -> Settings:
    return Settings(home=home, warehouse_url=warehouse_url, redaction_key=TEST_REDACTION_KEY)


def test_every_job_schedule_sensor_and_check_resolves(settings):
    from orchestration.definitions import build_defs

    defs = build_defs(settings)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw/marketing_leads", "raw/crm_leads", "staging/stg_marketing_leads", "staging/stg_crm_leads",
            "raw/crm_opportunities", "raw/billing_invoices", "raw/product_plan_events",
            "raw/billing_subscriptions", "marts/reconciliation_failures", "marts/hygiene_scorecard"} <= keys
    assert not {"marts/lead_handoff", "marts/quote_to_cash", "marts/subscription_updates"} & keys  # no per-flow SQL
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {"lead_handoff_job", "quote_to_cash_job", "subscription_updates_job", "dbt_build_job"} <= jobs
    for flow, boundaries in (("lead_handoff", {"marketing_leads", "crm_leads"}),
                             ("quote_to_cash", {"crm_opportunities", "billing_invoices"}),
                             ("subscription_updates", {"product_plan_events", "billing_subscriptions"})):
        job = defs.resolve_job_def(f"{flow}_job")
        assert {k.path[-1] for k in job.asset_layer.executable_asset_keys} == boundaries
    assert {k.path[0] for k in defs.resolve_job_def("dbt_build_job").asset_layer.executable_asset_keys} == {
        "staging", "marts"}
    for sched in defs.schedules:
        assert defs.resolve_schedule_def(sched.name).job_name in jobs
    assert {s.name for s in defs.schedules} == {"nightly_hygiene", "nightly_synthetic", "nightly_retention"}
    assert defs.resolve_schedule_def("nightly_retention").job_name == "retention_job"
    assert defs.resolve_schedule_def("nightly_synthetic").job_name == "synthetic_job"
    # nightly_hygiene: every flow's days until its reconciliation SLA has passed as of the other side's
    # loaded data (SLA + a day), oldest first, then dbt
    from datetime import UTC, datetime

    hygiene = defs.resolve_schedule_def("nightly_hygiene")
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 15, 1, 0, tzinfo=UTC),
                                    repository_def=defs.get_repository_def())
    reqs = hygiene.evaluate_tick(ctx).run_requests
    flows = {"lead_handoff": {"marketing_leads", "crm_leads"},
             "quote_to_cash": {"crm_opportunities", "billing_invoices"},
             "subscription_updates": {"product_plan_events", "billing_subscriptions"}}
    reach = {"lead_handoff": 3, "quote_to_cash": 4, "subscription_updates": 3}  # SLAs 24 h, 48 h, 12 h
    assert [({k.path[-1] for k in r.asset_selection}, r.partition_key) for r in reqs[:-1]] == [
        (names, f"2026-03-{day:02d}") for flow, names in flows.items() for day in range(14, 14 - reach[flow], -1)]
    # last, the dbt models, unpartitioned; every run tagged so the queue runs them one at a time, in order
    assert reqs[-1].partition_key is None and {k.path[0] for k in reqs[-1].asset_selection} == {"staging", "marts"}
    assert all(r.tags["meshline/pass"] == "nightly_hygiene" for r in reqs)
    repo = defs.get_repository_def()  # each request plans as a run of the implicit asset job
    for r in (reqs[0], reqs[-1]):
        sub = repo.get_implicit_job_def_for_assets(r.asset_selection).get_subset(asset_selection=set(r.asset_selection))
        assert {k for k in sub.asset_layer.asset_graph.get_all_asset_keys() if k in set(r.asset_selection)} == set(
            r.asset_selection)
    assert len({r.run_key for r in reqs}) == len(reqs) and all("2026-03-15" in r.run_key for r in reqs)
    assert {s.name for s in defs.sensors} == {"run_failure_alert", "compensating_backfill", "dead_letter_pager"}
    compensating = defs.resolve_sensor_def("compensating_backfill")
    assert {t.job_name for t in compensating.targets} == {
        "lead_handoff_job", "quote_to_cash_job", "subscription_updates_job", "dbt_build_job"}
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {("raw/marketing_leads", "contract_marketing_leads"), ("raw/crm_leads", "contract_crm_leads"),
            ("raw/marketing_leads", "rule_handed_off"), ("raw/crm_leads", "rule_handed_off"),
            ("raw/crm_opportunities", "rule_invoiced"), ("raw/crm_opportunities", "rule_invoice_has_deal"),
            ("raw/crm_leads", "contract_version_crm_leads"), ("raw/product_plan_events", "rule_plan_applied"),
            ("raw/billing_subscriptions", "contract_billing_subscriptions")} <= checks
    assert any(a == "marts/reconciliation_failures" for a, _ in checks), "dbt tests show as asset checks"
    # raw → staging lineage; the reconciliation mart reads what the rules found
    assert dg.AssetKey(["raw", "marketing_leads"]) in graph.get(dg.AssetKey(["staging", "stg_marketing_leads"])).parent_keys
    assert {k.path[-1] for k in graph.get(dg.AssetKey(["marts", "reconciliation_failures"])).parent_keys} == {
        "rule_findings", "rule_failures"}
    # the crm contract is critical: its check blocks; marketing's is standard
    specs = {s.key.name: s for a in defs.assets if isinstance(a, dg.AssetsDefinition) for s in a.check_specs}
    specs.update({s.key.name: s for c in defs.asset_checks for s in c.check_specs})
    assert specs["contract_crm_leads"].blocking and not specs["contract_marketing_leads"].blocking
    # Dagster shows each flow: a group whose assets open with the flow's description and carry owners
    # (from the contract), kinds, the contract's column schema and flow and severity tags; each rule
    # check says its rule in words
    crm = graph.get(dg.AssetKey(["raw", "crm_opportunities"]))
    assert crm.group_name == "quote_to_cash"
    assert crm.description.startswith("Flow `quote_to_cash`: Every closed-won deal in the CRM is invoiced")
    assert "sales-ops@meshline.example" in crm.owners and {"python", "arrow"} <= set(crm.kinds)
    schema = crm.metadata["dagster/column_schema"]
    assert {c.name for c in schema.columns} >= {"opportunity_id", "stage", "amount", "currency", "closed_at"}
    assert crm.tags["meshline/flow"] == "quote_to_cash" and crm.tags["meshline/severity"] in ("critical", "standard")
    rule_specs = {(s.asset_key.path[-1], s.name): s for c in defs.asset_checks for s in c.check_specs}
    invoiced = rule_specs[("crm_opportunities", "rule_invoiced")]
    assert invoiced.description == "Every deal closed-won on the day is invoiced (judged once 48 h have passed)."
    assert rule_specs[("billing_invoices", "rule_invoiced")].description.startswith(invoiced.description)
    # a run's steps execute in the run's own process unless meshline.yaml says otherwise
    assert {defs.resolve_job_def(j).executor_def.name for j in ("lead_handoff_job", "dbt_build_job")} == {"in_process"}
    # raw assets retry with exponential backoff and jitter
    raw = defs.resolve_assets_def(dg.AssetKey(["raw", "crm_leads"]))
    policy = raw.op.retry_policy
    assert policy.max_retries == 3 and policy.backoff == dg.Backoff.EXPONENTIAL and policy.jitter is not None


def test_local_mode_puts_every_warehouse_writer_in_one_pool_of_size_1(home):
    from orchestration.definitions import build_defs

    settings = Settings.from_env()
    assert settings.local and settings.warehouse_pool == WAREHOUSE_POOL
    defs = build_defs(settings)
    for a in defs.assets:
        if isinstance(a, dg.AssetsDefinition):
            assert a.op.pool == WAREHOUSE_POOL, a.node_def.name
    readers = [c for c in defs.asset_checks if "warehouse" in c.required_resource_keys]
    assert len(readers) >= 3
    for c in readers:
        assert c.op.pool == WAREHOUSE_POOL
    settings.ensure_local_dagster_home()
    cfg = (settings.dagster_home / "dagster.yaml").read_text()
    import yaml

    conf = yaml.safe_load(cfg)
    assert conf["concurrency"]["pools"]["default_limit"] == 1
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    try:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    finally:
        instance.dispose()


def test_a_moved_home_keeps_its_runs_in_the_new_place(tmp_path, monkeypatch):
    """The embedded default's dagster.yaml names no absolute folder: a home copied or moved elsewhere
    writes its runs where it now is, never into the old place."""
    import shutil

    old = Settings(home=tmp_path / "old", warehouse_url=f"duckdb:///{tmp_path / 'w.duckdb'}")
    old.ensure_local_dagster_home()
    # one written by an earlier Meshline named its folder: brought up to date
    cfg = old.dagster_home / "dagster.yaml"
    cfg.write_text(cfg.read_text().replace("base_dir:\n      env: DAGSTER_HOME", f"base_dir: {old.dagster_home}"))
    assert str(old.dagster_home) in cfg.read_text()
    old.ensure_local_dagster_home()
    assert str(old.dagster_home) not in cfg.read_text()
    new_home = tmp_path / "new"
    shutil.move(str(old.home), str(new_home))
    monkeypatch.setenv("DAGSTER_HOME", str(new_home / "dagster"))
    with dg.DagsterInstance.get() as instance:
        @dg.asset
        def one() -> int:
            return 1

        dg.materialize([one], instance=instance)
        assert len(instance.get_runs()) == 1
    assert not (tmp_path / "old").exists()
    assert list((new_home / "dagster").rglob("*.db")), "the runs are stored under the new home"


@pytest.mark.parametrize("key", [None, "", "k", "fifteen-chars!!"])
def test_a_postgres_warehouse_refuses_to_start_without_a_real_redaction_key(tmp_path, key):
    """Outside the embedded default the development key (public in this repository) would let anyone
    reverse redacted e-mails with a dictionary: the definitions and every writer refuse to start."""
    from orchestration.definitions import build_defs

    settings = Settings(home=tmp_path, warehouse_url="postgresql+psycopg2://u@127.0.0.1:9/wh", redaction_key=key)
    with pytest.raises(ValueError, match="MESHLINE_REDACTION_KEY: a Postgres warehouse needs a redaction key"):
        build_defs(settings)
    with pytest.raises(ValueError, match="MESHLINE_REDACTION_KEY"):
        settings.warehouse()
    local = Settings(home=tmp_path, warehouse_url=f"duckdb:///{tmp_path / 'w.duckdb'}", redaction_key=key)
    local.check_redaction_key()  # the embedded default may use the development key


def test_settings_switch_on_the_warehouse_url(tmp_path):
    local = Settings.from_env({"MESHLINE_HOME": str(tmp_path)})
    assert local.dialect == "duckdb" and local.dbt_target == "duckdb"
    assert local.warehouse_url == f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    profile = yaml.safe_load((local.dbt_profiles_dir() / "profiles.yml").read_text())["meshline"]
    assert profile["target"] == "duckdb"
    assert profile["outputs"]["duckdb"]["path"] == str(tmp_path / "warehouse.duckdb")
    pg = Settings.from_env({"MESHLINE_HOME": str(tmp_path / "pg"),
                            "MESHLINE_WAREHOUSE_URL": "postgresql+psycopg2://u:secret@db.internal:6543/wh"})
    assert pg.dialect == "postgres" and pg.warehouse_pool is None
    path = pg.dbt_profiles_dir() / "profiles.yml"
    out = yaml.safe_load(path.read_text())["meshline"]["outputs"]["postgres"]
    assert (out["host"], out["port"], out["dbname"], out["user"], out["password"]) == (
        "db.internal", 6543, "wh", "u", "secret")
    assert path.stat().st_mode & 0o077 == 0, "the profile holds the connection: owner-only"
    with pytest.raises(ValueError, match=r"postgresql\+psycopg2"):
        Settings.from_env({"MESHLINE_WAREHOUSE_URL": "postgresql://u@h/db"})
    with pytest.raises(ValueError, match="unsupported"):
        Settings.from_env({"MESHLINE_WAREHOUSE_URL": "mysql://u@h/db"})


def test_the_shipped_instance_configs_are_valid(tmp_path):
    """deploy/dagster.yaml (production) and the embedded default's dagster.yaml pass Dagster's own
    validation; nightly_hygiene's runs are limited to one at a time in production."""
    from dagster._core.instance.config import dagster_instance_config

    from assets.settings import PROJECT_ROOT

    cfg, _ = dagster_instance_config(str(PROJECT_ROOT / "deploy"), "dagster.yaml")
    limits = cfg["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "meshline/pass", "value": "nightly_hygiene", "limit": 1} in limits
    home = Settings(home=tmp_path, warehouse_url=f"duckdb:///{tmp_path / 'w.duckdb'}").ensure_local_dagster_home()
    local, _ = dagster_instance_config(str(home), "dagster.yaml")
    assert local["concurrency"]["pools"]["default_limit"] == 1


def _code_location_in_a_child(home, warehouse_url, code: str) -> list[str]:
    """Run `code` in a fresh Python over this test's home and warehouse; the words it printed."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MESHLINE_HOME": str(home), "MESHLINE_WAREHOUSE_URL": warehouse_url}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout.split()


def test_code_location_freezes_what_it_built(home, warehouse_url):
    """`defs` (what Dagster loads in every code server and run worker) moves the definitions out of the
    collector's reach, and its jobs still resolve afterwards (the year bench runs them so). In a child
    process: a freeze is for the life of a process."""
    code = ("import gc; from orchestration.definitions import defs; assert gc.get_freeze_count() == 0; "
            "d = defs(); frozen = gc.get_freeze_count(); "
            "print(frozen, d.resolve_job_def('synthetic_job') is not None)")
    frozen, resolved = _code_location_in_a_child(home, warehouse_url, code)
    assert int(frozen) > 100_000, frozen
    assert resolved == "True"


def test_boundary_assets_carry_their_contract_as_a_column_schema_owners_and_tags(settings):
    from orchestration.definitions import build_defs

    defs = build_defs(settings)
    spec = defs.resolve_assets_def(dg.AssetKey(["raw", "marketing_leads"])).specs_by_key[
        dg.AssetKey(["raw", "marketing_leads"])]
    schema = spec.metadata["dagster/column_schema"]
    cols = {c.name: c for c in schema.columns}
    assert list(cols) == ["row_id", "lead_id", "email", "first_name", "last_name", "company", "campaign", "mql_at",
                          "updated_at"]
    assert cols["email"].type == "string" and "PII" in cols["email"].description and "pattern email" in cols["email"].description
    assert cols["lead_id"].constraints.nullable is False and cols["company"].constraints.nullable is True
    assert {k: v for k, v in spec.tags.items() if k.startswith("meshline/")} == {"meshline/flow": "lead_handoff", "meshline/severity": "standard"}
    assert spec.owners and spec.group_name == "lead_handoff"
