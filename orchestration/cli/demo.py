"""`meshline demo`: the four revenue flows end to end on the embedded default, through Dagster.

1. simulate N days of marketing automation and the CRM (databases), billing (an HTTP API on 127.0.0.1)
   and product events (JSONL files dropped in a folder), with injected faults (kept if already there)
2. load every daily partition of lead_handoff, quote_to_cash and subscription_updates with their
   checks: one Dagster run per flow over all the days, as a backfill runs them (each day loaded and
   judged as a run of its own would; recorded in MESHLINE_HOME)
3. late updates arrive; the hygiene pass re-runs every partition (token > watermark − lookback)
4. dbt build: staging → marts.reconciliation_failures (what the flows' rules found, record by record)
   and warehouse_analytics' hygiene_scorecard
5. a per-day table for each flow, and where to look next

Running it again is safe: loads are idempotent, so a second run reads, loads and finds the same.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from assets.loading.redaction import without_secrets
from assets.settings import Settings

# Failed runs are summed up in one line each (with the run id to open in the UI), not as stack traces.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# The tags a backfill's run over a range of partitions carries (Dagster's own).
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass
class DayRow:
    day: str
    read: int = 0
    loaded: int = 0
    dead: int = 0
    hygiene_loaded: int = 0  # pass 2: what the re-run found that pass 1 had not (late updates)
    checks: dict[str, str] = field(default_factory=dict)  # check name -> pass | warn | FAIL
    statuses: dict[str, int] = field(default_factory=dict)  # mart status -> count


@dataclass(frozen=True)
class FlowView:
    flow: str
    job: str
    checks: tuple[tuple[str, str], ...]  # (check name, column label)
    statuses: tuple[str, ...]  # the flow's rules (what each finds failing), and pending


def flow_views(settings: Settings) -> list[FlowView]:
    """The shipped flows the sandbox simulates, with their contract and rule checks as meshline.yaml
    declares them."""
    from orchestration.jobs import flow_job_name

    config = settings.config()
    views = []
    for flow in ("lead_handoff", "quote_to_cash", "subscription_updates"):
        contracts = [(f"contract_{b.contract}", b.name) for b in config.flow_boundaries(flow)]
        rules = [r.name for r in config.rules.get(flow, [])]
        views.append(FlowView(flow, flow_job_name(flow), (*contracts, *((f"rule_{r}", r) for r in rules)),
                              (*rules, "pending")))
    return views


def _out(msg: str = "") -> None:
    print(msg, flush=True)


def simulate(settings: Settings, *, days: int, leads_per_day: int, seed: int, end: date | None = None
             ) -> tuple[Any, Any, Any, tuple[dict, dict, dict]]:
    """The three simulated systems under `settings.sandbox_dir` (made once, then reused) and their ground
    truths: (lead handoff, quote-to-cash, subscription updates sandboxes, (their truths))."""
    from assets.sandbox import LeadHandoffSandbox
    from assets.sandbox.quote_to_cash import QuoteToCashSandbox
    from assets.sandbox.subscription_updates import SubscriptionSandbox

    sandbox = LeadHandoffSandbox(settings.sandbox_dir)
    q2c = QuoteToCashSandbox(settings.sandbox_dir / "quote_to_cash")
    subs = SubscriptionSandbox(settings.sandbox_dir / "subscription_updates")
    if sandbox.exists() and q2c.exists() and subs.exists():
        truth, q2c_truth, subs_truth = sandbox.ground_truth(), q2c.ground_truth(), subs.ground_truth()
        _out(f"Using the simulated sources in {settings.sandbox_dir} "
             f"({truth['start']} .. {truth['end']}; `meshline demo --reset` starts afresh).")
    else:
        end = end or date.today() - timedelta(days=1)
        truth = sandbox.generate(end=end, days=days, leads_per_day=leads_per_day, seed=seed)
        q2c_truth = q2c.generate(end=end, days=days, deals_per_day=leads_per_day, seed=seed)
        subs_truth = subs.generate(end=end, days=days, accounts_per_day=max(10, leads_per_day // 2), seed=seed)
        _out(f"Simulated {truth['days']} days ({truth['start']} .. {truth['end']}) with injected faults:\n"
             f"  lead_handoff   {truth['mqls']:,} MQLs; {len(truth['never_synced'])} never synced, "
             f"{len(truth['duplicated'])} duplicated, {len(truth['slow'])} slow handoffs, "
             f"{len(truth['malformed'])} malformed rows, {len(truth['late_updates'])} late updates\n"
             f"  quote_to_cash  {q2c_truth['deals']:,} deals, {q2c_truth['closed_won']} won; "
             f"{len(q2c_truth['no_invoice'])} never invoiced, {len(q2c_truth['amount_mismatch'])} amount and "
             f"{len(q2c_truth['currency_mismatch'])} currency mismatches, {len(q2c_truth['no_deal'])} invoices "
             f"with no deal, {len(q2c_truth['malformed'])} malformed rows\n"
             f"  subscription_updates  {subs_truth['events']:,} plan events of {subs_truth['accounts']:,} accounts; "
             f"{len(subs_truth['not_reflected'])} never reflected in billing, {len(subs_truth['plan_mismatch'])} "
             f"billed on another plan, {subs_truth['duplicate_deliveries']} events delivered twice, "
             f"{len(subs_truth['malformed'])} malformed lines or records")
    return sandbox, q2c, subs, (truth, q2c_truth, subs_truth)


def run_demo(settings: Settings, *, days: int = 14, leads_per_day: int = 200, seed: int = 7,
             reset: bool = False, end: date | None = None) -> dict:
    """Run the demo; returns a summary (per flow: per-day rows, totals, ground truth) for tests."""
    t0 = time.perf_counter()
    if reset:
        for path in (settings.sandbox_dir, settings.dagster_home, settings.home / "gx"):
            shutil.rmtree(path, ignore_errors=True)
        if settings.local:
            wh_path = settings.warehouse_url[len("duckdb:///"):]
            for p in (wh_path, wh_path + ".wal"):
                if os.path.exists(p):
                    os.remove(p)
    settings.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(settings.ensure_local_dagster_home()))

    sandbox, q2c, subs, (truth, q2c_truth, subs_truth) = simulate(
        settings, days=days, leads_per_day=leads_per_day, seed=seed, end=end)

    import dagster as dg

    from orchestration.definitions import build_defs
    from orchestration.jobs import DBT_JOB

    defs = build_defs(settings)
    instance = dg.DagsterInstance.get()
    first = date.fromisoformat(truth["start"])
    keys = [(first + timedelta(days=i)).isoformat() for i in range(truth["days"])]
    views = flow_views(settings)
    rows = {v.flow: {k: DayRow(k) for k in keys} for v in views}

    def run_days(view: FlowView, label: str) -> None:
        """One run of the flow over every day, as a backfill runs a range: each day loads and is judged
        as in a run of its own, with its own materialization and check verdicts."""
        res = defs.resolve_job_def(view.job).execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET,
            tags={"meshline/pass": label, RANGE_START: keys[0], RANGE_END: keys[-1]})
        for mat in res.get_asset_materialization_events():
            md, row = mat.materialization.metadata, rows[view.flow][str(mat.partition)]

            def count(name: str, md: Any = md) -> int:
                return int(md[name].value)

            if label == "load":
                row.read += count("rows_read")
                row.loaded += count("rows_loaded")
                row.dead += count("rows_dead_lettered")
            else:
                row.hygiene_loaded += count("rows_loaded")
        for check in res.get_asset_check_evaluations():
            rows[view.flow][str(check.partition)].checks[check.check_name] = (
                "pass" if check.passed else "warn" if check.severity == dg.AssetCheckSeverity.WARN else "FAIL")
        if not res.success:
            failed = sorted({str(e.step_key) for e in res.all_events if e.event_type_value == "STEP_FAILURE"})
            _out(f"  ! {view.job} (run {res.run_id[:8]}) failed at {failed}: see `make dev` → Runs")

    # The demo's runs all execute in this process: the warehouse stays open between them (dbt, a process
    # of its own, runs after).
    with settings.warehouse().held():
        _out(f"\nPass 1 — loading {len(keys)} daily partitions of each flow with their checks:")
        for view in views:
            run_days(view, "load")
        for key in keys:
            _out(f"  {key}  " + "   ".join(
                f"{v.flow}: read {rows[v.flow][key].read:>5,} loaded {rows[v.flow][key].loaded:>5,} "
                f"dead {rows[v.flow][key].dead:>3}" for v in views))
        delivered = sandbox.deliver_late()
        _out(f"\n{delivered} late updates arrived in marketing automation (change tokens older than the watermark).")
        _out("Pass 2 — hygiene: every partition again, reading token > watermark − lookback:")
        for view in views:
            run_days(view, "hygiene")
    _out("  " + ", ".join(f"{v.flow}: {sum(r.hygiene_loaded for r in rows[v.flow].values())} rows loaded"
                          for v in views))
    _out("dbt build (staging → marts, dbt tests as checks) ...")
    dbt_res = defs.resolve_job_def(DBT_JOB).execute_in_process(instance=instance, raise_on_error=False,
                                                                run_config=QUIET)
    failed_tests = [e.check_name for e in dbt_res.get_asset_check_evaluations() if not e.passed]

    from assets.catalog import build_docs, publish
    from expectations.registry import Registry

    publish(Registry(), settings.warehouse_url)
    docs_url = build_docs(Registry(), settings.home)
    summary: dict = {"dbt_success": dbt_res.success and not failed_tests, "docs_url": docs_url}
    for view in views:
        for day, status, n in _query(
                settings, "SELECT partition_key, CASE WHEN state = 'failing' THEN rule ELSE state END, count(*)"
                          " FROM marts.reconciliation_failures WHERE flow = ? GROUP BY 1, 2", (view.flow,)):
            if str(day)[:10] in rows[view.flow]:
                rows[view.flow][str(day)[:10]].statuses[status] = int(n)
        _print_table(view, rows[view.flow])
        totals = {k: sum(getattr(r, k) for r in rows[view.flow].values())
                  for k in ("read", "loaded", "dead", "hygiene_loaded")}
        for st in view.statuses:
            totals[st] = sum(r.statuses.get(st, 0) for r in rows[view.flow].values())
        summary[view.flow] = {"rows": rows[view.flow], "totals": totals}
        _out(f"  totals: read {totals['read']:,}, loaded {totals['loaded']:,} (+{totals['hygiene_loaded']} by "
             f"the hygiene pass), dead-lettered {totals['dead']:,}; "
             + ", ".join(f"{st} {totals[st]}" for st in view.statuses))
    summary["lead_handoff"]["truth"], summary["quote_to_cash"]["truth"] = truth, q2c_truth
    summary["subscription_updates"]["truth"] = subs_truth
    summary["warehouse_analytics"] = _scorecard(settings)
    # the lead_handoff summary at the top level, as before
    summary.update(rows=rows["lead_handoff"], totals=summary["lead_handoff"]["totals"], truth=truth)
    _out(f"\ndbt {'passed' if summary['dbt_success'] else 'FAILED: ' + ', '.join(failed_tests)}. "
         f"({time.perf_counter() - t0:.0f} s)")
    from assets.hygiene.report import write_report

    report = write_report(settings, settings.home / "report.html")
    summary["report"] = str(report)
    _out(f"""
