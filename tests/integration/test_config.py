"""meshline.yaml: boundaries point at sources by configuration alone; invalid files fail at load with
file, line, key and reason."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from assets.config import ConfigError, load_config
from assets.loading import Warehouse
from assets.settings import PROJECT_ROOT, Settings
from tests.conftest import TEST_REDACTION_KEY
from tests.helpers import day_keys

GOOD = """\
version: 1
flows:
  lead_handoff:
    boundaries:
      marketing_leads:
        lookback_hours: 3
        source: {kind: sql, url: "${TEST_MKT_URL}", table: marketing_leads}
      crm_leads:
        source:
          kind: sql
          url: ${TEST_CRM_URL}
          table: crm.leads_export
"""


def test_the_project_config_loads():
    config = load_config(PROJECT_ROOT / "meshline.yaml", env={})
    assert set(config.boundaries) == {"marketing_leads", "crm_leads", "crm_opportunities", "billing_invoices",
                                      "product_plan_events", "billing_subscriptions"}
    assert {b.flow for b in config.boundaries.values()} == {"lead_handoff", "quote_to_cash", "subscription_updates"}
    kinds = {n: b.source["kind"] for n, b in config.boundaries.items()}
    assert kinds == {"marketing_leads": "sql", "crm_leads": "sql", "crm_opportunities": "sql",
                     "billing_invoices": "http", "billing_subscriptions": "http", "product_plan_events": "files"}
    assert config.boundaries["crm_leads"].source["url"] == "sandbox"
    env = {"MESHLINE_SOURCE_CRM_URL": "postgresql+psycopg2://u@h/crm"}
    assert load_config(PROJECT_ROOT / "meshline.yaml", env=env).boundaries["crm_leads"].source["url"] == env[
        "MESHLINE_SOURCE_CRM_URL"]


@pytest.mark.parametrize("edit, message", [
    (("lookback_hours: 3", "lookback_hour: 3"), r":6: flows.lead_handoff.boundaries.marketing_leads.lookback_hour: unknown key"),
    (("lookback_hours: 3", "lookback_hours: three"), r":6: .*lookback_hours: expected int or float, got str"),
    (("kind: sql\n", "kind: ftp\n"), r":10: .*crm_leads.source.kind: expected one of sql, http, files"),
    (("      crm_leads:\n", "      crm_leadz:\n"), r":8: .*crm_leadz.contract: .*no contract named 'crm_leadz'"),
    (("version: 1", "version: 2"), r":1: version: expected version: 1"),
    (("table: crm.leads_export", "tabel: crm.leads_export"), r":12: .*source.tabel: unknown key"),
    (("table: crm.leads_export", "table: crm.leads_export\n          query: SELECT 1"),
     r":9: .*crm_leads.source: a sql source needs either a table or a query"),
    # values that would fail later, or never: refused at load
    (("lookback_hours: 3", "lookback_hours: 1.0e+300"), r":6: .*lookback_hours: expected 0 to 744, got 1e\+300"),
    (("lookback_hours: 3", "lookback_hours: .nan"), r":6: .*lookback_hours: expected 0 to 744, got nan"),
    (("lookback_hours: 3", "volume_tolerance: -0.5"), r":6: .*volume_tolerance: expected 0.01 to 100, got -0.5"),
    (("table: crm.leads_export", 'table: "crm.leads; DROP TABLE x"'), r":12: .*source.table: expected a table name"),
    (("flows:\n", "flows: {}\nflows:\n"), r":3: flows: duplicated key \(first at line 2\)"),
    (("version: 1\n", "version: 1\nx: &a [1, 2]\n"), r"not valid YAML: line 2: anchors and aliases"),
    (("lookback_hours: 3", "deadline_minutes: 0"), r":6: .*deadline_minutes: expected 1 to 1440, got 0"),
    (("version: 1\n", "version: 1\nexecutor: {kind: dask}\n"), r":2: executor.kind: expected one of in_process, multiprocess, celery"),
    (("version: 1\n", "version: 1\npartitions: {backfill_partitions_per_run: -1}\n"),
     r":2: partitions.backfill_partitions_per_run: expected 0 \(one run\) to 366, got -1"),
])
def test_invalid_config_fails_with_file_line_key_and_reason(tmp_path, edit, message):
    path = tmp_path / "meshline.yaml"
    assert edit[0] in GOOD
    path.write_text(GOOD.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(path, env={"TEST_MKT_URL": "duckdb:///x", "TEST_CRM_URL": "duckdb:///y"})
    assert str(exc.value).startswith(str(path))


@pytest.mark.parametrize("source, message", [
    ('{kind: http, base_url: "http://127.0.0.1:9", path: /v1/x, pagination: cursr}', r"pagination: expected cursor or page"),
    ('{kind: http, base_url: "http://127.0.0.1:9", path: /v1/x, page_size: 0}', r"page_size: expected 1 to 10000, got 0"),
    ('{kind: http, base_url: "http://127.0.0.1:9", path: /v1/x, max_retries: -1}', r"max_retries: expected 0 to 20"),
    ('{kind: http, base_url: "http://127.0.0.1:9", path: /v1/x, timeout_s: 0}', r"timeout_s: expected 0.1 to 600"),
    ('{kind: files, folder: /tmp/landing, pattern: "../secret/*.jsonl"}', r"pattern: a file name pattern inside"),
    ('{kind: files, folder: /tmp/landing, pattern: "sub/*.jsonl"}', r"pattern: a file name pattern inside"),
    ('{kind: sql, url: "duckdb:///x", query: "SELECT 1; COMMIT; DROP TABLE victim"}', r"query: a source query is one"),
    ('{kind: http, base_url: "http://127.0.0.1:9", path: /v1/x, max_pages: 0}', r"max_pages: expected 1 to"),
    ('{kind: http, base_url: "http://127.0.0.1:9", path: /v1/x, max_response_mb: 0}', r"max_response_mb: expected"),
    ('{kind: http, base_url: "http://127.0.0.1:9", path: /v1/x, request_deadline_s: .inf}', r"request_deadline_s: exp"),
    ('{kind: http, base_url: "http://127.0.0.1:9", path: /v1/x, max_retry_after_s: -1}', r"max_retry_after_s: exp"),
])
def test_source_values_that_would_fail_later_are_refused_at_load(tmp_path, source, message):
    path = tmp_path / "meshline.yaml"
    path.write_text(GOOD.replace('source: {kind: sql, url: "${TEST_MKT_URL}", table: marketing_leads}',
                                 f"source: {source}"))
    with pytest.raises(ConfigError, match=r":7: flows.lead_handoff.boundaries.marketing_leads.source." + message):
        load_config(path, env={"TEST_CRM_URL": "duckdb:///y"})


def test_a_missing_environment_variable_is_named(tmp_path):
    path = tmp_path / "meshline.yaml"
    path.write_text(GOOD)
    with pytest.raises(ConfigError, match=r"crm_leads.source.url: environment variable TEST_CRM_URL is not set"):
        load_config(path, env={"TEST_MKT_URL": "duckdb:///x"})


def test_a_boundary_pointed_by_config_at_a_database_the_test_creates_loads_it(home, sandbox, pg_url, tmp_path,
                                                                             monkeypatch):
    """CRM in a Postgres database of the test's own (schema crm, table leads_export), marketing in a
    DuckDB file: meshline.yaml points the boundaries there through environment variables."""
    with duckdb.connect(str(sandbox.paths.crm), read_only=True) as con:
        crm = con.sql("SELECT * FROM crm_leads").to_arrow_table()
    with Warehouse(pg_url).transaction() as tx:
        tx.execute("CREATE SCHEMA crm")
        tx.execute("CREATE TABLE crm.leads_export (row_id BIGINT, crm_lead_id BIGINT, marketing_lead_id BIGINT,"
                   " owner TEXT, status TEXT, created_at TIMESTAMP, updated_at TIMESTAMP)")
        tx.insert_arrow("crm.leads_export", crm)
    config = tmp_path / "meshline.yaml"
    config.write_text(GOOD)
    monkeypatch.setenv("TEST_MKT_URL", sandbox.marketing_url)
    monkeypatch.setenv("TEST_CRM_URL", pg_url)

    from orchestration.definitions import build_defs

    wh_url = f"duckdb:///{home / 'warehouse.duckdb'}"
    defs = build_defs(Settings(home=home, warehouse_url=wh_url, config_path=config, redaction_key=TEST_REDACTION_KEY))
    key = day_keys(sandbox.ground_truth())[1]
    res = defs.resolve_job_def("lead_handoff_job").execute_in_process(
        partition_key=key, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    md = {ev.asset_key.path[-1]: {k: v.value for k, v in ev.materialization.metadata.items()}
          for ev in res.get_asset_materialization_events()}
    expected = sum(1 for ts in crm.column("updated_at").to_pylist() if str(ts)[:10] == key)
    assert md["crm_leads"]["rows_read"] == expected > 0
    assert md["marketing_leads"]["rows_read"] > 0 and md["marketing_leads"]["rows_loaded"] > 0

    with Warehouse(wh_url).session() as s:
        assert s.scalar("SELECT count(*) FROM raw.crm_leads") == md["crm_leads"]["rows_loaded"] > 0
    marketing = defs.resolve_assets_def(dg.AssetKey(["raw", "marketing_leads"]))
    assert marketing.metadata_by_key[marketing.key]["lookback_hours"] == 3

    # The same boundary read through a query instead of a table: only what the query selects loads.
    config.write_text(GOOD.replace("table: crm.leads_export",
                                   "query: SELECT * FROM crm.leads_export WHERE status <> 'working'"))
    wh_url2 = f"duckdb:///{home / 'warehouse2.duckdb'}"
    defs = build_defs(Settings(home=home, warehouse_url=wh_url2, config_path=config, redaction_key=TEST_REDACTION_KEY))
    res = defs.resolve_job_def("lead_handoff_job").execute_in_process(
        partition_key=key, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    md2 = {ev.asset_key.path[-1]: {k: v.value for k, v in ev.materialization.metadata.items()}
          for ev in res.get_asset_materialization_events()}
    working = sum(1 for ts, st in zip(crm.column("updated_at").to_pylist(), crm.column("status").to_pylist(),
                                      strict=True) if str(ts)[:10] == key and st == "working")
    assert working > 0 and md2["crm_leads"]["rows_read"] == expected - working
