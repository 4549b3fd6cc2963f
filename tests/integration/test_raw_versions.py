"""DuckDB's raw tables: raw.<name> is a view over raw.<name>__versions (assets/loading/ddl.py). A small
load appends the versions it wins; the view hides the ones they supersede until a load purges them, once
the rows appended since the last purge would pass `recent_fraction()` of the table. A load that alone passes
it replaces versions in place. Whatever the path, readers see what one load of the whole source gives."""

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


def _stored(wh_url: str) -> tuple[int, int, int | None]:
    """Rows in the versions table, the newest load's sequence number, how far it is purged."""
    with Warehouse(wh_url).session() as s:
        return s.query(f"SELECT count(*), max(_ml_seq), (SELECT max(purged_seq) FROM meshline.raw_purges"
                       f" WHERE raw_table = '{VIEW}') FROM {VIEW}__versions")[0]


def _as_one_load(src: str, tmp_path: Path, name: str) -> list[tuple]:
    """raw.marketing_leads as one load of the whole source into an empty warehouse gives it."""
    url = f"duckdb:///{tmp_path / f'{name}.duckdb'}"
    _load(url, src, f"once-{name}")
    return snapshot(url, normalize=True)[VIEW]


def test_small_loads_append_versions_the_view_hides_until_a_load_purges_them(tmp_path):
    src_path = tmp_path / "src.duckdb"
    src = _duckdb_source(src_path, 200)
    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    said: list[str] = []

    assert _load(wh, src, "r1", progress=said.append).rows_loaded == 200
    assert _stored(wh) == (200, 0, 0)  # the first load: in place, purged through itself

    _versions(src_path, range(0, 10), 1_000, "2026-03-11 01:00")  # 10 of 200 changed: appended
    assert _load(wh, src, "r2", progress=said.append).rows_loaded == 10
    assert _stored(wh) == (210, 1, 0)
    assert snapshot(wh, normalize=True)[VIEW] == _as_one_load(src, tmp_path, "after2")

    # 5 keys changed again (a third version each) and 5 for the first time: 10 + 10 recent rows, a
    # tenth of the table's 210 is 21: still appended
    _versions(src_path, range(5, 15), 2_000, "2026-03-11 02:00")
    assert _load(wh, src, "r3", progress=said.append).rows_loaded == 10
    assert _stored(wh) == (220, 2, 0)
    rows = snapshot(wh, normalize=True)[VIEW]
    assert rows == _as_one_load(src, tmp_path, "after3") and len(rows) == 200
    with Warehouse(wh).session() as s:
        newest = dict(s.query(f"SELECT lead_id, CAST(updated_at AS TEXT) FROM {VIEW} WHERE lead_id < 16"))
    assert newest[0] == newest[4] == "2026-03-11 01:00:00" and newest[5] == newest[14] == "2026-03-11 02:00:00"
    assert newest[15] != "2026-03-11 02:00:00"
    assert not [m for m in said if "purged" in m]

    # 3 more: 20 + 3 recent rows would pass 22 (a tenth of 220): the 20 versions superseded since the
    # last purge go first, then the 3 are appended
    _versions(src_path, range(100, 103), 3_000, "2026-03-11 03:00")
    assert _load(wh, src, "r4", progress=said.append).rows_loaded == 3
    assert _stored(wh) == (203, 3, 2)
    assert [m for m in said if "purged 20 superseded versions" in m]
    assert snapshot(wh, normalize=True)[VIEW] == _as_one_load(src, tmp_path, "after4")

    # a load that alone passes the share replaces versions in place; the 3 recent ones purged first
    _versions(src_path, range(150, 180), 4_000, "2026-03-11 04:00")
    assert _load(wh, src, "r5").rows_loaded == 30
    assert _stored(wh) == (200, 3, 3)
    assert snapshot(wh, normalize=True)[VIEW] == _as_one_load(src, tmp_path, "after5")

    assert _load(wh, src, "r6").rows_loaded == 0  # nothing new: nothing written
    assert _stored(wh) == (200, 3, 3)


def test_a_fraction_of_zero_replaces_versions_in_place_and_a_bad_one_is_refused(tmp_path, monkeypatch):
    src_path = tmp_path / "src.duckdb"
    src = _duckdb_source(src_path, 100)
    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    monkeypatch.setenv("MESHLINE_DUCKDB_RECENT_FRACTION", "0")
    _load(wh, src, "r1")
    _versions(src_path, range(0, 5), 1_000, "2026-03-11 01:00")
    assert _load(wh, src, "r2").rows_loaded == 5
    assert _stored(wh) == (100, 0, 0)
    assert snapshot(wh, normalize=True)[VIEW] == _as_one_load(src, tmp_path, "once")

    for bad in ("a tenth", "1.5", "-0.1"):
        monkeypatch.setenv("MESHLINE_DUCKDB_RECENT_FRACTION", bad)
        with pytest.raises(ValueError, match="MESHLINE_DUCKDB_RECENT_FRACTION must be a number from 0 to 1"):
            _load(wh, src, "r3")
    assert _stored(wh) == (100, 0, 0)


def test_a_raw_table_from_before_the_view_becomes_its_versions_table(tmp_path):
    """A warehouse written before the view holds raw.<name> as a table, one row per key: the next load's
    table check renames it, every row a first version, purged through 0, and puts the view in its place."""
    src_path = tmp_path / "src.duckdb"
    src = _duckdb_source(src_path, 50)
    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    _load(wh, src, "r1")
    with Warehouse(wh).session() as s:  # the layout as it was: one table, its DDL fingerprinted then
        s.execute(f"CREATE TABLE raw.old AS SELECT * FROM {VIEW}")
        s.execute(f"DROP VIEW {VIEW}")
        s.execute(f"DROP TABLE {VIEW}__versions")
        s.execute("DELETE FROM meshline.raw_purges")
        s.execute("ALTER TABLE raw.old RENAME TO marketing_leads")
        s.execute("UPDATE meshline.ddl_applied SET fingerprint = 'before-the-view' WHERE object = ?", (VIEW,))
    assert len(snapshot(wh, normalize=True)[VIEW]) == 50

    _versions(src_path, range(0, 3), 1_000, "2026-03-11 01:00")
    assert _load(wh, src, "r2").rows_loaded == 3
    with Warehouse(wh).session() as s:
        kinds = dict(s.query("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'raw'"))
    assert kinds == {"marketing_leads": "VIEW", "marketing_leads__versions": "BASE TABLE"}
    assert _stored(wh) == (53, 1, 0)
    assert snapshot(wh, normalize=True)[VIEW] == _as_one_load(src, tmp_path, "once")
