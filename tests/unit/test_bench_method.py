"""The bench's figures are medians of fresh-process runs: which run is reported, and what is kept."""

from pathlib import Path

from orchestration import bench


def test_full_load_reports_the_median_run_and_the_highest_peak_rss(monkeypatch, tmp_path: Path):
    runs = iter([{"target": "duckdb", "phase": "full", "seconds": s, "peak_rss_mb": m}
                 for s, m in ((2.0, 400), (1.5, 420), (3.0, 390))])
    loaded, dropped = [], []
    monkeypatch.setattr(bench, "_child", lambda url, src, phase: (loaded.append(url), next(runs))[1])
    monkeypatch.setattr(bench, "_drop", dropped.append)

    kept = f"duckdb:///{tmp_path / 'w.duckdb'}"
    rec = bench._full_median("duckdb", kept, "postgresql+psycopg2://src", tmp_path)

    assert rec["seconds"] == 2.0 and rec["runs_seconds"] == [2.0, 1.5, 3.0]
    assert rec["peak_rss_mb"] == 420
    # the first run fills the warehouse the re-runs start from; the others go to scratch ones, dropped
    assert loaded[0] == kept and len(set(loaded)) == 3
    assert dropped == loaded[1:]


def test_a_relative_out_path_is_resolved_before_the_bench_changes_folders(monkeypatch, tmp_path: Path):
    """The --out file's folder is the bench's work folder, where the dlt baseline runs with that folder as
    its working directory: a relative path (`--out .bench/run1.jsonl`) once made it look for
    `.bench/dlt-venv/bin/python` inside `.bench`."""
    from orchestration import bench_year

    seen = []
    monkeypatch.setattr(bench_year, "run_year", lambda work, out: seen.append(work))
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--out", "rel/run.jsonl", "--year-only"]) == 0
    assert seen == [tmp_path / "rel" / "year"] and seen[0].is_absolute()
    assert (tmp_path / "rel" / "run.jsonl").exists()


def test_successive_reruns_change_the_source_before_each_round_and_load_every_target_on_its_own_copy(
        monkeypatch, tmp_path: Path):
    events = []
    times = iter([9.0, 9.0, 0.1, 0.3, 0.2, 0.6, 0.3, 0.9])  # the untimed catch-up, then duckdb, postgres
    monkeypatch.setattr(bench, "_copy", lambda target, url, work, name: f"{target}-copy")
    monkeypatch.setattr(bench, "change_hundredth", lambda src, i: events.append(("change", i)))
    compaction = {"seconds": 0.5, "row_groups_before": 20, "row_groups_after": 9, "rows_reclaimed": 30}
    monkeypatch.setattr(bench, "_child", lambda url, src, phase, what="_load": (
        events.append((url, phase)), compaction if what == "_compact" else {"seconds": next(times)})[1])
    monkeypatch.setattr(bench, "_drop", lambda url: events.append(("drop", url)))
    recs = bench.successive_reruns({"duckdb": "duckdb:///w", "postgres": "postgresql+psycopg2://h/w"},
                                   "postgresql+psycopg2://src", tmp_path, rounds=3)
    assert events[:5] == [("duckdb-copy", "successive_0"), ("postgres-copy", "successive_0"), ("change", 1),
                          ("duckdb-copy", "successive_1"), ("postgres-copy", "successive_1")]
    assert [e for e in events if e[0] == "change"] == [("change", 1), ("change", 2), ("change", 3)]
    # DuckDB's copy is compacted after the last round (Postgres has nothing to compact), then both dropped
    assert events[-3:] == [("duckdb-copy", "compact"), ("drop", "duckdb-copy"), ("drop", "postgres-copy")]
    duck, pg = recs
    assert duck["runs_seconds"] == [0.1, 0.2, 0.3] and duck["seconds"] == 0.2 and duck["mean_seconds"] == 0.2
    assert duck["compact_seconds"] == 0.5 and duck["compact_row_groups"] == [20, 9]
    assert duck["mean_seconds_with_compaction"] == round((0.1 + 0.2 + 0.3 + 0.5) / 3, 3)
    assert "compact_seconds" not in pg
    assert pg["runs_seconds"] == [0.3, 0.6, 0.9] and pg["seconds"] == 0.6 and pg["phase"] == "incremental_1pct_successive"


def test_a_warehouse_copy_keeps_the_commits_still_in_duckdbs_log(tmp_path: Path):
    import duckdb

    original = tmp_path / "wh.duckdb"
    with duckdb.connect(str(original)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS i FROM range(10)")
        con.execute("CHECKPOINT")
        con.execute("PRAGMA disable_checkpoint_on_shutdown")  # as Meshline's connections
        con.execute("INSERT INTO t SELECT range FROM range(10, 100)")  # committed to the log only
    assert (tmp_path / "wh.duckdb.wal").stat().st_size > 0
    copy = bench._copy("duckdb", f"duckdb:///{original}", tmp_path, "c")
    with duckdb.connect(copy[len("duckdb:///"):], read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (100,)
