"""`make bench`'s year: the nightly hygiene at a mid-size revenue organisation's volume.

    1. the sandbox generates a year of all three flows ending yesterday (about 1 M leads, 200 k
       opportunities, 500 k invoice records, 100 k subscriptions, 2 M product plan events)
    2. the history: every day but yesterday loaded into the embedded DuckDB warehouse, boundary by
       boundary, day by day, through the same loader the assets call (as the earlier nights left it;
       not timed)
    3. tonight's `nightly_hygiene` (01:00 UTC): its run requests evaluated from the schedule and each
       executed as the daemon would launch it — a fresh process that loads the code location and runs
       the request's assets with all their checks for its partition, then the dbt build — one after
       another (the warehouse pool serializes them). Timed from the first launch to the last run's end.

Prints one JSON line per run and one for the whole night.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from assets.settings import PROJECT_ROOT, Settings

# A mid-size revenue organisation's year (issue #7, target 5).
LEADS_PER_DAY = 2_740  # 1.0 M leads
DEALS_PER_DAY = 548  # 200 k opportunities
TOUCHES_PER_INVOICE = 7.5  # ≈ 60 k invoices won in a year, with their billing versions ≈ 500 k records
ACCOUNTS_PER_DAY = 274  # 100 k subscriptions
PLAN_CHANGES_MEAN = 24.0  # ≈ 2 M product plan events
TARGET_S = 600.0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate(settings: Settings, end: date, days: int, scale: float) -> dict:
    from assets.sandbox import LeadHandoffSandbox
    from assets.sandbox.quote_to_cash import QuoteToCashSandbox
    from assets.sandbox.subscription_updates import SubscriptionSandbox

    t0 = time.perf_counter()
    root = settings.sandbox_dir
    lh = LeadHandoffSandbox(root).generate(end=end, days=days, leads_per_day=max(1, round(LEADS_PER_DAY * scale)))
    q2c = QuoteToCashSandbox(root / "quote_to_cash").generate(
        end=end, days=days, deals_per_day=max(1, round(DEALS_PER_DAY * scale)), touches_per_invoice=TOUCHES_PER_INVOICE)
    subs = SubscriptionSandbox(root / "subscription_updates").generate(
        end=end, days=days, accounts_per_day=max(1, round(ACCOUNTS_PER_DAY * scale)),
        plan_changes_mean=PLAN_CHANGES_MEAN)
    volumes = source_volumes(settings)
    _say(f"generated {days} days in {time.perf_counter() - t0:.0f} s: "
         + ", ".join(f"{k} {v:,}" for k, v in volumes.items()))
    return {"lead_handoff": lh, "quote_to_cash": q2c, "subscription_updates": subs, "volumes": volumes}


def source_volumes(settings: Settings) -> dict[str, int]:
    import duckdb

    from assets.sandbox import LeadHandoffSandbox
    from assets.sandbox.quote_to_cash import QuoteToCashSandbox
    from assets.sandbox.subscription_updates import SubscriptionSandbox

    lh = LeadHandoffSandbox(settings.sandbox_dir).paths
    q2c = QuoteToCashSandbox(settings.sandbox_dir / "quote_to_cash")
    subs = SubscriptionSandbox(settings.sandbox_dir / "subscription_updates")
    out = {}
    for name, path, key in (("marketing_leads", lh.marketing, "lead_id"), ("crm_leads", lh.crm, "crm_lead_id"),
                            ("crm_opportunities", q2c.crm_path, "opportunity_id"),
                            ("billing_invoices", q2c.billing_path, "invoice_id"),
                            ("billing_subscriptions", subs.billing_path, "subscription_id")):
        con = duckdb.connect(str(path), read_only=True)
        rows, keys = con.execute(f"SELECT count(*), count(DISTINCT {key}) FROM {name}").fetchall()[0]
        out[f"{name}_records"], out[f"{name}_distinct"] = rows, keys
        con.close()
    out["product_plan_events_records"] = sum(sum(1 for line in f.open() if line.strip())
                                             for f in subs.events_dir.glob("*.jsonl"))
    return out


def load_history(settings: Settings, first: date, last: date) -> dict:
    """Every boundary, day by day, first..last, through the loader (what the earlier nights did)."""
    from assets.config import source_specs
    from assets.loading import load_partition
    from assets.loading.watermark import daily_window
    from assets.sources import build_source
    from expectations.registry import Registry

    config = settings.config()
    specs = source_specs(settings.sandbox_dir, config)
    reg = Registry()
    wh = settings.warehouse(config)
    t0 = time.perf_counter()
    rows = 0
    days = (last - first).days + 1
    for b in config.boundaries.values():
        contract = reg.get(b.contract, b.contract_version)
        source = build_source(specs[b.name], system=contract.source_system, table=contract.source_table)
        tb = time.perf_counter()
        for i in range(days):
            key = (first + timedelta(days=i)).isoformat()
            r = load_partition(wh, source, contract, partition_key=key, window=daily_window(key),
                               run_id="history", lookback=timedelta(hours=b.lookback_hours), progress=lambda m: None)
            rows += r.rows_read
        _say(f"  history of {b.name}: {days} days in {time.perf_counter() - tb:.0f} s")
    return {"days": days, "rows_read": rows, "seconds": round(time.perf_counter() - t0, 1)}


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "MESHLINE_HOME": str(settings.home), "MESHLINE_WAREHOUSE_URL": settings.warehouse_url,
            "MESHLINE_CONFIG": str(settings.config_path), "DAGSTER_HOME": str(settings.dagster_home)}


def year_settings(home: Path, first: date) -> Settings:
    """A fresh home whose meshline.yaml is the shipped one with its partitions starting at `first`."""
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    text = (PROJECT_ROOT / "meshline.yaml").read_text()
    config = home / "meshline.yaml"
    config.write_text(text.replace('start_date: "2026-01-01"', f'start_date: "{first.isoformat()}"', 1))
    settings = Settings(home=home, warehouse_url=f"duckdb:///{home / 'warehouse.duckdb'}", config_path=config)
    settings.ensure_local_dagster_home()
    return settings


def run_in_fresh_process(settings: Settings, request: dict) -> dict:
    """`run_request` in a fresh process, as the daemon launches a run worker; its record and wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.year", "_run", json.dumps(request)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, env=_env(settings))
    if proc.returncode != 0:
        raise SystemExit(f"run {request['run_key']} failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": round(time.perf_counter() - t0, 2)}


