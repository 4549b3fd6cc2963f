"""A quarter's backfill as a user launches it from the UI: the GraphQL `launchPartitionBackfill` that a
click on "Materialize all" over 90 daily partitions of the three flows sends, carried out by
`dagster-daemon` (its backfill daemon making the runs under the assets' BackfillPolicy, the queue and the
warehouse pool running them) and timed from the launch to the backfill's completion. Beside it, in the
same bench run: a sample of the same partitions launched one run per partition (what the backfill cost
before its runs took ranges), and the loader alone over all 270 partition loads (the floor).

    python -m bench.backfill [--targets duckdb,postgres]     # JSON lines; `make bench` runs it too
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from assets.settings import PROJECT_ROOT, Settings
from bench.daemon import start_daemon
from bench.year import _env

FLOWS = ("lead_handoff", "quote_to_cash", "subscription_updates")

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
  }
}
"""


def flow_asset_keys(settings: Settings) -> list[list[str]]:
    """The raw assets of every declared flow, as GraphQL asset key paths."""
    config = settings.config()
    return [["raw", b.name] for flow in config.flows for b in config.flow_boundaries(flow)]


def launch_backfill(instance: Any, partitions: list[str], asset_paths: list[list[str]]) -> str:
    """Launch an asset backfill exactly as the UI does (its GraphQL mutation, against the workspace the
    UI serves). Returns the backfill id."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    target = WorkspaceFileTarget([str(PROJECT_ROOT / "workspace.yaml")])
    with WorkspaceProcessContext(instance, target) as process:
        result = execute_dagster_graphql(process.create_request_context(), LAUNCH, variables={"params": {
            "partitionNames": partitions, "assetSelection": [{"path": p} for p in asset_paths],
            "title": f"bench: {len(partitions)} days of {len(asset_paths)} assets"}})
    if result.errors:
        raise RuntimeError(f"launchPartitionBackfill failed: {result.errors}")
    answer = result.data["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"launchPartitionBackfill refused: {answer}")
    return str(answer["backfillId"])


def wait_backfill(instance: Any, backfill_id: str, timeout_s: float = 3600) -> dict:
    """Wait until the backfill and its runs are done: {backfill_id, status, runs, failed_runs}. A run
    fails when a blocking check fails on one of its days (a critical contract breached), as a run of
    that day alone does; its days are loaded and judged all the same."""
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus

    done = {BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED,
            BulkActionStatus.FAILED, BulkActionStatus.CANCELED, BulkActionStatus.FAILING}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        backfill = instance.get_backfill(backfill_id)
        if backfill.status in done:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            if all(r.is_finished for r in runs):
                return {"backfill_id": backfill_id, "status": backfill.status.value, "runs": len(runs),
                        "failed_runs": sum(r.status != dg.DagsterRunStatus.SUCCESS for r in runs)}
        time.sleep(0.5)
    raise RuntimeError(f"backfill {backfill_id} did not finish in {timeout_s:.0f} s")


def daemon_up(instance: Any, started: float, timeout_s: float = 180) -> None:
    """Wait until the daemon's backfill and queue loops have beaten since `started` (time.time()): a
    user's click meets a daemon that is already running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        beats = instance.get_daemon_heartbeats()
        if all(k in beats and beats[k].timestamp >= started for k in ("BACKFILL", "QUEUED_RUN_COORDINATOR")):
            return
        time.sleep(0.5)
    raise RuntimeError(f"dagster-daemon did not start within {timeout_s:.0f} s")


def world(home: Path, warehouse_url: str, first: date, days: int, leads_per_day: int, per_run: int = 0
          ) -> Settings:
    """A home whose flows start on `first`, with `days` simulated days of the three systems (the demo's
    faults), compensation off so only the bench's runs run, and backfill runs of up to `per_run` days (0: one run)."""
    from orchestration.cli.demo import simulate

    home.mkdir(parents=True, exist_ok=True)
    config = home / "meshline.yaml"
    config.write_text((PROJECT_ROOT / "meshline.yaml").read_text()
                      .replace('start_date: "2026-01-01"', f'start_date: "{first.isoformat()}"', 1)
                      .replace("compensation: true", "compensation: false", 1)
                      .replace("backfill_partitions_per_run: 0 ", f"backfill_partitions_per_run: {per_run} ", 1))
    settings = Settings(home=home, warehouse_url=warehouse_url, config_path=config,
                        redaction_key=os.environ.get("MESHLINE_REDACTION_KEY"))
    assert settings.config().operations.backfill_partitions_per_run == per_run
    settings.ensure_local_dagster_home()
    simulate(settings, days=days, leads_per_day=leads_per_day, seed=7, end=first + timedelta(days=days - 1))
    return settings


