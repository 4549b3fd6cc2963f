"""DESIGN.md invariants 1–5, on DuckDB and on Postgres, materializing partitions through Dagster."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import duckdb
import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.watermark import daily_window
from assets.sources import SqlSource
from expectations import load_contract
from tests.helpers import day_keys, materialize_day, snapshot


def _source_rows(sandbox, system: str, table: str, key: str) -> list[dict]:
    path = sandbox.paths.marketing if system == "marketing_automation" else sandbox.paths.crm
    w = daily_window(key)
    with duckdb.connect(str(path), read_only=True) as con:
        cur = con.execute(f"SELECT * FROM {table} WHERE updated_at >= ? AND updated_at < ?", [w.start, w.end])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_conservation_every_load_accounts_for_every_row(warehouse_url, sandbox):
    """Invariant 1: rows_read = loaded + superseded + dead-lettered, and rows_read is exactly what the
    source holds in the window; the dead letters are exactly the injected malformed rows."""
    truth = sandbox.ground_truth()
    for key in day_keys(truth):
        res = materialize_day(warehouse_url, sandbox, key)
        for ev in res.get_asset_materialization_events():
            md = {k: v.value for k, v in ev.materialization.metadata.items()}
            name = ev.asset_key.path[-1]
            system = "marketing_automation" if name == "marketing_leads" else "crm"
            expected_read = len(_source_rows(sandbox, system, name, key))
            assert md["rows_read"] == expected_read > 0
            assert md["rows_read"] == md["rows_loaded"] + md["rows_superseded"] + md["rows_dead_lettered"]
    wh = Warehouse(warehouse_url)
    with wh.session() as s:
        logged = s.query("SELECT rows_read, rows_loaded, rows_superseded, rows_dead_lettered FROM meshline.load_log")
        assert len(logged) == 2 * truth["days"]
        assert all(r[0] == r[1] + r[2] + r[3] for r in logged)
        dead = s.query("SELECT source_system, locator, reason_code FROM meshline.dead_letters")
    got = sorted((sys_, int(json.loads(loc)["row_id"]), why) for sys_, loc, why in dead)
    want = sorted((m["system"], m["row_id"], m["reason_code"]) for m in truth["malformed"])
    assert got == want and len(want) >= 4
    # Every valid key is in raw once, at its newest version.
    with wh.session() as s:
        n_raw = s.scalar("SELECT count(*) FROM raw.marketing_leads")
        n_distinct = s.scalar("SELECT count(DISTINCT lead_id) FROM raw.marketing_leads")
    assert n_raw == n_distinct == truth["mqls"]


def test_rerunning_a_partition_three_times_leaves_the_warehouse_identical(warehouse_url, sandbox):
    """Invariant 2."""
    key = day_keys(sandbox.ground_truth())[1]
    materialize_day(warehouse_url, sandbox, key)
    first = snapshot(warehouse_url)
    assert first["raw.marketing_leads"] and first["meshline.dead_letters"]
    for _ in range(2):
        res = materialize_day(warehouse_url, sandbox, key)
        for ev in res.get_asset_materialization_events():
            assert ev.materialization.metadata["rows_loaded"].value == 0
    assert snapshot(warehouse_url) == first  # not normalized: not even run ids or load times changed


class Boom(RuntimeError):
    pass


def _boom(tx):
    raise Boom("injected after the data write, before commit")


def test_crash_before_commit_leaves_nothing_and_rerun_equals_clean_run(warehouse_url, sandbox, tmp_path):
    """Invariant 3: data, dead letters, watermark and load_log commit together or not at all."""
    keys = day_keys(sandbox.ground_truth())
    contract = load_contract("marketing_leads")
    source = SqlSource(sandbox.marketing_url, "marketing_leads", "marketing_automation")
    wh = Warehouse(warehouse_url)

    def load(w, key, run, hook=None):
        return load_partition(w, source, contract, partition_key=key, window=daily_window(key), run_id=run,
                              before_commit=hook)

    with pytest.raises(Boom):  # first ever load: even the tables' creation rolls back
        load(wh, keys[0], "crash-0", _boom)
    assert all(not rows for rows in snapshot(warehouse_url).values())

    load(wh, keys[0], "ok-0")
    before = snapshot(warehouse_url)
    with wh.session() as s:
        logs_before = s.scalar("SELECT count(*) FROM meshline.load_log")
    with pytest.raises(Boom):
        load(wh, keys[1], "crash-1", _boom)
    assert snapshot(warehouse_url) == before
    with wh.session() as s:
        assert s.scalar("SELECT count(*) FROM meshline.load_log") == logs_before

    load(wh, keys[1], "ok-1")
    clean_url = f"duckdb:///{tmp_path / 'clean.duckdb'}"
    clean = Warehouse(clean_url)
    load(clean, keys[0], "clean-0")
    load(clean, keys[1], "clean-1")
    assert snapshot(warehouse_url, normalize=True) == snapshot(clean_url, normalize=True)


def test_a_stage_spilled_to_parquet_loads_what_one_held_in_memory_loads(sandbox, tmp_path, monkeypatch):
    """DuckDB: past `Stage.MEMORY_ROWS` staged rows a load's stage goes to a Parquet file beside the
    warehouse. The warehouse it leaves is the one an in-memory stage leaves, and the file is gone after
    the load, committed or rolled back."""
    from assets.loading.warehouse import Stage

    keys = day_keys(sandbox.ground_truth())
    contract = load_contract("marketing_leads")
    source = SqlSource(sandbox.marketing_url, "marketing_leads", "marketing_automation")

    def load_all(url, memory_rows):
        monkeypatch.setattr(Stage, "MEMORY_ROWS", memory_rows)
        for key in keys:
            load_partition(Warehouse(url), source, contract, partition_key=key, window=daily_window(key),
                           run_id=f"run-{key}", chunk_rows=7)

    held_url, spilled_url = f"duckdb:///{tmp_path / 'held.duckdb'}", f"duckdb:///{tmp_path / 'spilled.duckdb'}"
    load_all(held_url, 10**9)
    load_all(spilled_url, 5)
    assert not (tmp_path / ".held.duckdb.scratch").exists()  # never spilled
    scratch = tmp_path / ".spilled.duckdb.scratch"
    assert scratch.is_dir() and list(scratch.iterdir()) == []  # spilled, and every file removed
    held, spilled = snapshot(held_url), snapshot(spilled_url)
    assert held["raw.marketing_leads"] and held["meshline.dead_letters"]
    assert snapshot(held_url, normalize=True) == snapshot(spilled_url, normalize=True)
    with pytest.raises(Boom):
        load_partition(Warehouse(spilled_url), source, contract, partition_key=keys[0],
                       window=daily_window(keys[0]), run_id="crash", full_refresh=True, chunk_rows=7,
                       before_commit=_boom)
    assert list(scratch.iterdir()) == [] and snapshot(spilled_url) == spilled


def _write_source(path, rows):
    cols = ["row_id", "lead_id", "email", "first_name", "last_name", "company", "campaign", "mql_at", "updated_at"]
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE IF NOT EXISTS marketing_leads (row_id BIGINT, lead_id BIGINT, email TEXT,"
                    " first_name TEXT, last_name TEXT, company TEXT, campaign TEXT, mql_at TIMESTAMP,"
                    " updated_at TIMESTAMP)")
        for r in rows:
            con.execute(f"INSERT INTO marketing_leads VALUES ({', '.join('?' * len(cols))})",
                        [r.get(c) for c in cols])


def test_newest_change_token_wins_under_out_of_order_delivery(warehouse_url, tmp_path):
    """Invariant 4: an older version never overwrites a newer one, whatever order versions arrive in."""
    src_path = tmp_path / "mkt.duckdb"
    day = datetime(2026, 3, 10)
    base = {"email": "o@example.com", "mql_at": day}

    def v(row_id, lead, hour, company):
        return {**base, "row_id": row_id, "lead_id": lead, "company": company,
                "updated_at": day + timedelta(hours=hour)}

    # Lead 1: three versions in one chunk, out of order. Lead 2: newest first; an older one arrives later.
    _write_source(src_path, [v(1, 1, 5, "v5"), v(2, 1, 9, "v9"), v(3, 1, 7, "v7"), v(4, 2, 20, "new")])
    contract = load_contract("marketing_leads")
    source = SqlSource(f"duckdb:///{src_path}", "marketing_leads", "marketing_automation")
    wh = Warehouse(warehouse_url)

    def load(run):
        return load_partition(wh, source, contract, partition_key="2026-03-10", window=daily_window("2026-03-10"),
                              run_id=run, lookback=timedelta(hours=24), chunk_rows=2)

    r = load("r1")
    assert (r.rows_read, r.rows_loaded, r.rows_superseded) == (4, 2, 2)
    _write_source(src_path, [v(5, 2, 19, "older-late"), v(6, 1, 8, "older-late")])
    r = load("r2")
    assert r.rows_loaded == 0 and r.rows_superseded == r.rows_read >= 2
    _write_source(src_path, [v(7, 2, 21, "newer")])
    r = load("r3")
    assert r.rows_loaded == 1
    with wh.session() as s:
        got = dict(s.query("SELECT lead_id, company FROM raw.marketing_leads"))
    assert got == {1: "v9", 2: "newer"}


def test_no_raw_email_in_dead_letters_or_logs(warehouse_url, sandbox, caplog):
    """Invariant 5: dead letters, Dagster's event log and Python logs carry redacted values only."""
    import dagster as dg

    caplog.set_level(logging.DEBUG)
    with duckdb.connect(str(sandbox.paths.marketing), read_only=True) as con:
        emails = {r[0] for r in con.execute("SELECT email FROM marketing_leads WHERE email IS NOT NULL").fetchall()}
        names = {r[0] for r in con.execute("SELECT last_name FROM marketing_leads").fetchall()}
    assert any("@" in e for e in emails) and any("not-an-email" in e for e in emails)
    instance = dg.DagsterInstance.ephemeral()
    run_ids = []
    for key in day_keys(sandbox.ground_truth()):
        run_ids.append(materialize_day(warehouse_url, sandbox, key, instance=instance).run_id)
    with Warehouse(warehouse_url).session() as s:
        dead_text = "\n".join(" ".join(str(v) for v in row) for row in s.query("SELECT * FROM meshline.dead_letters"))
    assert "redacted:" in dead_text
    event_text = "\n".join(
        f"{e.user_message} {e.dagster_event.event_specific_data if e.dagster_event else ''}"
        for rid in run_ids for e in instance.all_logs(rid))
    for text, where in ((dead_text, "dead letters"), (event_text, "Dagster event log"), (caplog.text, "logs")):
        leaked = [e for e in emails if e in text]
        assert not leaked, f"raw e-mail addresses in {where}: {len(leaked)}"
        assert not [n for n in names if f'"{n}"' in text], f"raw names in {where}"


