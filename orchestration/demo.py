"""`meshline demo`: the lead handoff flow end to end on the embedded default, through Dagster.

1. simulate N days of marketing automation and CRM with injected faults (kept if already there)
2. load every daily partition with its checks (one Dagster run per day, recorded in MESHLINE_HOME)
3. late updates arrive; the hygiene pass re-runs every partition (token > watermark − lookback)
4. dbt build: staging → lead_handoff mart
5. a per-day table, and where to look next

Running it again is safe: loads are idempotent, so a second run reads, loads and finds the same.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

from orchestration.settings import Settings

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class DayRow:
    day: str
    read: int = 0
    loaded: int = 0
    dead: int = 0
    hygiene_loaded: int = 0  # pass 2: what the re-run found that pass 1 had not (late updates)
    checks: dict[str, str] = field(default_factory=dict)  # check name -> pass | warn | FAIL
    missing: int = 0
    duplicated: int = 0
    late: int = 0
    pending: int = 0


def _out(msg: str = "") -> None:
    print(msg, flush=True)


def run_demo(settings: Settings, *, days: int = 14, leads_per_day: int = 200, seed: int = 7,
             reset: bool = False, end: date | None = None) -> dict:
    """Run the demo; returns a summary (per-day rows, totals, mart counts) for tests."""
    from assets.sandbox import LeadHandoffSandbox

    t0 = time.perf_counter()
    if reset:
        for path in (settings.sandbox_dir, settings.dagster_home):
            shutil.rmtree(path, ignore_errors=True)
        if settings.local:
            wh_path = settings.warehouse_url[len("duckdb:///"):]
            for p in (wh_path, wh_path + ".wal"):
                if os.path.exists(p):
                    os.remove(p)
    settings.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(settings.ensure_local_dagster_home()))

    sandbox = LeadHandoffSandbox(settings.sandbox_dir)
    if sandbox.exists():
        truth = sandbox.ground_truth()
        _out(f"Using the simulated sources in {settings.sandbox_dir} "
             f"({truth['start']} .. {truth['end']}; `meshline demo --reset` starts afresh).")
    else:
        end = end or date.today() - timedelta(days=1)
        truth = sandbox.generate(end=end, days=days, leads_per_day=leads_per_day, seed=seed)
        _out(f"Simulated {truth['days']} days ({truth['start']} .. {truth['end']}) of marketing automation and "
             f"CRM: {truth['mqls']:,} MQLs; injected {len(truth['never_synced'])} never-synced, "
             f"{len(truth['duplicated'])} duplicated, {len(truth['slow'])} slow handoffs, "
             f"{len(truth['malformed'])} malformed rows, {len(truth['late_updates'])} late updates.")

    import dagster as dg

    from orchestration.definitions import DBT_JOB, LEAD_HANDOFF_JOB, build_defs

    defs = build_defs(settings)
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(LEAD_HANDOFF_JOB)
    first = date.fromisoformat(truth["start"])
    keys = [(first + timedelta(days=i)).isoformat() for i in range(truth["days"])]
    rows = {k: DayRow(k) for k in keys}

    def run_day(key: str, label: str) -> None:
        res = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                     run_config=QUIET, tags={"meshline/pass": label})
        for ev in res.get_asset_materialization_events():
            md = ev.materialization.metadata
            if label == "load":
                rows[key].read += md["rows_read"].value
                rows[key].loaded += md["rows_loaded"].value
                rows[key].dead += md["rows_dead_lettered"].value
            else:
                rows[key].hygiene_loaded += md["rows_loaded"].value
        for ev in res.get_asset_check_evaluations():
            rows[key].checks[ev.check_name] = (
                "pass" if ev.passed else "warn" if ev.severity == dg.AssetCheckSeverity.WARN else "FAIL")
        if not res.success:
            failed = [e.step_key for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
            _out(f"  ! run {res.run_id[:8]} for {key} failed at {failed}: see `make dev` → Runs")

    _out(f"\nPass 1 — loading {len(keys)} daily partitions with their checks ({LEAD_HANDOFF_JOB}):")
    for key in keys:
        run_day(key, "load")
        _out(f"  {key}  read {rows[key].read:>5,}  loaded {rows[key].loaded:>5,}  dead-lettered {rows[key].dead:>3}")
    delivered = sandbox.deliver_late()
    _out(f"\n{delivered} late updates arrived in marketing automation (change tokens older than the watermark).")
    _out("Pass 2 — hygiene: every partition again, reading token > watermark − lookback:")
    for key in keys:
        run_day(key, "hygiene")
    _out(f"  {sum(r.hygiene_loaded for r in rows.values())} rows loaded by the hygiene pass")
    _out("dbt build (staging → lead_handoff mart, dbt tests as checks) ...")
    dbt_res = defs.resolve_job_def(DBT_JOB).execute_in_process(instance=instance, raise_on_error=False,
                                                                run_config=QUIET)
    failed_tests = [e.check_name for e in dbt_res.get_asset_check_evaluations() if not e.passed]

    from expectations.registry import Registry
    from orchestration.contracts_cli import build_docs, publish

    publish(Registry(), settings.warehouse_url)
    docs_url = build_docs(Registry(), settings.home)
    mart = _mart_counts(settings)
    for key, counts in mart.items():
        if key in rows:
            for status, n in counts.items():
                setattr(rows[key], status, n)
    _print_table(rows, truth)
    totals = {k: sum(getattr(r, k) for r in rows.values())
              for k in ("read", "loaded", "dead", "hygiene_loaded", "missing", "duplicated", "late", "pending")}
    _out(f"\nTotals: read {totals['read']:,}, loaded {totals['loaded']:,} (+{totals['hygiene_loaded']} late), "
         f"dead-lettered {totals['dead']:,}; "
         f"handoff failures: {totals['missing']} missing, {totals['duplicated']} duplicated, "
         f"{totals['late']} late; dbt {'passed' if dbt_res.success and not failed_tests else 'FAILED: ' + ', '.join(failed_tests)}."
         f" ({time.perf_counter() - t0:.0f} s)")
    _out(f"""
