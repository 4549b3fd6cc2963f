"""DuckDB's raw tables: raw.<name> is a view over a base and a delta (assets/loading/ddl.py). A small load
appends its winners to the delta; a load that would take the delta past `delta_fraction()` of the base folds
the delta into the base first. Whatever the path, readers see what one load of the whole source gives."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from assets.loading import Warehouse
from tests.helpers import snapshot
from tests.integration.test_read_ahead import _duckdb_source, _load

VIEW = "raw.marketing_leads"


def _versions(path: Path, leads: range, row_offset: int, at: str) -> None:
    """New versions of `leads` at the source (new row ids, change token `at`)."""
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO marketing_leads SELECT ? + i, i, 'lead' || i || '@example.com', 'Ada', 'Lovelace',"
                    f" 'Acme', 'summer', TIMESTAMP '2026-03-10', TIMESTAMP '{at}'"
                    f" FROM range({leads.start}, {leads.stop}) t(i)", (row_offset,))


def _sizes(wh_url: str) -> tuple[int, int]:
    with Warehouse(wh_url).session() as s:
        return s.query(f"SELECT (SELECT count(*) FROM {VIEW}__base), (SELECT count(*) FROM {VIEW}__delta)")[0]


def _as_one_load(src: str, tmp_path: Path, name: str) -> list[tuple]:
    """raw.marketing_leads as one load of the whole source into an empty warehouse gives it."""
    url = f"duckdb:///{tmp_path / f'{name}.duckdb'}"
    _load(url, src, f"once-{name}")
    return snapshot(url, normalize=True)[VIEW]


def test_small_loads_go_to_the_delta_and_one_past_its_share_folds_it_into_the_base(tmp_path):
    src_path = tmp_path / "src.duckdb"
    src = _duckdb_source(src_path, 200)
    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    said: list[str] = []

    assert _load(wh, src, "r1", progress=said.append).rows_loaded == 200
    assert _sizes(wh) == (200, 0)  # an empty base: the first load goes there

    _versions(src_path, range(0, 10), 1_000, "2026-03-11 01:00")  # 10 of 200 changed: the delta
    assert _load(wh, src, "r2", progress=said.append).rows_loaded == 10
    assert _sizes(wh) == (200, 10)
    assert snapshot(wh, normalize=True)[VIEW] == _as_one_load(src, tmp_path, "after2")

    # 5 keys changed again (their delta versions replaced) and 5 changed for the first time
    _versions(src_path, range(5, 15), 2_000, "2026-03-11 02:00")
    assert _load(wh, src, "r3", progress=said.append).rows_loaded == 10
    assert _sizes(wh) == (200, 15)
    rows = snapshot(wh, normalize=True)[VIEW]
    assert rows == _as_one_load(src, tmp_path, "after3") and len(rows) == 200
    with Warehouse(wh).session() as s:
        newest = dict(s.query(f"SELECT lead_id, CAST(updated_at AS TEXT) FROM {VIEW} WHERE lead_id < 16"))
    assert newest[0] == newest[4] == "2026-03-11 01:00:00" and newest[5] == newest[14] == "2026-03-11 02:00:00"
    assert newest[15] != "2026-03-11 02:00:00"
    assert not [m for m in said if "compaction" in m]

    # 20 more changed: 15 + 20 would pass a tenth of the base, so the delta is folded in first
    _versions(src_path, range(100, 120), 3_000, "2026-03-11 03:00")
    assert _load(wh, src, "r4", progress=said.append).rows_loaded == 20
    assert _sizes(wh) == (200, 0)
    assert [m for m in said if "folding 15 recent versions" in m and "compaction" in m]
    assert snapshot(wh, normalize=True)[VIEW] == _as_one_load(src, tmp_path, "after4")

    # a re-run with nothing new changes nothing, in either table
    assert _load(wh, src, "r5").rows_loaded == 0
    assert _sizes(wh) == (200, 0)


def test_a_raw_table_from_before_the_split_becomes_the_base_behind_the_view(tmp_path):
    """A warehouse written before the split holds raw.<name> as a table: the next load's table check
    renames it to the base and puts the view and an empty delta beside it, the rows as they were."""
    src_path = tmp_path / "src.duckdb"
    src = _duckdb_source(src_path, 50)
    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    _load(wh, src, "r1")
    with Warehouse(wh).session() as s:  # the layout as it was: one table, its DDL fingerprinted then
        s.execute(f"CREATE TABLE raw.old AS SELECT * FROM {VIEW}")
        s.execute(f"DROP VIEW {VIEW}")
        s.execute(f"DROP TABLE {VIEW}__base")
        s.execute(f"DROP TABLE {VIEW}__delta")
        s.execute("ALTER TABLE raw.old RENAME TO marketing_leads")
        s.execute("UPDATE meshline.ddl_applied SET fingerprint = 'before-the-split' WHERE object = ?", (VIEW,))
    before = snapshot(wh, normalize=True)[VIEW]
    assert len(before) == 50

    _versions(src_path, range(0, 3), 1_000, "2026-03-11 01:00")
    assert _load(wh, src, "r2").rows_loaded == 3
    with Warehouse(wh).session() as s:
        kinds = dict(s.query("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'raw'"))
    assert kinds == {"marketing_leads": "VIEW", "marketing_leads__base": "BASE TABLE",
                     "marketing_leads__delta": "BASE TABLE"}
    assert _sizes(wh) == (50, 3)
    assert snapshot(wh, normalize=True)[VIEW] == _as_one_load(src, tmp_path, "once")


def test_a_delta_fraction_of_zero_writes_every_load_into_the_base_and_a_bad_one_is_refused(tmp_path, monkeypatch):
    src_path = tmp_path / "src.duckdb"
    src = _duckdb_source(src_path, 100)
    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    monkeypatch.setenv("MESHLINE_DUCKDB_DELTA_FRACTION", "0")
    _load(wh, src, "r1")
    _versions(src_path, range(0, 5), 1_000, "2026-03-11 01:00")
    assert _load(wh, src, "r2").rows_loaded == 5
    assert _sizes(wh) == (100, 0)
    assert snapshot(wh, normalize=True)[VIEW] == _as_one_load(src, tmp_path, "once")

    for bad in ("a tenth", "1.5", "-0.1"):
        monkeypatch.setenv("MESHLINE_DUCKDB_DELTA_FRACTION", bad)
        with pytest.raises(ValueError, match="MESHLINE_DUCKDB_DELTA_FRACTION must be a number from 0 to 1"):
            _load(wh, src, "r3")
    assert _sizes(wh) == (100, 0)
