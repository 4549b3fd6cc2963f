"""Schema drift at ingestion, on DuckDB and Postgres: an unknown source column holds the rows (staged
reject) until a contract version lists it; a retyped column dead-letters `type_mismatch`; a missing
required column refuses the load. Nothing is lost in any case."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import dagster as dg
import duckdb

from assets.flows.boundary import boundary_asset, contract_check
from assets.loading import Warehouse
from assets.loading.watermark import daily_window
from assets.resources import DataDocsResource, SourcesResource, WarehouseResource
from expectations import load_contract
from expectations.contract import Column
from tests.helpers import day_keys, snapshot

PARTS = dg.DailyPartitionsDefinition(start_date="2026-01-01")


def _run(url, sandbox, contract, key):
    """The marketing boundary asset and its contract check, for one day, under `contract`."""
    res = dg.materialize(
        [boundary_asset(contract, PARTS, pool=None, lookback=timedelta(hours=6)), contract_check(contract, PARTS, pool=None)],
        partition_key=key, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        resources={"warehouse": WarehouseResource(url=url),
                   "sources": SourcesResource(boundaries={"marketing_leads": {
                       "kind": "sql", "url": sandbox.marketing_url, "table": "marketing_leads"}}),
                   "data_docs": DataDocsResource(root=str(sandbox.paths.root.parent / "docs"))})
    mats = res.get_asset_materialization_events()
    md = {k: v.value for k, v in mats[0].materialization.metadata.items()} if mats else None
    check = res.get_asset_check_evaluations()
    return res, md, (check[0] if check else None)


def _source(sandbox, sql, params=()):
    with duckdb.connect(str(sandbox.paths.marketing)) as con:
        return con.execute(sql, list(params)).fetchall()


def _window_rows(sandbox, key):
    w = daily_window(key)
    return _source(sandbox, "SELECT row_id, lead_id FROM marketing_leads WHERE updated_at >= ? AND updated_at < ?",
                   (w.start, w.end))


def test_unknown_column_holds_rows_until_a_contract_version_lists_it(warehouse_url, sandbox):
    v1 = load_contract("marketing_leads")
    keys = day_keys(sandbox.ground_truth())
    _run(warehouse_url, sandbox, v1, keys[0])
    _source(sandbox, "ALTER TABLE marketing_leads ADD COLUMN region TEXT")
    _source(sandbox, "UPDATE marketing_leads SET region = 'emea'")
    before = snapshot(warehouse_url)
    in_window = _window_rows(sandbox, keys[1])

    for _ in range(2):  # held, and holding again changes nothing
        res, md, check = _run(warehouse_url, sandbox, v1, keys[1])
        assert md["rows_read"] == md["rows_held"] == len(in_window) > 0
        assert md["rows_loaded"] == md["rows_dead_lettered"] == 0
        assert md["unknown_source_columns"] == ["region"]
        assert not check.passed and "region" in check.description
        assert check.metadata["held_columns"].value == ["region"]
        assert check.metadata["held_rows"].value == len(in_window)
    after = snapshot(warehouse_url)
    assert after["raw.marketing_leads"] == before["raw.marketing_leads"]  # nothing loaded
    assert after["meshline.watermarks"] == before["meshline.watermarks"]  # watermark unmoved
    wh = Warehouse(warehouse_url)
    with wh.session() as s:
        held = s.query("SELECT locator, status FROM meshline.held_rows WHERE partition_key = ?", (keys[1],))
    assert len(held) == len(in_window) and {st for _, st in held} == {"held"}
    assert all("@" not in loc for loc, _ in held)  # a locator, never the row's values

    # Consumer opt-in: a contract version that lists the column releases the rows.
    v11 = dataclasses.replace(v1, version="1.1.0", columns=(*v1.columns, Column("region", "string")))
    res, md, check = _run(warehouse_url, sandbox, v11, keys[1])
    assert md["rows_held"] == 0 and md["rows_read"] == len(in_window)
    assert md["rows_read"] == md["rows_loaded"] + md["rows_superseded"] + md["rows_dead_lettered"]
    with wh.session() as s:
        assert {r[0] for r in s.query("SELECT status FROM meshline.held_rows")} == {"released"}
        loaded = {r[0] for r in s.query(
            "SELECT lead_id FROM raw.marketing_leads WHERE updated_at >= ? AND updated_at < ?",
            (daily_window(keys[1]).start, daily_window(keys[1]).end))}
        regions = {r[0] for r in s.query("SELECT DISTINCT region FROM raw.marketing_leads WHERE region IS NOT NULL")}
        dead = {int(r[0]) for r in s.query(
            "SELECT json_extract_string(locator, '$.row_id') FROM meshline.dead_letters WHERE partition_key = ?"
            if wh.dialect == "duckdb" else
            "SELECT (locator::json ->> 'row_id') FROM meshline.dead_letters WHERE partition_key = ?", (keys[1],))}
    # nothing lost: every row of the window whose key is not loaded was dead-lettered
    not_loaded = {row for row, lead in in_window if lead not in loaded}
    assert not_loaded <= dead and len(in_window) - len(not_loaded) == len(loaded & {lead for _, lead in in_window})
    assert regions == {"emea"}
    assert check.metadata["held_rows"].value == 0


def test_retyped_column_dead_letters_type_mismatch(warehouse_url, sandbox):
    contract = load_contract("marketing_leads")
    key = day_keys(sandbox.ground_truth())[2]
    w = daily_window(key)
    _source(sandbox, "ALTER TABLE marketing_leads ALTER mql_at TYPE VARCHAR")
    victims = [r[0] for r in _window_rows(sandbox, key)][:3]
    _source(sandbox, f"UPDATE marketing_leads SET mql_at = 'last tuesday' WHERE row_id IN ({', '.join('?' * 3)})",
            victims)
    res, md, check = _run(warehouse_url, sandbox, contract, key)
    with Warehouse(warehouse_url).session() as s:
        rows = s.query("SELECT reasons, record_key FROM meshline.dead_letters WHERE reason_code = 'type_mismatch'")
        loaded = s.scalar("SELECT count(*) FROM raw.marketing_leads WHERE updated_at >= ? AND updated_at < ?",
                          (w.start, w.end))
    assert sorted(r[0] for r in rows) == ["type_mismatch:mql_at"] * 3
    assert md["rows_read"] == md["rows_loaded"] + md["rows_superseded"] + md["rows_dead_lettered"]
    assert loaded == md["rows_loaded"] > 0
    assert check.metadata["dead_letters_by_reason"].value["type_mismatch"] == 3


def test_missing_required_column_refuses_and_missing_optional_reads_null(warehouse_url, sandbox):
    contract = load_contract("marketing_leads")
    keys = day_keys(sandbox.ground_truth())
    _source(sandbox, "ALTER TABLE marketing_leads DROP COLUMN campaign")  # optional
    res, md, _ = _run(warehouse_url, sandbox, contract, keys[0])
    assert md["missing_optional_columns"] == ["campaign"] and md["rows_loaded"] > 0
    with Warehouse(warehouse_url).session() as s:
        assert s.scalar("SELECT count(*) FROM raw.marketing_leads WHERE campaign IS NOT NULL") == 0
    before = snapshot(warehouse_url)
    _source(sandbox, "ALTER TABLE marketing_leads DROP COLUMN email")  # required
    res, md, _ = _run(warehouse_url, sandbox, contract, keys[1])
    assert md is None and not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert "lacks column(s) ['email']" in str(failure.event_specific_data.error)
    assert snapshot(warehouse_url) == before  # nothing written, watermark unmoved
