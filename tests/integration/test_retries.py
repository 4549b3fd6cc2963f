"""Retries where a fault is transient, and none where it is not: the warehouse connection (a DuckDB
file another process has locked, a Postgres that refuses connections for a while)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from assets.loading import Warehouse


def test_a_locked_duckdb_file_is_waited_for(tmp_path):
    path = tmp_path / "wh.duckdb"
    with Warehouse(f"duckdb:///{path}").session() as s:  # create the file
        s.execute("CREATE TABLE t (x INTEGER)")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(2)"),
        str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        with Warehouse(f"duckdb:///{path}").session() as s:
            assert s.scalar("SELECT 42") == 42
        waited = time.perf_counter() - t0
    finally:
        holder.wait(timeout=30)
    assert waited > 0.5, "the connection cannot have succeeded while the other process held the lock"


def test_non_transient_connection_errors_are_not_retried(tmp_path, monkeypatch):
    (tmp_path / "a_directory.duckdb").mkdir()
    calls = []
    wh = Warehouse(f"duckdb:///{tmp_path / 'a_directory.duckdb'}")
    real = wh._connect_once
    monkeypatch.setattr(wh, "_connect_once", lambda: calls.append(1) or real())
    with pytest.raises(Exception):  # noqa: B017 - DuckDB's own error type for "not a database file"
        wh.session().__enter__()
    assert len(calls) == 1


def test_a_refusing_postgres_is_retried_with_backoff_then_given_up(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wh = Warehouse(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/x", connect_attempts=4)
    calls = []
    real = wh._connect_once
    monkeypatch.setattr(wh, "_connect_once", lambda: calls.append(time.perf_counter()) or real())
    with pytest.raises(Exception, match="refused"):
        wh.session().__enter__()
    assert len(calls) == 4
