"""Loads that meet on Postgres: a nightly, a compensation and a replay of one boundary take turns, so the
newest change token wins and the watermark never moves backwards whatever the interleaving; loads that
start together in a fresh warehouse do not collide on its DDL."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import psycopg2
import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.watermark import daily_window
from assets.sources import SqlSource
from expectations import load_contract

pytestmark = pytest.mark.postgres

DAY = datetime(2026, 3, 10)
KEY = "2026-03-10"


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://")


def _source(url: str, rows: list[tuple[int, str, datetime]]) -> None:
    """src.marketing_leads in the test database: (lead_id, company, updated_at) per row."""
    with psycopg2.connect(_libpq(url)) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS src")
        cur.execute("CREATE TABLE IF NOT EXISTS src.marketing_leads (row_id BIGSERIAL, lead_id BIGINT, email TEXT,"
                    " first_name TEXT, last_name TEXT, company TEXT, campaign TEXT, mql_at TIMESTAMP,"
                    " updated_at TIMESTAMP)")
        for lead, company, at in rows:
            cur.execute("INSERT INTO src.marketing_leads (lead_id, email, company, mql_at, updated_at)"
                        " VALUES (%s, 'o@example.com', %s, %s, %s)", (lead, company, DAY, at))
    conn.close()


def _load(url: str, run_id: str, **kw):
    source = SqlSource(url, "src.marketing_leads", "marketing_automation")
    return load_partition(Warehouse(url), source, load_contract("marketing_leads"), partition_key=KEY,
                          window=daily_window(KEY), run_id=run_id, lookback=timedelta(hours=24), **kw)


def test_a_later_reader_that_commits_first_is_not_overwritten_and_the_watermark_holds(pg_url):
    """A reads the old version and waits before its commit; the source changes; B starts. Were they to
    overlap, B would commit the new version first and A would replace it with the old one, moving the
    watermark back. Taking turns, B reads after A committed and the new version stays."""
    _source(pg_url, [(1, "old", DAY + timedelta(hours=1))])
    # the day before (nothing in its window) creates the tables, so neither load below has DDL to run
    source = SqlSource(pg_url, "src.marketing_leads", "marketing_automation")
    load_partition(Warehouse(pg_url), source, load_contract("marketing_leads"), partition_key="2026-03-09",
                   window=daily_window("2026-03-09"), run_id="setup")
    a_ready, go = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def hold(_tx):
        a_ready.set()
        assert go.wait(30)

    def run(name: str, **kw) -> None:
        try:
            results[name] = _load(pg_url, name, **kw)
        except BaseException as exc:  # surfaced by the assertions below
            results[name] = exc

    a = threading.Thread(target=run, args=("a",), kwargs={"before_commit": hold})
    a.start()
    assert a_ready.wait(60)
    _source(pg_url, [(1, "new", DAY + timedelta(hours=2))])
    b = threading.Thread(target=run, args=("b",))
    b.start()
    b.join(2)
    assert b.is_alive(), "the second load of the boundary waits for the first to commit"
    go.set()
    a.join(60)
    b.join(60)
    ra, rb = results["a"], results["b"]
    assert not isinstance(ra, BaseException) and not isinstance(rb, BaseException), (ra, rb)
    assert rb.rows_loaded == 1 and ra.watermark_to == DAY + timedelta(hours=1)
    with Warehouse(pg_url).session() as s:
        assert s.query("SELECT lead_id, company, updated_at FROM raw.marketing_leads") == [
            (1, "new", DAY + timedelta(hours=2))]
        assert s.scalar("SELECT watermark FROM meshline.watermarks WHERE asset = 'marketing_leads'") == (
            DAY + timedelta(hours=2))


def test_first_loads_of_two_boundaries_at_once_both_succeed(pg_url):
    """A fresh warehouse: both loads find the DDL due; one applies it while the other waits, then reads
    what was committed instead of creating the same schema a second time."""
    _source(pg_url, [(1, "acme", DAY + timedelta(hours=1))])
    with psycopg2.connect(_libpq(pg_url)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE src.crm_leads AS SELECT 1::BIGINT AS row_id, 10::BIGINT AS crm_lead_id,"
                    " 1::BIGINT AS marketing_lead_id, 'rep'::TEXT AS owner, 'open'::TEXT AS status,"
                    " TIMESTAMP '2026-03-10 01:00' AS created_at, TIMESTAMP '2026-03-10 01:00' AS updated_at")
    conn.close()
    errors: list[BaseException] = []

    def run(table: str, contract: str, system: str) -> None:
        try:
            load_partition(Warehouse(pg_url), SqlSource(pg_url, f"src.{table}", system), load_contract(contract),
                           partition_key=KEY, window=daily_window(KEY), run_id=table,
                           before_commit=lambda _tx: time.sleep(1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=("marketing_leads", "marketing_leads", "marketing_automation")),
               threading.Thread(target=run, args=("crm_leads", "crm_leads", "crm"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with Warehouse(pg_url).session() as s:
        assert s.scalar("SELECT count(*) FROM raw.marketing_leads") == 1
        assert s.scalar("SELECT count(*) FROM raw.crm_leads") == 1