def night_requests(settings: Settings, night: datetime) -> list[dict]:
    """The nightly_hygiene schedule's run requests for `night`, as the daemon would evaluate them."""
    import dagster as dg

    from orchestration.definitions import build_defs

    defs = build_defs(settings)
    schedule = defs.resolve_schedule_def("nightly_hygiene")
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=night,
                                        repository_def=defs.get_repository_def())
        result = schedule.evaluate_tick(ctx)
    return [{"run_key": r.run_key, "partition_key": r.partition_key,
             "assets": [k.to_user_string() for k in (r.asset_selection or [])], "tags": dict(r.tags)}
            for r in result.run_requests or []]


def _ablate(paths: list[str]) -> None:
    """Switch off speed-only code paths in this process, to measure what each one gains."""
    import gc

    if "gc_freeze" in paths:
        gc.freeze = lambda: None


def run_request(request: dict) -> dict:
    """One run request in this (fresh) process: load the code location, run the request's assets and
    their checks for its partition. What a run worker launched by the daemon does. `request["ablate"]`
    names speed-only paths to switch off first (`_ablate`)."""
    t_start = time.perf_counter()
    _ablate(request.get("ablate", []))
    import dagster as dg

    from orchestration.definitions import defs as code_location

    defs = code_location()
    loaded = time.perf_counter() - t_start  # imports and the definitions' build
    keys = [dg.AssetKey.from_user_string(k) for k in request["assets"]]
    job = dg.define_asset_job("nightly_request", selection=dg.AssetSelection.assets(*keys))
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    res = defs.resolve_job_def("nightly_request").execute_in_process(
        partition_key=request["partition_key"], instance=dg.DagsterInstance.get(), raise_on_error=False,
        tags=request["tags"], run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
    checks = res.get_asset_check_evaluations()
    return {"run_key": request["run_key"], "success": res.success, "code_load_s": round(loaded, 2),
            "checks": len(checks), "checks_failed": sorted(c.check_name for c in checks if not c.passed),
            "rows_read": sum(e.materialization.metadata["rows_read"].value
                             for e in res.get_asset_materialization_events()
                             if "rows_read" in e.materialization.metadata)}


def run_year(home: Path, *, days: int = 365, scale: float = 1.0, out=None) -> dict:
    night = datetime.combine(datetime.now(UTC).date(), datetime.min.time()).replace(hour=1, tzinfo=UTC)
    end = night.date() - timedelta(days=1)
    first = end - timedelta(days=days - 1)
    settings = year_settings(home, first)
    os.environ.update(_env(settings))  # DAGSTER_HOME for the schedule's evaluation in this process
    _say(f"generating a year of the three flows ({first} .. {end}) ...")
    gen = generate(settings, end, days, scale)
    _say("loading the history (every day but yesterday) ...")
    hist = load_history(settings, first, end - timedelta(days=1))
    requests = night_requests(settings, night)
    _say(f"tonight's nightly_hygiene: {len(requests)} runs, each in a fresh process ...")
    runs = []
    t0 = time.perf_counter()
    for req in requests:
        rec = {"measure": "nightly_hygiene_run", **run_in_fresh_process(settings, req)}
        runs.append(rec)
        if out:
            out(rec)
    total = time.perf_counter() - t0
    summary = {"measure": "nightly_hygiene_year", "days": days, "volumes": gen["volumes"],
               "history_rows_read": hist["rows_read"], "history_s": hist["seconds"], "runs": len(runs),
               "runs_failed": sum(not r["success"] for r in runs), "seconds": round(total, 1),
               "target_max_s": TARGET_S, "target_met": total <= TARGET_S and all(r["success"] for r in runs)}
    if out:
        out(summary)
    return summary


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_run":
        print(json.dumps(run_request(json.loads(sys.argv[2]))))
        sys.exit(0)
    print(json.dumps(run_year(PROJECT_ROOT / ".bench" / "year", days=int(sys.argv[1]) if len(sys.argv) > 1 else 365,
                              scale=float(sys.argv[2]) if len(sys.argv) > 2 else 1.0, out=lambda r: print(json.dumps(r)))))
