"""What a Postgres load leaves for the next one: statistics on a raw table it grew by a fifth or more, and
its merge planned at the load's own random_page_cost (index probes, not a scan of the raw table)."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pytest

from assets.loading import Warehouse, load_partition
from assets.loading import loader as loader_mod
from assets.loading.warehouse import Tx
from assets.loading.watermark import Window
from assets.sources import SqlSource
from expectations import load_contract

EVERYTHING = Window(datetime(1970, 1, 1), datetime(2100, 1, 1))


def _source(path, rows: int, first_id: int = 0, day: str = "2026-03-10") -> None:
    """`rows` marketing leads, valid under the contract, updated across one day."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE IF NOT EXISTS marketing_leads (row_id BIGINT, lead_id BIGINT, email TEXT,"
                    " first_name TEXT, last_name TEXT, company TEXT, campaign TEXT, mql_at TIMESTAMP,"
                    " updated_at TIMESTAMP)")
        con.execute(
            "INSERT INTO marketing_leads SELECT i, i, 'lead' || i || '@example.com', 'Ada', 'Lovelace',"
            " 'Acme ' || (i % 97), 'spring', ?::TIMESTAMP, ?::TIMESTAMP + to_milliseconds(i % 86400000)"
            f" FROM range({first_id}, {first_id + rows}) t(i)", [day, day])


def _load(url, src_path, run_id: str):
    return load_partition(Warehouse(url), SqlSource(f"duckdb:///{src_path}", "marketing_leads",
                                                    "marketing_automation"),
                          load_contract("marketing_leads"), partition_key="all", window=EVERYTHING,
                          run_id=run_id)


@pytest.mark.postgres
def test_postgres_raw_statistics_follow_a_load_that_grew_the_table_by_a_fifth(pg_url, tmp_path, monkeypatch):
    src = tmp_path / "src.duckdb"
    _source(src, 5_000)
    statements: list[str] = []
    orig = Tx.execute

    def spy(self, sql, params=()):
        statements.append(sql)
        return orig(self, sql, params)

    monkeypatch.setattr(Tx, "execute", spy)

    def reltuples() -> float:
        with Warehouse(pg_url).session() as s:
            return s.scalar("SELECT reltuples FROM pg_class WHERE oid = 'raw.marketing_leads'::regclass")

    _load(pg_url, src, "first")
    assert reltuples() == 5_000 and "ANALYZE raw.marketing_leads" in statements
    assert "SET LOCAL random_page_cost = 1.1" in statements
    with Warehouse(pg_url).session() as s:  # SET LOCAL: the server's setting outside the load
        assert s.scalar("SHOW random_page_cost") == "4"

    statements.clear()
    _source(src, 500, first_id=5_000, day="2026-03-11")  # 10% more: statistics left alone
    assert _load(pg_url, src, "second").rows_loaded == 500
    assert reltuples() == 5_000 and "ANALYZE raw.marketing_leads" not in statements

    _source(src, 1_500, first_id=5_500, day="2026-03-12")  # 27% more: analysed again
    assert _load(pg_url, src, "third").rows_loaded == 1_500
    assert reltuples() == 7_000


@pytest.mark.postgres
def test_a_page_cost_that_is_not_a_number_is_refused_before_anything_is_written(pg_url, tmp_path, monkeypatch):
    src = tmp_path / "src.duckdb"
    _source(src, 10)
    monkeypatch.setattr(loader_mod, "PG_RANDOM_PAGE_COST", "cheap")
    with pytest.raises(ValueError, match="MESHLINE_PG_RANDOM_PAGE_COST must be a number"):
        _load(pg_url, src, "bad")
    assert not Warehouse(pg_url).table_exists("raw", "marketing_leads")


def _blocks(url: str) -> dict[int, int]:
    """Each stored lead's heap page."""
    with Warehouse(url).session() as s:
        return dict(s.query("SELECT lead_id, CAST(split_part(trim(CAST(ctid AS TEXT), '()'), ',', 1) AS BIGINT)"
                            " FROM raw.marketing_leads"))


@pytest.mark.postgres
def test_postgres_replaces_a_changed_row_in_place_on_its_page(pg_url, tmp_path):
    """Raw tables leave a tenth of each page free, and a load replaces a stored version with an UPDATE: a
    changed row's new version stays on its page (a heap-only tuple: no new index entry) instead of a
    delete on its page plus an insert at the end of the table and into the key's index."""
    src = tmp_path / "src.duckdb"
    _source(src, 2_000)
    _load(pg_url, src, "first")
    with Warehouse(pg_url).session() as s:
        assert s.scalar("SELECT reloptions FROM pg_class WHERE oid = 'raw.marketing_leads'::regclass") == [
            "fillfactor=90"]
    before = _blocks(pg_url)
    with duckdb.connect(str(src)) as con:  # 1 lead in 20 changes
        con.execute("UPDATE marketing_leads SET campaign = 'autumn', updated_at = updated_at + INTERVAL 2 DAY"
                    " WHERE lead_id % 20 = 0")
    assert _load(pg_url, src, "second").rows_loaded == 100
    after = _blocks(pg_url)
    assert after.keys() == before.keys()
    assert [lead for lead in after if after[lead] != before[lead]] == []  # every new version on its old page
    with Warehouse(pg_url).session() as s:
        assert s.query("SELECT campaign, _run_id, count(*) FROM raw.marketing_leads GROUP BY 1, 2 ORDER BY 1") == [
            ("autumn", "second", 100), ("spring", "first", 1_900)]


@pytest.mark.postgres
def test_a_column_the_contract_no_longer_lists_is_emptied_when_its_row_is_replaced(pg_url, tmp_path):
    """As a delete + insert would leave it: the replaced row's value of a column an earlier contract
    version listed is gone; rows not replaced keep theirs."""
    src = tmp_path / "src.duckdb"
    _source(src, 50)
    _load(pg_url, src, "first")
    with Warehouse(pg_url).session() as s:  # what an earlier version's column leaves in the table
        s.execute("ALTER TABLE raw.marketing_leads ADD COLUMN region TEXT")
        s.execute("UPDATE raw.marketing_leads SET region = 'emea'")
    with duckdb.connect(str(src)) as con:
        con.execute("UPDATE marketing_leads SET updated_at = updated_at + INTERVAL 2 DAY WHERE lead_id < 5")
    assert _load(pg_url, src, "second").rows_loaded == 5
    with Warehouse(pg_url).session() as s:
        assert s.query("SELECT lead_id < 5, region, count(*) FROM raw.marketing_leads GROUP BY 1, 2 ORDER BY 1") == [
            (False, "emea", 45), (True, None, 5)]