def test_a_killed_load_leaves_no_staged_rows_behind_once_the_next_load_runs(sandbox, tmp_path):
    """DuckDB: a load killed after its stage spilled to Parquet (raw values, PII included) leaves the file;
    the next load into that warehouse removes it, and commits what a clean load commits."""
    import subprocess
    import sys

    from assets.settings import PROJECT_ROOT

    key = day_keys(sandbox.ground_truth())[0]
    url, clean_url = f"duckdb:///{tmp_path / 'w.duckdb'}", f"duckdb:///{tmp_path / 'clean.duckdb'}"
    code = (
        "import sys, time\n"
        "from assets.loading import Warehouse, load_partition\n"
        "from assets.loading.warehouse import Stage\n"
        "from assets.loading.watermark import daily_window\n"
        "from assets.sources import SqlSource\n"
        "from expectations import load_contract\n"
        "Stage.MEMORY_ROWS = 5\n"
        "def hang(tx):\n"
        "    print('spilled', flush=True)\n"
        "    time.sleep(120)\n"
        "load_partition(Warehouse(sys.argv[1]), SqlSource(sys.argv[2], 'marketing_leads', 'marketing_automation'),"
        " load_contract('marketing_leads'), partition_key=sys.argv[3], window=daily_window(sys.argv[3]),"
        " run_id='killed', chunk_rows=7, before_commit=hang)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, url, sandbox.marketing_url, key], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "spilled"
    finally:
        proc.kill()
        proc.wait(30)
    scratch = tmp_path / ".w.duckdb.scratch"
    assert list(scratch.glob("*.parquet")), "the killed load had spilled its stage"

    source = SqlSource(sandbox.marketing_url, "marketing_leads", "marketing_automation")
    for target in (url, clean_url):
        load_partition(Warehouse(target), source, load_contract("marketing_leads"), partition_key=key,
                       window=daily_window(key), run_id="next", chunk_rows=7)
    assert list(scratch.glob("*.parquet")) == []
    assert snapshot(url, normalize=True) == snapshot(clean_url, normalize=True)


def test_a_record_dead_lettered_again_under_a_changed_contract_has_one_open_dead_letter(warehouse_url, tmp_path):
    """The lookback re-reads a bad row after its contract changed: it is dead-lettered with its new
    reasons, and the dead letter with the old ones is resolved as superseded, not left open beside it."""
    import dataclasses

    src_path = tmp_path / "mkt.duckdb"
    day = datetime(2026, 3, 10)
    _write_source(src_path, [{"row_id": 1, "lead_id": 1, "email": "not-an-email", "company": None, "mql_at": day,
                              "updated_at": day + timedelta(hours=1)},
                             {"row_id": 2, "lead_id": 2, "email": "ok@example.com", "company": "acme", "mql_at": day,
                              "updated_at": day + timedelta(hours=2)}])
    v1 = load_contract("marketing_leads")
    v2 = dataclasses.replace(v1, version="1.1.0", columns=tuple(
        dataclasses.replace(c, required=True) if c.name == "company" else c for c in v1.columns))
    source = SqlSource(f"duckdb:///{src_path}", "marketing_leads", "marketing_automation")
    wh = Warehouse(warehouse_url)
    for contract, run in ((v1, "r1"), (v2, "r2"), (v2, "r3")):
        load_partition(wh, source, contract, partition_key="2026-03-10", window=daily_window("2026-03-10"),
                       run_id=run, lookback=timedelta(hours=24))
    with wh.session() as s:
        rows = s.query("SELECT status, resolution, reasons FROM meshline.dead_letters ORDER BY first_seen_at")
    assert [(status, resolution) for status, resolution, _ in rows] == [("resolved", "superseded"), ("open", None)]
    assert "missing_required" not in rows[0][2] and "missing_required" in rows[1][2]


def test_a_row_without_a_change_token_is_dead_lettered_not_lost(warehouse_url, tmp_path):
    """A source row whose change token is NULL falls in no partition's window: every load reads it, the
    contract (the token is required) dead-letters it once, and conservation holds on every load."""
    src_path = tmp_path / "mkt.duckdb"
    day = datetime(2026, 3, 10)
    _write_source(src_path, [{"row_id": 1, "lead_id": 1, "email": "a@example.com", "company": "acme", "mql_at": day,
                              "updated_at": day + timedelta(hours=1)},
                             {"row_id": 2, "lead_id": 2, "email": "b@example.com", "company": "acme", "mql_at": day,
                              "updated_at": None}])
    source = SqlSource(f"duckdb:///{src_path}", "marketing_leads", "marketing_automation")
    wh = Warehouse(warehouse_url)
    for run in ("r1", "r2"):
        r = load_partition(wh, source, load_contract("marketing_leads"), partition_key="2026-03-10",
                           window=daily_window("2026-03-10"), run_id=run, lookback=timedelta(hours=24))
        assert r.rows_read == 2 and r.conserved and r.rows_dead_lettered == 1
        assert r.watermark_to == day + timedelta(hours=1)
    with wh.session() as s:
        letters = s.query("SELECT record_key, reason_code, status FROM meshline.dead_letters")
    assert letters == [("2", "missing_required", "open")]
