"""A flow's daily partition as a user gets it from the UI or a schedule: queued, dequeued by
`dagster-daemon`, launched as a run worker and executed to success. Timed from the run's creation to its
end as Dagster records them, with the shipped executor and with Dagster's default (multiprocess, a
process per step) side by side in one bench run, beside the loader alone for the same partition (the
floor: what the run does that is not Dagster).

    python -m bench.daemon [--rounds 3]       # one JSON line; `make bench` runs it too
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from assets.settings import PROJECT_ROOT, Settings
from bench.run import _median
from bench.year import _env

FLOW = "lead_handoff"
BIN = Path(sys.executable).parent


def _world(home: Path, executor: str, first: date) -> Settings:
    text = (PROJECT_ROOT / "meshline.yaml").read_text()
    assert "kind: in_process" in text
    config = home / f"meshline-{executor}.yaml"
    config.write_text(text.replace("kind: in_process", f"kind: {executor}", 1)
                      .replace('start_date: "2026-01-01"', f'start_date: "{first.isoformat()}"', 1)
                      .replace("compensation: true", "compensation: false", 1))  # only the bench's runs
    return Settings(home=home, warehouse_url=f"duckdb:///{home / 'warehouse.duckdb'}", config_path=config)


def _launch(settings: Settings, partition: str) -> str:
    run_id = str(uuid.uuid4())
    proc = subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", str(PROJECT_ROOT / "workspace.yaml"),
                           "-j", f"{FLOW}_job", "--run-id", run_id, "--tags",
                           json.dumps({"dagster/partition": partition})],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, env=_env(settings))
    if proc.returncode != 0:
        raise SystemExit(f"dagster job launch failed:\n{proc.stderr[-2000:]}")
    return run_id


def _wait(instance: Any, run_id: str, timeout_s: float = 600) -> tuple[float, bool]:
    """(seconds from the run's creation to its end, success)."""
    from dagster import DagsterRunStatus

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rec = instance.get_run_record_by_id(run_id)
        if rec and rec.dagster_run.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE,
                                              DagsterRunStatus.CANCELED):
            return round(rec.end_time - rec.create_timestamp.timestamp(), 3), \
                rec.dagster_run.status == DagsterRunStatus.SUCCESS
        time.sleep(0.2)
    raise SystemExit(f"run {run_id} did not finish in {timeout_s:.0f} s")


def _overlap(instance: Any, run_ids: list[str]) -> int:
    """The most of these runs that were ever running at once (from Dagster's start and end times; a run
    still going counts until now, one never started not at all)."""
    records = (instance.get_run_record_by_id(i) for i in run_ids)
    spans = [(r.start_time, r.end_time or time.time()) for r in records if r and r.start_time]
    return max((sum(1 for s, e in spans if s <= t < e) for t, _ in spans), default=0)


def start_daemon(settings: Settings) -> subprocess.Popen[bytes]:
    """`dagster-daemon run` over the workspace, in the environment of `settings`' home."""
    return subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
                            cwd=PROJECT_ROOT, env=_env(settings), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def daemon_runs(settings: Settings, partition: str, rounds: int, burst: list[str]) -> dict:
    """`rounds` runs of the partition launched through the daemon: the first loads the day, the rest are
    the re-runs a nightly or a compensation makes. Then `burst`'s partitions queued at once, as a sensor
    or a backfill queues them: on DuckDB the warehouse pool must let one run at a time write."""
    import dagster as dg

    settings.ensure_local_dagster_home()
    daemon = start_daemon(settings)
    try:
        os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
        with dg.DagsterInstance.get() as instance:
            walls, ok = [], True
            for _ in range(rounds + 1):
                wall, success = _wait(instance, _launch(settings, partition))
                walls.append(wall)
                ok = ok and success
            t0 = time.monotonic()
            ids = [_launch(settings, p) for p in burst]
            ok = all([_wait(instance, i)[1] for i in ids]) and ok
            burst_s = round(time.monotonic() - t0, 1)
            at_once = _overlap(instance, ids)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    return {"first_s": walls[0], "rerun_s": _median(walls[1:]), "runs_s": walls, "success": ok,
            "burst_runs": len(burst), "burst_s": burst_s, "burst_max_running_at_once": at_once}


def loader_alone(settings: Settings, partition: str, rounds: int) -> float:
    """The same partition's two loads through the loader, no Dagster: the floor a run cannot beat."""
    from assets.config import source_specs
    from assets.loading import load_partition
    from assets.loading.watermark import daily_window
    from assets.resources import SourcesResource
    from expectations.registry import Registry

    config = settings.config()
    specs = source_specs(settings.sandbox_dir, config)
    sources = SourcesResource(boundaries=specs)
    reg = Registry()
    wh = settings.warehouse()
    walls = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for b in config.flow_boundaries(FLOW):
            contract = reg.get(b.contract, b.contract_version)
            load_partition(wh, sources.source(contract), contract, partition_key=partition,
                           window=daily_window(partition), run_id="bench-loader",
                           lookback=timedelta(hours=b.lookback_hours))
        walls.append(time.perf_counter() - t0)
    return _median(walls)


def measure(home: Path, rounds: int = 3) -> dict:
    from assets.sandbox import LeadHandoffSandbox

    end = date.today() - timedelta(days=1)
    first = end - timedelta(days=6)
    partition = end.isoformat()
    out: dict[str, Any] = {"measure": "daemon_partition_run", "flow": FLOW, "partition": partition}
    for executor in ("in_process", "multiprocess"):  # the shipped one, then Dagster's default
        vhome = home / executor
        if vhome.exists():
            import shutil

            shutil.rmtree(vhome)
        vhome.mkdir(parents=True)
        settings = _world(vhome, executor, first)
        truth = LeadHandoffSandbox(settings.sandbox_dir).generate(end=end, days=7, leads_per_day=2_740, seed=7)
        out["mqls_per_day"] = truth["mqls"] // 7
        print(f"  {executor}: {rounds + 1} runs of {FLOW} {partition} through dagster-daemon ...",
              file=sys.stderr, flush=True)
        burst = [(end - timedelta(days=k)).isoformat() for k in range(1, 5)]
        out[executor] = daemon_runs(settings, partition, rounds, burst)
        if executor == "in_process":
            out["loader_alone_s"] = loader_alone(settings, partition, rounds)
    shipped, default = out["in_process"]["rerun_s"], out["multiprocess"]["rerun_s"]
    out.update(wall_s=shipped, dagster_default_s=default, ratio_to_dagster_default=round(shipped / default, 3),
               ratio_to_loader_alone=round(shipped / out["loader_alone_s"], 2), target_max_s=8.0,
               target_met=shipped <= 8.0 and out["in_process"]["success"],
               pool_held=all(out[e]["burst_max_running_at_once"] == 1 for e in ("in_process", "multiprocess")))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.daemon", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="re-runs per executor after the first (default 3)")
    p.add_argument("--home", type=Path, default=PROJECT_ROOT / ".bench" / "daemon")
    args = p.parse_args(argv)
    print(json.dumps({"tool": "meshline", **measure(args.home.resolve(), args.rounds)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
