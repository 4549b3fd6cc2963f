"""File drops on DuckDB and Postgres: the same file dropped twice loads once; a malformed line is a
dead letter with its file and line; a crash before commit leaves the file to be read again."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta

import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.watermark import daily_window
from assets.sources.files import FileDropSource
from expectations.contract import parse_contract
from tests.helpers import snapshot

CONTRACT = parse_contract({
    "contract": "product_plan_events", "version": "1.0.0", "severity": "standard",
    "boundary": {"flow": "subscription_updates", "source_system": "product", "table": "plan_events"},
    "idempotency_key": "event_id", "change_token": "occurred_at", "owners": {"contract": "product@meshline.example"},
    "columns": {"event_id": {"type": "string", "required": True},
                "account_email": {"type": "string", "pattern": "email", "pii": True},
                "plan": {"type": "string", "required": True, "allowed_values": ["free", "team", "enterprise"]},
                "occurred_at": {"type": "timestamp", "required": True}},
}, "product_plan_events.yml")
DAY = "2026-03-10"
T = datetime(2026, 3, 10, 9)


def _events(start: int, n: int, plan="team") -> list[dict]:
    return [{"event_id": f"ev-{i}", "account_email": f"owner{i}@example.com", "plan": plan,
             "occurred_at": (T + timedelta(minutes=i)).isoformat()} for i in range(start, start + n)]


def _jsonl(path, records, broken_after: int | None = None):
    lines = [json.dumps(r) for r in records]
    if broken_after is not None:
        lines.insert(broken_after, '{"event_id": "ev-x", "account_email": "leak@example.com", ')
    path.write_text("\n".join(lines) + "\n")


def _load(url, folder, run, **kw):
    return load_partition(Warehouse(url), FileDropSource(folder, system="product", table="plan_events"), CONTRACT,
                          partition_key=DAY, window=daily_window(DAY), run_id=run, **kw)


def test_same_file_twice_loads_once_and_malformed_lines_are_dead_letters(warehouse_url, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    _jsonl(landing / "events-001.jsonl", _events(0, 20), broken_after=5)
    r = _load(warehouse_url, landing, "r1")
    assert (r.rows_read, r.rows_loaded, r.rows_dead_lettered) == (21, 20, 1)
    with Warehouse(warehouse_url).session() as s:
        dead = s.query("SELECT reason_code, locator, payload FROM meshline.dead_letters")
    assert len(dead) == 1 and dead[0][0] == "malformed_record"
    assert json.loads(dead[0][1])["file"] == "events-001.jsonl" and json.loads(dead[0][1])["line"] == 6
    assert "leak@example.com" not in dead[0][2] and "redacted:" in dead[0][2]
    before = snapshot(warehouse_url)

    shutil.copy(landing / "events-001.jsonl", landing / "events-001-again.jsonl")  # dropped twice
    r = _load(warehouse_url, landing, "r2")
    assert r.rows_read == 0 and r.rows_loaded == 0
    assert snapshot(warehouse_url) == before

    (landing / "events-002.csv").write_text(
        "event_id,account_email,plan,occurred_at\n"
        + "".join(f"ev-{i},o{i}@example.com,enterprise,{(T + timedelta(hours=1, minutes=i)).isoformat()}\n"
                  for i in range(100, 110))
        + "ev-bad,too,many,fields,here\n")
    r = _load(warehouse_url, landing, "r3")
    assert (r.rows_read, r.rows_loaded, r.rows_dead_lettered) == (11, 10, 1)
    with Warehouse(warehouse_url).session() as s:
        assert s.scalar("SELECT count(*) FROM raw.product_plan_events") == 30
        locs = [json.loads(x[0]) for x in s.query("SELECT locator FROM meshline.dead_letters ORDER BY locator")]
        files = s.query("SELECT file_name, records FROM meshline.file_manifest ORDER BY file_name")
    assert {(x["file"], x["line"]) for x in locs} == {("events-001.jsonl", 6), ("events-002.csv", 12)}
    assert files == [("events-001.jsonl", 20), ("events-002.csv", 10)]


class Boom(RuntimeError):
    pass


def _boom(tx):
    raise Boom()


def test_a_crash_before_commit_leaves_the_file_to_be_read_again(warehouse_url, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    _jsonl(landing / "a.jsonl", _events(0, 5))
    with pytest.raises(Boom):
        _load(warehouse_url, landing, "crash", before_commit=_boom)
    r = _load(warehouse_url, landing, "ok")
    assert r.rows_loaded == 5
    clean = f"duckdb:///{tmp_path / 'clean.duckdb'}"
    _load(clean, landing, "clean")
    assert snapshot(warehouse_url, normalize=True) == snapshot(clean, normalize=True)


def test_records_outside_the_window_wait_for_their_own_partition(warehouse_url, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    late = [{**e, "occurred_at": (T + timedelta(days=1)).isoformat()} for e in _events(50, 3)]
    _jsonl(landing / "mixed.jsonl", _events(0, 4) + late)
    r = _load(warehouse_url, landing, "d1")
    assert r.rows_loaded == 4
    nxt = "2026-03-11"
    r2 = load_partition(Warehouse(warehouse_url), FileDropSource(landing, system="product", table="plan_events"),
                        CONTRACT, partition_key=nxt, window=daily_window(nxt), run_id="d2")
    assert r2.rows_loaded == 3


def test_files_whose_tokens_lie_outside_the_window_are_skipped_unparsed(warehouse_url, tmp_path):
    """A year of daily drops is not re-parsed for each day: each file's token range is indexed the first
    time it is parsed; a file with a record whose token is unreadable is never skipped."""
    landing = tmp_path / "landing"
    landing.mkdir()
    _jsonl(landing / "day1.jsonl", _events(0, 5))
    nxt = "2026-03-11"
    _jsonl(landing / "day2.jsonl", [{**e, "occurred_at": (T + timedelta(days=1, minutes=i)).isoformat()}
                                    for i, e in enumerate(_events(100, 4))])
    wh = Warehouse(warehouse_url)

    def load(day, run, **kw):
        src = FileDropSource(landing, system="product", table="plan_events")
        r = load_partition(wh, src, CONTRACT, partition_key=day, window=daily_window(day), run_id=run, **kw)
        return r, src

    r1, s1 = load(DAY, "d1")
    assert (r1.rows_loaded, s1.files_parsed, s1.files_skipped) == (5, 2, 0)  # both parsed, both indexed
    r2, s2 = load(nxt, "d2")
    assert (r2.rows_loaded, s2.files_parsed, s2.files_skipped) == (4, 1, 1)  # day1.jsonl not parsed again
    with wh.session() as s:
        idx = dict(s.query("SELECT file_name, records FROM meshline.file_index ORDER BY file_name"))
    assert idx == {"day1.jsonl": 5, "day2.jsonl": 4}
    # A third day: a file with an unreadable token is read by every window (its record is dead-lettered
    # once); the two indexed files are skipped.
    _jsonl(landing / "odd.jsonl", [{**_events(200, 1)[0], "occurred_at": "not a time"}])
    third = "2026-03-12"
    r3, s3 = load(third, "d3")
    assert (s3.files_parsed, s3.files_skipped, r3.rows_dead_lettered) == (1, 2, 1)
    r4, s4 = load("2026-03-13", "d4")
    assert (s4.files_parsed, s4.files_skipped) == (1, 2)
    # A compensating rescan of day 2 reads its file (and the odd one) again, skips day 1's, loads nothing new.
    r5, s5 = load(nxt, "d5", full_refresh=True)
    assert (r5.rows_read, r5.rows_loaded, s5.files_parsed, s5.files_skipped) == (5, 0, 2, 1)


def test_a_csv_or_jsonl_file_that_starts_with_a_byte_order_mark_loads_like_any_other(warehouse_url, tmp_path):
    """Spreadsheet exports often start with a UTF-8 byte order mark: read as part of the first column's
    name, it made every row look like a new source column and held the folder."""
    landing = tmp_path / "landing"
    landing.mkdir()
    header = "event_id,account_email,plan,occurred_at\n"
    rows = "".join(f"ev-{i},o{i}@example.com,team,{(T + timedelta(minutes=i)).isoformat()}\n" for i in range(5))
    (landing / "events-bom.csv").write_text("\ufeff" + header + rows, encoding="utf-8")
    (landing / "events-bom.jsonl").write_text("\ufeff" + "\n".join(json.dumps(r) for r in _events(10, 3)) + "\n",
                                              encoding="utf-8")
    r = _load(warehouse_url, landing, "r1")
    assert (r.rows_read, r.rows_loaded, r.rows_dead_lettered, r.rows_held) == (8, 8, 0, 0)
    assert r.unknown_columns == ()