def loader_alone(settings: Settings, partitions: list[str]) -> float:
    """Every boundary of every flow loaded partition by partition through the loader, no Dagster."""
    from assets.config import source_specs
    from assets.loading import load_partition
    from assets.loading.watermark import daily_window
    from assets.resources import SourcesResource
    from expectations.registry import Registry

    config = settings.config()
    sources = SourcesResource(boundaries=source_specs(settings.sandbox_dir, config))
    reg = Registry()
    wh = settings.warehouse()
    t0 = time.perf_counter()
    for flow in config.flows:
        for b in config.flow_boundaries(flow):
            contract = reg.get(b.contract, b.contract_version)
            source = sources.source(contract)
            for part in partitions:
                load_partition(wh, source, contract, partition_key=part, window=daily_window(part),
                               run_id="bench-loader", lookback=timedelta(hours=b.lookback_hours))
    return round(time.perf_counter() - t0, 2)


def measure(home: Path, target: str, urls: dict[str, str], *, days: int = 90, sample: int = 3,
            leads_per_day: int = 200) -> dict:
    """`urls`: the warehouse of each variant (ranged, per_partition, loader)."""
    import shutil

    import dagster as dg

    first = date.today() - timedelta(days=days)
    partitions = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    out: dict[str, Any] = {"measure": "backfill", "target": target, "days": days, "flows": len(FLOWS),
                           "leads_per_day": leads_per_day}
    for variant in ("ranged", "per_partition", "loader"):
        vhome = home / target / variant
        shutil.rmtree(vhome, ignore_errors=True)
        settings = world(vhome, urls[variant], first, days, leads_per_day,
                         per_run=1 if variant == "per_partition" else 0)
        if variant == "loader":
            out["loader_alone_s"] = loader_alone(settings, partitions)
            continue
        print(f"  {target} {variant}: backfill through dagster-daemon ...", file=sys.stderr, flush=True)
        os.environ.update(_env(settings))  # the workspace the launch loads is this home's
        booted = time.time()
        daemon = start_daemon(settings)
        try:
            with dg.DagsterInstance.get() as instance:
                daemon_up(instance, booted)
                # Dagster's default, one run per partition, is timed on a sample of days (all of them
                # would take many times the ranged backfill) and reported per partition and scaled.
                days_now = partitions if variant == "ranged" else partitions[-sample:]
                paths = flow_asset_keys(settings)
                t0, launched = time.monotonic(), time.time()
                done = wait_backfill(instance, launch_backfill(instance, days_now, paths))
                wall = round(time.monotonic() - t0, 1)
                # The daemon marks a backfill complete on a loop of its own after the last run ends:
                # what the data waited for is the runs.
                ends = [r.end_time for r in instance.get_run_records(
                    filters=dg.RunsFilter(tags={"dagster/backfill": done["backfill_id"]})) if r.end_time]
                done["runs_done_s"] = round(max(ends) - launched, 1) if ends else None
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
            materialized = sum(len(instance.get_materialized_partitions(dg.AssetKey(p)) & set(days_now))
                               for p in paths)
        out[variant] = {**done, "partitions": len(days_now), "wall_s": wall,
                        "asset_partitions_materialized": materialized, "asset_partitions": len(paths) * len(days_now)}
    scaled = out["per_partition"]["wall_s"] / sample * days
    out.update(wall_s=out["ranged"]["wall_s"], per_partition_runs_scaled_s=round(scaled, 1),
               ratio_to_per_partition_runs=round(out["ranged"]["wall_s"] / scaled, 3),
               ratio_to_loader_alone=round(out["ranged"]["wall_s"] / out["loader_alone_s"], 2),
               target_max_s=300.0,
               target_met=out["ranged"]["wall_s"] <= 300 and out["ranged"]["status"] == "COMPLETED_SUCCESS"
               and out["ranged"]["asset_partitions_materialized"] == out["ranged"]["asset_partitions"])
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.run import _backfills

    p = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="duckdb,postgres")
    p.add_argument("--work", type=Path, default=PROJECT_ROOT / ".bench")
    args = p.parse_args(argv)
    for rec in _backfills(args.work.resolve(), args.targets):
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
