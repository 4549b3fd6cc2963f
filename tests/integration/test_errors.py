"""Errors say what went wrong: the cause, not what broke while cleaning up after it; the file, not only
the errno; one line from the command line, not a traceback; a predictable budget for a warehouse outage."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import timedelta

import psycopg2
import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.watermark import daily_window
from assets.settings import PROJECT_ROOT
from assets.sources import SqlSource
from expectations import load_contract
from expectations.reasons import LoadError
from tests.helpers import day_keys


def _load(url: str, sandbox, **kw):
    key = day_keys(sandbox.ground_truth())[0]
    return load_partition(Warehouse(url), SqlSource(sandbox.marketing_url, "marketing_leads", "marketing_automation"),
                          load_contract("marketing_leads"), partition_key=key, window=daily_window(key),
                          run_id="r", lookback=timedelta(hours=6), **kw)


@pytest.mark.postgres
def test_a_warehouse_lost_mid_load_reports_the_loss_not_the_failed_rollback(pg_url, sandbox):
    def lose_the_server(tx):
        tx.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(psycopg2.OperationalError, match="terminat"):
        _load(pg_url, sandbox, before_commit=lose_the_server)


def test_a_spill_that_fails_names_its_file(sandbox, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from assets.loading.warehouse import Stage

    def full(self, table, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Stage, "MEMORY_ROWS", 5)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(LoadError, match=r"staging rows to .*\.scratch/_ml_stage-.*\.parquet failed: No space left"):
        _load(f"duckdb:///{tmp_path / 'w.duckdb'}", sandbox, chunk_rows=7)


def _meshline(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env=env, timeout=60)


def test_a_warehouse_that_is_not_a_database_is_one_line_not_a_traceback(tmp_path):
    import os

    bogus = tmp_path / "not-a-database.duckdb"
    bogus.write_text("this is not a DuckDB file\n" * 100)
    env = {**os.environ, "MESHLINE_HOME": str(tmp_path), "MESHLINE_WAREHOUSE_URL": f"duckdb:///{bogus}"}
    out = _meshline("dlq", "list", env=env)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and out.stderr.startswith("meshline dlq: the warehouse answered")
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_reader_that_stops_early_gets_no_broken_pipe_traceback(tmp_path):
    import os

    env = {**os.environ, "MESHLINE_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from orchestration.cli import main;"
                             " sys.exit(main(['contracts', 'show', 'crm_leads']) or main(['--help']))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT_ROOT, env=env)
    assert proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    assert proc.wait(60) == 0
    err = proc.stderr.read().decode()
    assert "BrokenPipeError" not in err and "Traceback" not in err


def test_a_refusing_warehouse_is_retried_for_a_predictable_time():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wh = Warehouse(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/x", connect_attempts=5)
    t0 = time.perf_counter()
    with pytest.raises(psycopg2.OperationalError):
        wh.session().__enter__()
    waited = time.perf_counter() - t0
    assert 0.9 * 1.5 <= waited <= 1.1 * 1.5 + 0.5  # the four backoffs before the fifth attempt, each within a tenth