Where to look next
  make dev                    Dagster UI on http://127.0.0.1:3000 over {settings.home}:
                              lineage raw → staging → marts, each run above, checks per partition
  warehouse                   {without_secrets(settings.warehouse_url)}
                              marts.reconciliation_failures (each record a rule of meshline.yaml finds),
                              marts.hygiene_scorecard, meshline.dead_letters (redacted),
                              meshline.load_log, meshline.watermarks, meshline.contracts
  Data Docs                   {docs_url}
                              every contract suite and the latest validation of each check
  report                      {report}
                              dead letters, reconciliation failures, freshness, MTTR, synthetic runs
                              (offline HTML; `meshline report --out PATH` writes it again)
  operations                  meshline dlq list | incidents | synthetic run | audit
  contracts                   meshline contracts list | show NAME | test | diff OLD NEW
  ground truth                {sandbox.paths.ground_truth}
                              {q2c.truth_path}
                              {subs.truth_path}""")
    return summary


def _scorecard(settings: Settings) -> dict[str, dict[str, Any]]:
    """warehouse_analytics: marts.hygiene_scorecard summed per flow, printed as the fourth flow's table."""
    rows = _query(settings, "SELECT flow, sum(rows_read), sum(dead_letters), sum(reconciliation_failures),"
                            " max(freshness_lag_hours), count(*) FROM marts.hygiene_scorecard GROUP BY flow ORDER BY flow")
    card: dict[str, dict[str, Any]] = {str(f): {"rows_read": int(r or 0), "dead_letters": int(d or 0), "reconciliation_failures": int(x or 0),
                     "worst_freshness_lag_hours": None if lag is None else round(float(lag), 1), "days": int(n)}
            for f, r, d, x, lag, n in rows}
    _out("\nwarehouse_analytics — marts.hygiene_scorecard per flow (volume, dead letters, reconciliation "
         "failures, worst freshness lag; volume, freshness and partition-gap checks ran on every boundary):")
    _out(f" {'flow':<22} {'days':>4} {'read':>8} {'dead':>5} {'dead %':>7} {'recon fails':>11} {'worst lag h':>11}")
    for f, c in card.items():
        rate = c["dead_letters"] / c["rows_read"] if c["rows_read"] else 0.0
        lag = "-" if c["worst_freshness_lag_hours"] is None else f"{c['worst_freshness_lag_hours']:.1f}"
        _out(f" {f:<22} {c['days']:>4} {c['rows_read']:>8,} {c['dead_letters']:>5} {rate:>7.2%} "
             f"{c['reconciliation_failures']:>11} {lag:>11}")
    return card


