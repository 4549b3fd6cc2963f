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


def test_the_purging_rerun_starts_from_newer_versions_past_their_share_and_reports_the_median(
        monkeypatch, tmp_path: Path):
    import duckdb

    wh = tmp_path / "w.duckdb"
    with duckdb.connect(str(wh)) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.crm_opportunities__versions (opportunity_id BIGINT, _ml_seq BIGINT)")
        con.execute("INSERT INTO raw.crm_opportunities__versions SELECT i, 0 FROM range(20000) t(i)")
    recent = bench._age_versions(f"duckdb:///{wh}", 0.095)
    assert 1_700 < recent < 2_100  # 9.5% of 20,000, sampled
    with duckdb.connect(str(wh)) as con:
        assert con.execute("SELECT count(*), count(DISTINCT opportunity_id), max(_ml_seq)"
                           " FROM raw.crm_opportunities__versions").fetchone() == (20_000 + recent, 20_000, 1)

    runs = iter([0.3, 0.2, 0.5])
    copies, dropped, shares = [], [], []
    monkeypatch.setattr(bench, "_copy", lambda target, url, work, name: (copies.append(name), f"duckdb:///{name}")[1])
    monkeypatch.setattr(bench, "_age_versions", lambda url, share: (shares.append(share), 95)[1])
    monkeypatch.setattr(bench, "_child", lambda url, src, phase: {"phase": phase, "seconds": next(runs)})
    monkeypatch.setattr(bench, "_drop", dropped.append)
    rec = bench.purging_rerun(f"duckdb:///{wh}", "postgresql+psycopg2://src", tmp_path)
    assert rec["seconds"] == 0.3 and sorted(rec["runs_seconds"]) == [0.2, 0.3, 0.5]
    assert rec["phase"] == "incremental_1pct_purging" and rec["versions_superseded"] == 95
    assert len(set(copies)) == 3 and shares == [0.105] * 3 and len(dropped) == 3


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
