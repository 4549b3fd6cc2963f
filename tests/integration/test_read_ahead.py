"""Reading ahead: a DuckDB warehouse remembers the watermark each partition's last load committed, and the
next load reads its first chunk from the source on the bounds that watermark gives while the warehouse
opens on another thread. What it read is kept only when the watermark read inside the transaction gives
the same bounds; a stale, missing or unreadable hint changes nothing but the speed."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

import duckdb
import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.watermark import Window
from assets.sources import SqlSource
from expectations import load_contract
from tests.helpers import snapshot

EVERYTHING = Window(datetime(1970, 1, 1), datetime(2100, 1, 1))
CONTRACT = "marketing_leads"


class Boom(RuntimeError):
    pass


def _rows_sql(day: str) -> str:
    return ("SELECT i, i, 'lead' || i || '@example.com', 'Ada', 'Lovelace', 'Acme ' || (i % 97), 'spring',"
            f" TIMESTAMP '{day}', TIMESTAMP '{day}' + (i % 86400) * INTERVAL '1 second'"
            f" FROM {{range}}")


_COLUMNS = ("row_id BIGINT, lead_id BIGINT, email TEXT, first_name TEXT, last_name TEXT, company TEXT,"
            " campaign TEXT, mql_at TIMESTAMP, updated_at TIMESTAMP")


def _duckdb_source(path, rows: int, first_id: int = 0, day: str = "2026-03-10") -> str:
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE IF NOT EXISTS marketing_leads ({_COLUMNS})")
        con.execute("INSERT INTO marketing_leads " + _rows_sql(day).format(
            range=f"range({first_id}, {first_id + rows}) t(i)"))
    return f"duckdb:///{path}"


def _pg_source(url: str, rows: int, first_id: int = 0, day: str = "2026-03-10") -> str:
    with Warehouse(url).session() as s:
        s.execute(f"CREATE TABLE IF NOT EXISTS marketing_leads ({_COLUMNS})")
        s.execute("INSERT INTO marketing_leads " + _rows_sql(day).replace("%", "%%").format(  # psycopg2's %
            range=f"generate_series({first_id}, {first_id + rows - 1}) t(i)"))
    return url


def _load(warehouse_url: str, source_url: str, run_id: str, **kw):
    return load_partition(Warehouse(warehouse_url), SqlSource(source_url, "marketing_leads", "marketing_automation"),
                          load_contract(CONTRACT), partition_key="all", window=EVERYTHING, run_id=run_id,
                          lookback=timedelta(hours=1), **kw)


@pytest.fixture
def spies(monkeypatch):
    """Counts the warehouse connections opened in the background and records each extract's bounds."""
    seen = {"background": 0, "extracts": []}
    open_bg, extract = Warehouse.open_in_background, SqlSource.extract

    def background(self, prepare=None, vacuum=True):
        seen["background"] += 1
        return open_bg(self, prepare, vacuum)

    def spy_extract(self, columns, token, low, low_inclusive, high, chunk_rows):
        seen["extracts"].append(low)
        return extract(self, columns, token, low, low_inclusive, high, chunk_rows)

    monkeypatch.setattr(Warehouse, "open_in_background", background)
    monkeypatch.setattr(SqlSource, "extract", spy_extract)
    return seen


def _hint_file(warehouse_url: str):
    folder = Warehouse(warehouse_url).hints_dir()
    files = sorted(folder.glob("*"))
    assert len(files) == 1, files
    return files[0]


