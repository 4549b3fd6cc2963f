"""The loader's tables on DuckDB and Postgres: DDL runs once per change of it (a fingerprint per object),
comes back when a table is gone or a contract version adds a column; rows are updated in place or
inserted; a Postgres source's preflight connection serves its extract."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from assets.loading import Warehouse
from assets.loading.ddl import ensure_meta, ensure_tables, upsert_row
from assets.loading.warehouse import Tx
from expectations.contract import Column
from expectations.registry import Registry


@pytest.fixture
def statements(monkeypatch):
    """Every statement the warehouse is given, in order."""
    seen: list[str] = []
    for name in ("execute", "execute_count", "query"):
        orig = getattr(Tx, name)

        def spy(self, sql, params=(), _orig=orig):
            seen.append(" ".join(sql.split()))
            return _orig(self, sql, params)

        monkeypatch.setattr(Tx, name, spy)
    return seen


def _columns(wh: Warehouse, schema: str, table: str) -> list[str]:
    with wh.session() as s:
        return [r[0] for r in s.query("SELECT column_name FROM information_schema.columns"
                                      " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                                      (schema, table))]


def test_ddl_runs_once_then_again_when_a_table_is_gone_or_a_column_is_added(warehouse_url, statements):
    wh = Warehouse(warehouse_url)
    contract = Registry().get("crm_opportunities")
    with wh.transaction() as tx:
        ensure_tables(tx, contract)
    assert wh.table_exists("raw", "crm_opportunities") and wh.table_exists("meshline", "dead_letters")

    statements.clear()
    with wh.transaction() as tx:
        ensure_tables(tx, contract)
        ensure_meta(tx)
    assert not [s for s in statements if s.startswith(("CREATE", "ALTER"))], statements
    assert len(statements) == 4  # per call: which tables exist, and the fingerprints

    with wh.session() as s:  # someone drops the raw table: the next load creates it again
        s.execute("DROP TABLE raw.crm_opportunities")
    statements.clear()
    with wh.transaction() as tx:
        ensure_tables(tx, contract)
    assert "stage" in _columns(wh, "raw", "crm_opportunities")

    # a newer contract version lists one more column: it is added, nullable; the meta DDL is not rerun
    wider = dataclasses.replace(contract, version="9.0.0",
                                columns=(*contract.columns, Column(name="region", type="string")))
    statements.clear()
    with wh.transaction() as tx:
        ensure_tables(tx, wider)
    assert not [s for s in statements if s.startswith("CREATE TABLE IF NOT EXISTS meshline.")]
    assert _columns(wh, "raw", "crm_opportunities")[-1] == "region"


def test_upsert_row_updates_in_place_or_inserts(warehouse_url):
    wh = Warehouse(warehouse_url)
    table = "meshline.watermarks"
    key = ("asset", "partition_key")
    t1, t2 = datetime(2026, 3, 10, 12), datetime(2026, 3, 11, 12)
    with wh.transaction() as tx:
        ensure_meta(tx)
        upsert_row(tx, table, {"asset": "a", "partition_key": "p", "watermark": t1, "run_id": "r1",
                               "updated_at": t1}, key)
        upsert_row(tx, table, {"asset": "a", "partition_key": "q", "watermark": t1, "run_id": "r1",
                               "updated_at": t1}, key)
    with wh.transaction() as tx:
        upsert_row(tx, table, {"asset": "a", "partition_key": "p", "watermark": t2, "run_id": "r2",
                               "updated_at": t2}, key)
    with wh.session() as s:
        rows = s.query("SELECT partition_key, watermark, run_id FROM meshline.watermarks ORDER BY partition_key")
    assert rows == [("p", t2, "r2"), ("q", t1, "r1")]


@pytest.mark.postgres
def test_a_postgres_source_extracts_over_its_preflight_connection(pg_url, monkeypatch):
    import psycopg2

    from assets.sources import SqlSource

    with Warehouse(pg_url).transaction() as tx:
        tx.execute("CREATE TABLE t (id BIGINT, updated_at TIMESTAMP)")
        tx.execute("INSERT INTO t VALUES (1, '2026-03-10 01:00'), (2, '2026-03-10 02:00')")
    connects = []
    real = psycopg2.connect
    monkeypatch.setattr(psycopg2, "connect", lambda *a, **k: connects.append(1) or real(*a, **k))
    src = SqlSource(pg_url, "t", "crm")
    assert src.columns() == ["id", "updated_at"]
    rows = [r for chunk in src.extract(["id", "updated_at"], "updated_at", datetime(2026, 3, 10), True,
                                       datetime(2026, 3, 11), 1000) for r in chunk.column("id").to_pylist()]
    assert sorted(rows) == ["1", "2"] and len(connects) == 1
    # a second extract (no preflight before it) connects anew; the spare was used once
    assert sum(c.num_rows for c in src.extract(["id"], "updated_at", datetime(2026, 3, 10), True,
                                               datetime(2026, 3, 11), 1000)) == 2
    assert len(connects) == 2


def test_dead_letters_are_written_once_per_id_with_or_without_a_key_index(warehouse_url):
    """DuckDB keeps dead letters without a PRIMARY KEY (its index is read and rewritten whole by every
    load); ids stay unique because the loader skips those already there, and repeats within a batch."""
    import pyarrow as pa

    from assets.loading.loader import _insert_new

    wh = Warehouse(warehouse_url)
    with wh.transaction() as tx:
        ensure_meta(tx)
        keyed = tx.scalar("SELECT count(*) FROM information_schema.table_constraints WHERE table_schema = ?"
                          " AND table_name = ? AND constraint_type = 'PRIMARY KEY'", ("meshline", "dead_letters"))
    assert keyed == (0 if wh.dialect == "duckdb" else 1)

    def batch(*ids: str) -> pa.Table:
        n = len(ids)
        at = pa.array([datetime(2026, 11, 28)] * n, pa.timestamp("us"))
        cols = {"dead_letter_id": pa.array(ids)}
        for c in ("flow", "asset", "partition_key", "contract", "contract_version", "reason_code", "reasons",
                  "source_system", "source_table", "locator", "payload", "run_id", "status"):
            cols[c] = pa.array([f"{c}-x"] * n)
        cols["first_seen_at"] = at
        return pa.table(cols)

    with wh.transaction() as tx:
        _insert_new(tx, "meshline.dead_letters", "dead_letter_id", batch("a", "b", "a"))
    with wh.transaction() as tx:  # a re-run finds them again, with one new
        _insert_new(tx, "meshline.dead_letters", "dead_letter_id", batch("b", "c", "a"))
    with wh.session() as s:
        ids = sorted(r[0] for r in s.query("SELECT dead_letter_id FROM meshline.dead_letters"))
    assert ids == ["a", "b", "c"]