Where to look next
  make dev                    Dagster UI on http://127.0.0.1:3000 over {settings.home}:
                              lineage raw → staging → marts, each run above, checks per partition
  warehouse                   {_safe_url(settings.warehouse_url)}
                              marts.lead_handoff (handoff_status), meshline.dead_letters (redacted),
                              meshline.load_log, meshline.watermarks
  Data Docs                   {docs_url}
                              every contract suite and the latest validation of each check
  contracts                   meshline contracts list | show NAME | test | diff OLD NEW
  ground truth                {sandbox.paths.ground_truth}""")
    return {"rows": rows, "totals": totals, "dbt_success": dbt_res.success and not failed_tests,
            "truth": truth, "docs_url": docs_url}


def _safe_url(url: str) -> str:
    if url.startswith("duckdb"):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _mart_counts(settings: Settings) -> dict[str, dict[str, int]]:
    from assets.loading.warehouse import Warehouse

    out: dict[str, dict[str, int]] = {}
    with Warehouse(settings.warehouse_url).session() as s:
        for day, status, n in s.query(
                "SELECT cast(mql_date AS TEXT), handoff_status, count(*) FROM marts.lead_handoff "
                "GROUP BY 1, 2"):
            if status in ("missing", "duplicated", "late", "pending"):
                out.setdefault(str(day)[:10], {})[status] = int(n)
    return out


def _mark(checks: dict[str, str], name: str) -> str:
    return checks.get(name, "-")


def _print_table(rows: dict[str, DayRow], truth: dict) -> None:
    _out("\nPer day (both boundaries; read/loaded/dead from pass 1, +late from the hygiene pass; checks as of "
         "the last run;\nhandoff statuses from marts.lead_handoff by MQL day):")
    _out("\n day         read  loaded  dead  +late  contract:mkt  contract:crm  reconciliation  missing  dup  late  pending")
    for r in rows.values():
        _out(f" {r.day}  {r.read:>5}  {r.loaded:>6}  {r.dead:>4}  {r.hygiene_loaded:>5}"
             f"  {_mark(r.checks, 'contract_marketing_leads'):>12}"
             f"  {_mark(r.checks, 'contract_crm_leads'):>12}  {_mark(r.checks, 'handoff_reconciliation'):>14}"
             f"  {r.missing:>7}  {r.duplicated:>3}  {r.late:>4}  {r.pending:>7}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="meshline demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=14, help="days to simulate (default 14)")
    p.add_argument("--leads-per-day", type=int, default=200, help="MQLs per day (default 200)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the simulation (default 7)")
    p.add_argument("--reset", action="store_true", help="delete the sandbox, warehouse and Dagster runs first")
    args = p.parse_args(argv)
    if args.days < 2:
        p.error("--days must be at least 2")
    settings = Settings.from_env()
    summary = run_demo(settings, days=args.days, leads_per_day=args.leads_per_day, seed=args.seed,
                       reset=args.reset)
    return 0 if summary["dbt_success"] else 1


if __name__ == "__main__":
    sys.exit(main())
