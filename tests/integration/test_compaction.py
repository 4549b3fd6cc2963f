"""DuckDB's write-ahead log and checkpoints, the vacuum a checkpoint runs, and the compaction.

A load's commit goes to DuckDB's write-ahead log, and no Meshline connection checkpoints when it closes;
the commit that finds the log past MESHLINE_DUCKDB_CHECKPOINT_THRESHOLD checkpoints it into the file.
A load replaces a changed row's version by a delete and an append, so loads leave delete marks and small
appended row groups behind. By default each checkpoint runs DuckDB's vacuum, which merges them; with
MESHLINE_DUCKDB_VACUUM_AT above 0 loads skip it until that share of the table is replaced versions, and
compaction (`meshline compact`, and before each dbt build) checkpoints the log and does that work once
(assets/loading/compaction.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.compaction import compact, layout
from assets.loading.watermark import Window
from assets.sources import SqlSource
from expectations import load_contract
from tests.helpers import snapshot

EVERYTHING = Window(datetime(1970, 1, 1), datetime(2100, 1, 1))
ROWS = 150_000  # more than one DuckDB row group (122,880 rows)
RAW = "raw.marketing_leads"


def _source(path) -> str:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE marketing_leads AS SELECT i AS row_id, i AS lead_id,"
                    " 'lead' || i || '@example.com' AS email, 'Ada' AS first_name, 'Lovelace' AS last_name,"
                    " 'Acme ' || (i % 97) AS company, 'spring' AS campaign, TIMESTAMP '2026-03-10' AS mql_at,"
                    " TIMESTAMP '2026-03-10' + (i % 86400) * INTERVAL '1 second' AS updated_at"
                    f" FROM range({ROWS}) t(i)")
    return f"duckdb:///{path}"


def _change(source_path, nth: int, round_no: int) -> None:
    """A new version of every `nth` lead (offset by the round), newer than anything loaded."""
    with duckdb.connect(str(source_path)) as con:
        con.execute("INSERT INTO marketing_leads SELECT row_id + 10000000 * ?, lead_id, email, first_name, last_name,"
                    " company, 'summer', mql_at, TIMESTAMP '2026-03-12' + ? * INTERVAL '1 minute'"
                    " FROM marketing_leads WHERE lead_id % ? = ? AND campaign = 'spring'",
                    (round_no, round_no, nth, round_no))


def _load(wh_url: str, src_url: str, run_id: str, vacuum_tasks_seen: list | None = None,
          thresholds_seen: list | None = None):
    """One load; DuckDB's max_vacuum_tasks and checkpoint_threshold as its commit will see them appended to
    `vacuum_tasks_seen` and `thresholds_seen`."""

    def before_commit(tx):
        if vacuum_tasks_seen is not None:
            vacuum_tasks_seen.append(tx.scalar("SELECT current_setting('max_vacuum_tasks')"))
        if thresholds_seen is not None:
            thresholds_seen.append(tx.scalar("SELECT current_setting('checkpoint_threshold')"))

    return load_partition(Warehouse(wh_url), SqlSource(src_url, "marketing_leads", "marketing_automation"),
                          load_contract("marketing_leads"), partition_key="all", window=EVERYTHING, run_id=run_id,
                          lookback=timedelta(hours=1), progress=lambda m: None, before_commit=before_commit)


def _raw_layout(url: str) -> tuple[int, int, int]:
    with Warehouse(url).session() as s:
        return layout(s)[RAW]


def _log(url: str) -> Path:
    return Path(f"{url[len('duckdb:///'):]}.wal")


def _on_disk(url: str) -> tuple[int, int]:
    """(raw rows, rows of a changed version) as a new read-only instance finds them: the database file,
    and the write-ahead log replayed over it (read-only, it cannot checkpoint)."""
    with duckdb.connect(url[len("duckdb:///"):], read_only=True) as con:
        return con.execute(f"SELECT count(*), count(*) FILTER (WHERE campaign = 'summer') FROM {RAW}").fetchone()


def _log_size(url: str) -> int:
    return _log(url).stat().st_size if _log(url).exists() else 0


@pytest.fixture
def checkpointing(monkeypatch):
    """Every commit checkpoints: the row groups a load leaves are in the file when it ends."""
    monkeypatch.setenv("MESHLINE_DUCKDB_CHECKPOINT_THRESHOLD", "0b")


@pytest.fixture
def deferred(monkeypatch, checkpointing):
    """Loads that leave the vacuum to the compaction until 30% of a table is replaced versions."""
    monkeypatch.setenv("MESHLINE_DUCKDB_VACUUM_AT", "0.3")


@pytest.fixture
def loaded(tmp_path):
    src = tmp_path / "src.duckdb"
    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    src_url = _source(src)
    assert _load(wh, src_url, "full").rows_loaded == ROWS
    return wh, src_url, src


def test_loads_commit_without_merging_and_leave_the_setting_as_it_was(loaded, deferred):
    wh, src_url, src = loaded
    seen = []
    groups = [_raw_layout(wh)[0]]
    for i in range(1, 6):
        _change(src, 20, i)  # a twentieth of the leads each round: a fifth replaced after five, under 30%
        r = _load(wh, src_url, f"re{i}", vacuum_tasks_seen=seen)
        assert r.rows_loaded == ROWS // 20 and r.replaced_share == pytest.approx((i - 1) / (20 + i - 1), abs=0.01)
        groups.append(_raw_layout(wh)[0])
    assert seen == [0] * 5  # every load's commit ran with DuckDB's vacuum off
    # each load appended its rows as a row group of its own, and no commit merged any
    assert groups == [groups[0] + i for i in range(6)], groups
    with Warehouse(wh).session() as s:  # reset after the commit: the instance may be shared
        assert s.scalar("SELECT current_setting('max_vacuum_tasks')") == 100
    with Warehouse(wh).transaction() as tx:  # other writers keep DuckDB's default
        assert tx.scalar("SELECT current_setting('max_vacuum_tasks')") == 100


def test_a_load_that_finds_30_percent_of_the_table_replaced_runs_the_vacuum(loaded, deferred):
    wh, src_url, src = loaded
    seen, shares = [], []
    for i in range(1, 7):
        _change(src, 10, i)  # a tenth each round: 40 of 140 stored after four loads, 50 of 150 after five
        r = _load(wh, src_url, f"re{i}", vacuum_tasks_seen=seen)
        shares.append(round(r.replaced_share, 2))
        if i == 5:
            stored_at_5 = _raw_layout(wh)[1]
    # the share as the commits before each load left it: 0, 9%, 17%, 23%, 29%, then 33%
    assert shares == [round(i / (10 + i), 2) for i in range(6)]
    assert seen == [0, 0, 0, 0, 0, 100]  # the sixth finds 33% and commits with DuckDB's vacuum
    groups, stored, live = _raw_layout(wh)
    assert live == ROWS and stored < stored_at_5 + ROWS // 10, (stored, stored_at_5)  # replaced versions reclaimed


def test_compact_merges_row_groups_keeps_every_row_and_records_itself(loaded, deferred):
    wh, src_url, src = loaded
    for i in range(1, 6):
        _change(src, 20, i)
        _load(wh, src_url, f"re{i}")
    before_rows = snapshot(wh)
    groups, stored, live = _raw_layout(wh)
    assert live == ROWS and stored == ROWS + 5 * ROWS // 20  # the replaced versions are still stored
    r = compact(Warehouse(wh), run_by="test")
    after_groups, after_stored, after_live = _raw_layout(wh)
    assert after_live == live and snapshot(wh) == before_rows  # nothing lost, nothing changed
    assert after_groups < groups and after_stored < stored, (groups, stored, after_groups, after_stored)
    assert r.row_groups_after < r.row_groups_before and r.rows_reclaimed >= stored - after_stored > 0
    with Warehouse(wh).session() as s:
        rec = s.query("SELECT run_by, row_groups_before, row_groups_after, rows_stored_before, rows_stored_after,"
                      " rows_live, finished_at IS NOT NULL FROM meshline.compactions")
    assert rec == [("test", r.row_groups_before, r.row_groups_after, r.rows_stored_before, r.rows_stored_after,
                    r.rows_live, True)]
    # the next load after a compaction goes on as before
    _change(src, 20, 6)
    assert _load(wh, src_url, "re6").rows_loaded == ROWS // 20
    assert _raw_layout(wh)[2] == ROWS


def test_by_default_every_checkpoint_runs_duckdbs_vacuum(loaded, checkpointing):
    wh, src_url, src = loaded
    seen, groups = [], []
    for i in range(1, 6):
        _change(src, 10, i)
        r = _load(wh, src_url, f"re{i}", vacuum_tasks_seen=seen)
        assert r.replaced_share is None  # not looked at: the vacuum runs anyway
        groups.append(_raw_layout(wh)[0])
    assert seen == [100] * 5
    assert groups != [groups[0] + i for i in range(5)], groups  # the small appended row groups were merged


def test_a_small_load_commits_to_the_log_and_keeps_it_past_its_close(loaded):
    wh, src_url, src = loaded
    compact(Warehouse(wh))  # whatever the full load left in the log, now in the file
    assert _log_size(wh) == 0
    sizes, thresholds = [], []
    for i in range(1, 3):
        _change(src, 50, i)  # 3,000 leads: about half a MiB of log each
        assert _load(wh, src_url, f"re{i}", thresholds_seen=thresholds).rows_loaded == ROWS // 50
        sizes.append(_log_size(wh))  # the load's connection is closed: this is what is on disk
    assert thresholds == ["2.0 MiB"] * 2  # the default: each load logs well under it
    assert 0 < sizes[0] < sizes[1], sizes  # each commit appended to the log; no close checkpointed it
    # durable as it stands: a new instance replays the log from disk
    assert _on_disk(wh) == (ROWS, 2 * ROWS // 50)
    with Warehouse(wh).session() as s:  # nor does a Meshline session's close
        assert s.scalar(f"SELECT count(*) FROM {RAW}") == ROWS
    assert _log_size(wh) == sizes[1]


def test_the_commit_that_finds_the_log_past_the_threshold_checkpoints_it(loaded, monkeypatch):
    wh, src_url, src = loaded
    compact(Warehouse(wh))
    _change(src, 50, 1)  # half a MiB of log
    _load(wh, src_url, "re1")
    logged = _log_size(wh)
    assert logged > 0
    monkeypatch.setenv("MESHLINE_DUCKDB_CHECKPOINT_THRESHOLD", f"{logged}b")  # the next commit passes it
    _change(src, 50, 2)
    assert _load(wh, src_url, "re2").rows_loaded == ROWS // 50
    assert _log_size(wh) == 0  # everything the log held is in the database file
    assert _on_disk(wh) == (ROWS, 2 * ROWS // 50)


def test_compaction_checkpoints_the_log_and_keeps_every_row(loaded):
    wh, src_url, src = loaded
    for i in range(1, 4):
        _change(src, 50, i)
        _load(wh, src_url, f"re{i}")
    assert _log_size(wh) > 0
    before = snapshot(wh)
    compact(Warehouse(wh), run_by="test")
    assert _log_size(wh) == 0 and snapshot(wh) == before


@pytest.mark.parametrize(("variable", "value", "message"), [
    *(("MESHLINE_DUCKDB_CHECKPOINT_THRESHOLD", v, "must be a size") for v in ("lots", "-1MB", "16 parsecs", "")),
    *(("MESHLINE_DUCKDB_VACUUM_AT", v, "must be a share") for v in ("1", "-0.1", "lots")),
])
def test_a_bad_setting_is_refused_before_anything_is_read(loaded, monkeypatch, variable, value, message):
    wh, src_url, src = loaded
    monkeypatch.setenv(variable, value)
    _change(src, 10, 1)
    with pytest.raises(ValueError, match=f"{variable} {message}"):
        _load(wh, src_url, "bad")
    monkeypatch.delenv(variable)
    assert _load(wh, src_url, "good").rows_loaded == ROWS // 10  # nothing was taken by the refused load


def test_compact_on_postgres_does_nothing_and_says_why(pg_url):
    r = compact(Warehouse(pg_url))
    assert r.compaction_id is None and "autovacuum" in r.summary()


def test_compact_command(loaded, monkeypatch, capsys):
    from orchestration.cli import main

    wh, _, _ = loaded
    monkeypatch.setenv("MESHLINE_WAREHOUSE_URL", wh)
    assert main(["compact"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("compacted ") and "row groups" in out
