"""`make dev` right after `make demo`, as a new user meets it: the demo in a fresh home, then `meshline
dev` (webserver, daemon, code server, the compensating sensor ticking over the demo's failures) watched
for a few sensor ticks. Reported: the process tree's peak memory and process count, the compensating
runs launched and how many ran at once (the warehouse pool allows one), and the failures escalated
without a run because no reload could change them.

    python -m bench.dev [--watch 100]      # one JSON line; `make bench` runs it too
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from assets.settings import PROJECT_ROOT
from bench.daemon import _overlap

BIN = Path(sys.executable).parent
TARGET_MB = 2048


def _tree(root: Any) -> list[Any]:
    import psutil

    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _rss_mb(procs: list[Any]) -> float:
    import psutil

    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def _remediations(home: Path) -> dict[str, int]:
    from assets.loading.warehouse import Warehouse

    wh = Warehouse(f"duckdb:///{home / 'warehouse.duckdb'}")
    with wh.session() as s:
        if not wh.table_exists("meshline", "remediations"):
            return {}
        counts = {str(k): int(n) for k, n in s.query("SELECT status, count(*) FROM meshline.remediations GROUP BY 1")}
        counts["unfixable_pages"] = int(s.scalar(
            "SELECT count(*) FROM meshline.alerts WHERE kind = 'remediation_unfixable'") or 0)
    return counts


def measure(home: Path, watch_s: float = 100.0) -> dict:
    import psutil

    shutil.rmtree(home, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHLINE_", "DAGSTER_"))}
    env["MESHLINE_HOME"] = str(home)
    print("  meshline demo in a fresh home ...", file=sys.stderr, flush=True)
    demo = subprocess.run([str(BIN / "meshline"), "demo"], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env)
    if demo.returncode not in (0, 1):  # 1: dbt tests found what the demo injects; anything else is a crash
        raise SystemExit(f"meshline demo failed:\n{demo.stderr[-2000:]}")
    print(f"  meshline dev, watched for {watch_s:.0f} s ...", file=sys.stderr, flush=True)
    dev = subprocess.Popen([str(BIN / "meshline"), "dev", "--port", "3917"], cwd=PROJECT_ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    root = psutil.Process(dev.pid)
    peak_mb, peak_procs = 0.0, 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < watch_s:
            procs = _tree(root)
            peak_mb, peak_procs = max(peak_mb, _rss_mb(procs)), max(peak_procs, len(procs))
            time.sleep(1.0)
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    import dagster as dg

    from assets.remediation.compensation import REMEDIATION_TAG

    with dg.DagsterInstance.get() as instance:
        records = [r for r in instance.get_run_records() if REMEDIATION_TAG in r.dagster_run.tags]
        at_once = _overlap(instance, [r.dagster_run.run_id for r in records])
    state = _remediations(home)
    return {"measure": "quiet_dev", "watched_s": watch_s, "peak_tree_rss_mb": round(peak_mb),
            "peak_processes": peak_procs, "compensating_runs": len(records), "max_runs_at_once": at_once,
            "remediations": state, "target_max_rss_mb": TARGET_MB,
            "target_met": peak_mb <= TARGET_MB and at_once <= 1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dev", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--watch", type=float, default=100.0, help="seconds to watch `meshline dev` (default 100)")
    p.add_argument("--home", type=Path, default=PROJECT_ROOT / ".bench" / "dev")
    args = p.parse_args(argv)
    print(json.dumps({"tool": "meshline", **measure(args.home.resolve(), args.watch)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