def _query(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[tuple]:
    from assets.loading.warehouse import Warehouse

    with Warehouse(settings.warehouse_url, redaction_key=settings.key).session() as s:
        return [tuple(r) for r in s.query(sql, params)]


def _print_table(view: FlowView, rows: dict[str, DayRow]) -> None:
    _out(f"\n{view.flow} per day (read/loaded/dead from pass 1, +late from the hygiene pass; checks as of "
         "the last run; #rule: the records each rule finds failing, from marts.reconciliation_failures):")
    head = (f" {'day':<10}  {'read':>5}  {'loaded':>6}  {'dead':>4}  {'+late':>5}  "
            + "  ".join(f"{label:>12}" for _, label in view.checks) + "  "
            + "  ".join(f"{_label(st):>{max(8, len(_label(st)))}}" for st in view.statuses))
    _out(head)
    for r in rows.values():
        _out(f" {r.day}  {r.read:>5}  {r.loaded:>6}  {r.dead:>4}  {r.hygiene_loaded:>5}  "
             + "  ".join(f"{r.checks.get(name, '-'):>12}" for name, _ in view.checks) + "  "
             + "  ".join(f"{r.statuses.get(st, 0):>{max(8, len(_label(st)))}}" for st in view.statuses))


def _label(status: str) -> str:
    """A rule's column counts the records it finds failing (`#rule`), beside its check's verdict."""
    return status if status == "pending" else f"#{status}"


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
