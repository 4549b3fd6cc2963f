"""The bench's own method: its source table holds what it says, and its figures are medians of
fresh-process runs."""

from pathlib import Path

import pytest

from bench import run as bench
from bench.source import generate


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
    # the first run fills the warehouse the bench keeps; the others go to scratch ones, dropped
    assert loaded[0] == kept and len(set(loaded)) == 3
    assert dropped == loaded[1:]


@pytest.mark.postgres
def test_the_source_table_has_the_stated_versions_and_violations(pg_url):
    """1,000 opportunities: 1,010 events, 10 of them second versions of existing ids, each newer than
    every first version; 20 violations, five of each kind."""
    import psycopg2

    libpq = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    assert generate(libpq, 1_000) == 1_010
    with psycopg2.connect(libpq) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT opportunity_id) FROM crm_opportunities")
        assert cur.fetchone() == (1_010, 1_000)
        cur.execute("SELECT min(updated_at) > (SELECT max(updated_at) FROM crm_opportunities WHERE event_id <= 1000)"
                    " FROM crm_opportunities WHERE event_id > 1000")
        assert cur.fetchone() == (True,)
        cur.execute("SELECT count(*) FILTER (WHERE account_id IS NULL), count(*) FILTER (WHERE owner_email NOT LIKE"
                    " '%@%'), count(*) FILTER (WHERE amount < 0), count(*) FILTER (WHERE stage NOT IN"
                    " ('prospecting', 'qualification', 'proposal', 'negotiation', 'closed_won', 'closed_lost'))"
                    " FROM crm_opportunities")
        assert cur.fetchone() == (5, 5, 5, 5)
        cur.execute("DROP TABLE crm_opportunities")
    conn.close()
