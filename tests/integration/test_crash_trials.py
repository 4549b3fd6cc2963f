"""Crash trials: a load SIGKILLed at random points, the commit included, 20 times on each backend, then
loaded again, leaves exactly what a clean load leaves, with no staged-row file behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.watermark import daily_window
from assets.settings import PROJECT_ROOT
from assets.sources import SqlSource
from expectations import load_contract
from tests.helpers import day_keys, snapshot

pytestmark = pytest.mark.slow

TRIALS = 20
# A load in a child process: its stage spills past 5 rows, so a kill can land while the Parquet file is
# written; it prints "started" before loading and, with a third argument, waits inside its transaction
# after every write (a kill there lands at the commit).
CHILD = """
import sys, time
from assets.loading import Warehouse, load_partition
from assets.loading.warehouse import Stage
from assets.loading.watermark import daily_window
from assets.sources import SqlSource
from expectations import load_contract
Stage.MEMORY_ROWS = 5
url, source_url, key = sys.argv[1:4]
def at_commit(tx):
    print("committing", flush=True)
    time.sleep(float(sys.argv[4]))
print("started", flush=True)
load_partition(Warehouse(url), SqlSource(source_url, "marketing_leads", "marketing_automation"),
               load_contract("marketing_leads"), partition_key=key, window=daily_window(key), run_id="child",
               chunk_rows=7, before_commit=at_commit if len(sys.argv) > 4 else None)
print("done", flush=True)
"""


def _load(url: str, sandbox, key: str) -> None:
    load_partition(Warehouse(url), SqlSource(sandbox.marketing_url, "marketing_leads", "marketing_automation"),
                   load_contract("marketing_leads"), partition_key=key, window=daily_window(key), run_id="next",
                   chunk_rows=7)


def _kill_after(url: str, sandbox, key: str, delay: float | None) -> str:
    """Start a child load and SIGKILL it `delay` seconds after it started (None: while it commits).
    Returns the last thing it said."""
    args = [sys.executable, "-c", CHILD, url, sandbox.marketing_url, key] + (["30"] if delay is None else [])
    proc = subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        said = proc.stdout.readline().strip()
        assert said == "started"
        if delay is None:
            said = proc.stdout.readline().strip()
            assert said == "committing"
        else:
            time.sleep(delay)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    return said


def test_a_load_killed_anywhere_then_run_again_equals_a_clean_run(warehouse_url, sandbox, tmp_path):
    keys = day_keys(sandbox.ground_truth())
    rng = random.Random(20261207)
    clean_url = f"duckdb:///{tmp_path / 'clean.duckdb'}"
    for key in keys[:2]:
        _load(clean_url, sandbox, key)
    clean = snapshot(clean_url, normalize=True)
    # How long a load takes here, so kills spread over all of it (the child's imports included).
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, f"duckdb:///{tmp_path / 'timing.duckdb'}", sandbox.marketing_url,
                    keys[0]], cwd=PROJECT_ROOT, check=True, capture_output=True)
    span = time.perf_counter() - t0
    seen = set()
    for trial in range(TRIALS):
        key = keys[trial % 2]
        at_commit = trial % 5 == 4  # every fifth kill lands inside the transaction, after every write
        seen.add(_kill_after(warehouse_url, sandbox, key, None if at_commit else rng.uniform(0, span)))
        _load(warehouse_url, sandbox, key)  # the re-run after the crash
        for other in keys[:2]:
            _load(warehouse_url, sandbox, other)
        assert snapshot(warehouse_url, normalize=True) == clean, f"trial {trial} ({key})"
    assert "committing" in seen
    assert not list((tmp_path / ".warehouse.duckdb.scratch").glob("*.parquet"))  # DuckDB's spill folder