def _another_process_can_open(path) -> None:
    """DuckDB's file lock is free: the load let go of the warehouse."""
    out = subprocess.run([sys.executable, "-c", f"import duckdb; duckdb.connect({str(path)!r}).close()"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def _committed_watermark(warehouse_url: str) -> datetime:
    with Warehouse(warehouse_url).session() as s:
        return s.scalar("SELECT watermark FROM meshline.watermarks WHERE asset = ?", (CONTRACT,))


def _plain(warehouse_url: str, source_url: str, run_id: str, **kw):
    """A load with nothing remembered: its hint removed after it."""
    result = _load(warehouse_url, source_url, run_id, **kw)
    Warehouse(warehouse_url)._hint_path(CONTRACT, "all").unlink()
    return result


def test_a_reload_reads_ahead_on_the_remembered_watermark_and_leaves_what_a_plain_load_leaves(tmp_path, spies):
    src = _duckdb_source(tmp_path / "src.duckdb", 400)
    ahead, plain = f"duckdb:///{tmp_path / 'ahead.duckdb'}", f"duckdb:///{tmp_path / 'plain.duckdb'}"

    first = _load(ahead, src, "first")
    assert spies["background"] == 0  # nothing remembered yet: connect, then read
    assert first.rows_loaded == 400
    hint = _hint_file(ahead)
    assert datetime.fromisoformat(hint.read_text()) == _committed_watermark(ahead) == first.watermark_to
    _plain(plain, src, "first")

    _duckdb_source(tmp_path / "src.duckdb", 150, first_id=400, day="2026-03-11")
    spies["extracts"].clear()
    second = _load(ahead, src, "second")
    assert spies["background"] == 1
    assert spies["extracts"] == [first.watermark_to - timedelta(hours=1)]  # read once, on the hint's bounds
    assert second.rows_loaded == 150 and second.watermark_from == first.watermark_to
    assert datetime.fromisoformat(hint.read_text()) == second.watermark_to == _committed_watermark(ahead)
    assert spies["background"] == 1 and _plain(plain, src, "second").rows_read == second.rows_read
    assert snapshot(ahead, normalize=True) == snapshot(plain, normalize=True)


@pytest.mark.postgres
def test_a_stale_hint_is_dropped_mid_stream_and_the_source_read_again(tmp_path, pg_url, spies):
    """The hint says an older watermark than the warehouse holds: the read-ahead's bounds are wider, so
    its extract (a Postgres COPY, stopped after its first chunk) is closed and the load reads again."""
    src = _pg_source(pg_url, 300)
    ahead, plain = f"duckdb:///{tmp_path / 'ahead.duckdb'}", f"duckdb:///{tmp_path / 'plain.duckdb'}"
    first = _load(ahead, src, "first", chunk_rows=20)
    _plain(plain, src, "first", chunk_rows=20)
    _pg_source(pg_url, 60, first_id=300, day="2026-03-11")
    stale = first.watermark_to - timedelta(days=1)
    _hint_file(ahead).write_text(stale.isoformat())

    spies["extracts"].clear()
    second = _load(ahead, src, "second", chunk_rows=20)
    assert spies["background"] == 1
    assert spies["extracts"] == [stale - timedelta(hours=1), first.watermark_to - timedelta(hours=1)]
    assert second.rows_loaded == 60 and second.watermark_from == first.watermark_to
    assert datetime.fromisoformat(_hint_file(ahead).read_text()) == second.watermark_to
    with Warehouse(pg_url).session() as s:  # the dropped COPY's connection is closed, not left behind
        assert s.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid()") == 0

    _plain(plain, src, "second", chunk_rows=20)
    assert snapshot(ahead, normalize=True) == snapshot(plain, normalize=True)


def test_an_unreadable_hint_is_ignored_and_rewritten(tmp_path, spies):
    src = _duckdb_source(tmp_path / "src.duckdb", 100)
    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    _load(wh, src, "first")
    _hint_file(wh).write_text("not a timestamp")
    _duckdb_source(tmp_path / "src.duckdb", 10, first_id=100, day="2026-03-11")
    second = _load(wh, src, "second")
    assert spies["background"] == 0 and second.rows_loaded == 10
    assert datetime.fromisoformat(_hint_file(wh).read_text()) == second.watermark_to


def test_a_rolled_back_load_leaves_the_hint_as_it_was(tmp_path):
    src = _duckdb_source(tmp_path / "src.duckdb", 100)
    wh = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    first = _load(wh, src, "first")
    _duckdb_source(tmp_path / "src.duckdb", 10, first_id=100, day="2026-03-11")

    def boom(tx):
        raise Boom("injected before commit")

    with pytest.raises(Boom):
        _load(wh, src, "crash", before_commit=boom)
    assert datetime.fromisoformat(_hint_file(wh).read_text()) == first.watermark_to == _committed_watermark(wh)


def test_a_read_ahead_that_fails_lets_go_of_the_warehouse(tmp_path, monkeypatch):
    """The source fails while the warehouse opens in the background: the error is the source's, and the
    connection opened meanwhile is closed (another process can take DuckDB's file lock at once)."""
    from expectations.reasons import SourceError

    src = _duckdb_source(tmp_path / "src.duckdb", 100)
    path = tmp_path / "wh.duckdb"
    _load(f"duckdb:///{path}", src, "first")

    def failing(self, *args, **kwargs):
        raise SourceError("the source went away mid-read")
        yield  # a generator, as the real extract is

    monkeypatch.setattr(SqlSource, "extract", failing)
    with pytest.raises(SourceError, match="went away"):
        _load(f"duckdb:///{path}", src, "second")
    _another_process_can_open(path)


def test_the_opening_thread_checks_the_tables_and_a_failure_there_lets_go_of_the_warehouse(tmp_path,
                                                                                          monkeypatch):
    """While the first chunk is read, the thread that opened the warehouse also runs the load's first
    statements (the DDL check, the watermark read) in the new transaction. A failure there is the load's
    error; the transaction is rolled back and the file let go, and nothing the load read is written."""
    import threading

    from assets.loading import loader

    src = _duckdb_source(tmp_path / "src.duckdb", 100)
    path = tmp_path / "wh.duckdb"
    first = _load(f"duckdb:///{path}", src, "first")
    _duckdb_source(tmp_path / "src.duckdb", 10, first_id=100, day="2026-03-11")

    threads, ensure = [], loader.ensure_tables

    def watched(tx, contract):
        threads.append(threading.current_thread().name)
        return ensure(tx, contract)

    monkeypatch.setattr(loader, "ensure_tables", watched)
    second = _load(f"duckdb:///{path}", src, "second")
    assert threads == ["warehouse-open"] and second.rows_loaded == 10
    assert second.watermark_from == first.watermark_to

    _duckdb_source(tmp_path / "src.duckdb", 10, first_id=110, day="2026-03-12")
    before = snapshot(f"duckdb:///{path}")

    def failing(tx, contract):
        tx.execute("CREATE TABLE raw.half_done (x INTEGER)")  # a write the rollback must undo
        raise Boom("the DDL check failed")

    monkeypatch.setattr(loader, "ensure_tables", failing)
    with pytest.raises(Boom, match="DDL check"):
        _load(f"duckdb:///{path}", src, "third")
    _another_process_can_open(path)
    assert snapshot(f"duckdb:///{path}") == before
    assert not Warehouse(f"duckdb:///{path}").table_exists("raw", "half_done")


def test_a_failed_preflight_does_not_wait_for_a_locked_warehouse(tmp_path, monkeypatch):
    """The warehouse starts opening before the preflight. When the preflight fails while another process
    holds the DuckDB file, the load raises the source's error and the connect retrying in the background
    stops instead of going through its attempts."""
    from expectations.reasons import SourceUnreachable

    src_path = tmp_path / "src.duckdb"
    src = _duckdb_source(src_path, 50)
    path = tmp_path / "wh.duckdb"
    _load(f"duckdb:///{path}", src, "first")  # leaves a remembered watermark: the next load opens early
    src_path.rename(tmp_path / "gone.duckdb")

    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]);"
                               " print('held', flush=True); time.sleep(120)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        attempts, connect_once = [], Warehouse._connect_once

        def counted(self):
            attempts.append(1)
            return connect_once(self)

        monkeypatch.setattr(Warehouse, "_connect_once", counted)
        monkeypatch.setattr(Warehouse, "CONNECT_ATTEMPTS", 12)
        with pytest.raises(SourceUnreachable, match="no database file"):
            _load(f"duckdb:///{path}", src, "second")
        assert 1 <= len(attempts) < 12
    finally:
        holder.kill()
        holder.wait()
