"""The preflight before each load, for every kind of source, on DuckDB and Postgres: an unreachable
source (no database, a refused port, an API that never answers, a landing folder that is not there)
fails with a clear message naming the boundary and writes nothing; a reachable source without the table
is told apart from an unreachable one; a Dagster run retries an unreachable source."""

from __future__ import annotations

import socket
from datetime import timedelta

import dagster as dg
import pytest

from assets.flows.boundary import boundary_asset
from assets.loading import Warehouse, load_partition
from assets.loading.watermark import daily_window
from assets.resources import SourcesResource, WarehouseResource
from assets.sources import FileDropSource, HttpSource, SqlSource
from expectations import load_contract
from expectations.reasons import SourceError, SourceUnreachable

DAY = "2026-03-10"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: connecting to it is refused


def _nothing_written(url: str) -> None:
    with Warehouse(url).session() as s:
        schemas = {r[0] for r in s.query("SELECT schema_name FROM information_schema.schemata")}
    assert not {"raw", "meshline"} & schemas, f"the failed preflight wrote schemas {schemas & {'raw', 'meshline'}}"


def _load(url: str, source, contract_name: str):
    return load_partition(Warehouse(url), source, load_contract(contract_name), partition_key=DAY,
                          window=daily_window(DAY), run_id="preflight")


UNREACHABLE = {
    "duckdb file missing": lambda tmp: (SqlSource(f"duckdb:///{tmp / 'nope.duckdb'}", "crm_leads", "crm"),
                                        "crm_leads", "no database file"),
    "postgres port refused": lambda tmp: (
        SqlSource(f"postgresql+psycopg2://postgres@127.0.0.1:{_closed_port()}/crm", "crm_leads", "crm"),
        "crm_leads", "OperationalError"),
    "api refused": lambda tmp: (
        HttpSource(f"http://127.0.0.1:{_closed_port()}", "/v1/billing_invoices", system="billing",
                   table="billing_invoices", max_retries=2, backoff_base_s=0.01, backoff_cap_s=0.02),
        "billing_invoices", "gave up .* after 3 attempts"),
    "landing folder missing": lambda tmp: (
        FileDropSource(tmp / "not-mounted", system="product", table="product_plan_events"),
        "product_plan_events", "landing folder .* does not exist"),
}


@pytest.mark.parametrize("case", sorted(UNREACHABLE))
def test_unreachable_source_fails_preflight_and_writes_nothing(warehouse_url, tmp_path, case):
    source, contract, why = UNREACHABLE[case](tmp_path)
    with pytest.raises(SourceUnreachable, match=why) as err:
        _load(warehouse_url, source, contract)
    msg = str(err.value)
    assert msg.startswith(f"preflight of {contract} failed") and "nothing was loaded" in msg
    assert "password" not in msg.lower()
    _nothing_written(warehouse_url)


def test_reachable_source_without_the_table_is_not_called_unreachable(warehouse_url, tmp_path):
    import duckdb

    db = tmp_path / "crm.duckdb"
    duckdb.connect(str(db)).close()
    with pytest.raises(SourceError, match="reachable but table 'crm_leads' cannot be read") as err:
        _load(warehouse_url, SqlSource(f"duckdb:///{db}", "crm_leads", "crm"), "crm_leads")
    assert not isinstance(err.value, SourceUnreachable)
    _nothing_written(warehouse_url)


def test_a_dagster_run_retries_an_unreachable_source_and_says_why(tmp_path):
    contract = load_contract("crm_leads")
    asset = boundary_asset(contract, dg.DailyPartitionsDefinition(start_date="2026-01-01"), pool=None,
                           lookback=timedelta(hours=6))
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    res = dg.materialize([asset], partition_key=DAY, raise_on_error=False, resources={
        "warehouse": WarehouseResource(url=url),
        "sources": SourcesResource(boundaries={"crm_leads": {"kind": "sql", "url": f"duckdb:///{tmp_path / 'x.duckdb'}",
                                                             "table": "crm_leads"}})})
    assert not res.success
    kinds = [e.event_type_value for e in res.all_events]
    assert kinds.count("STEP_UP_FOR_RETRY") == 3  # the asset's retry policy: transient, so retried
    failure = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"][-1]
    assert "preflight of crm_leads failed: cannot connect" in str(failure.event_specific_data.error)
    _nothing_written(url)
