"""Backfills in ranges: a run over a range of days (what a backfill launches under the assets'
BackfillPolicy) leaves the warehouse and Dagster's per-partition checks exactly as runs of one day each
leave them, on DuckDB and Postgres; a backfill launched as the UI launches it (GraphQL
`launchPartitionBackfill`) runs through dagster-daemon as one run; `dagster asset materialize
--partition-range` works."""

from __future__ import annotations

import subprocess

import dagster as dg
import pytest

from assets.loading import Warehouse
from assets.settings import PROJECT_ROOT, Settings
from orchestration.cli.demo import QUIET, RANGE_END, RANGE_START, simulate
from orchestration.jobs import flow_job_name
from tests.conftest import SIM_END, TEST_REDACTION_KEY, pg_database
from tests.helpers import day_keys, snapshot

pytestmark = pytest.mark.slow

FLOWS = ("lead_handoff", "quote_to_cash", "subscription_updates")


def _verdicts(results: list[dg.ExecuteInProcessResult]) -> dict[tuple, tuple]:
    """The latest verdict of each (asset, check, partition), as Dagster recorded it."""
    out = {}
    for res in results:
        for e in res.get_asset_check_evaluations():
            out[(e.asset_key.to_user_string(), e.check_name, e.partition)] = (e.passed, e.severity, e.description)
    return out


def _findings(url: str) -> tuple[list, list]:
    with Warehouse(url).session() as s:
        return (s.query("SELECT flow, rule, partition_key, record_key, state FROM meshline.rule_failures"
                        " ORDER BY 1, 2, 3, 4, 5"),
                s.query("SELECT flow, rule, partition_key, checked, failing, pending FROM meshline.rule_findings"
                        " ORDER BY 1, 2, 3"))


@pytest.mark.parametrize("backend", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_ranged_run_leaves_what_runs_of_one_day_each_leave(backend, tmp_path, request):
    if backend == "postgres":
        request.getfixturevalue("pg_available")
    from orchestration.definitions import build_defs

    worlds = {}
    for mode in ("days", "range"):
        if backend == "duckdb":
            url = f"duckdb:///{tmp_path / mode / 'warehouse.duckdb'}"
        else:
            url = request.getfixturevalue("pg_url") if mode == "days" else pg_database(request)
        settings = Settings(home=tmp_path / mode, warehouse_url=url, redaction_key=TEST_REDACTION_KEY)
        _, _, _, (truth, _, _) = simulate(settings, days=3, leads_per_day=60, seed=5, end=SIM_END)
        worlds[mode] = (settings, build_defs(settings), dg.DagsterInstance.ephemeral())
    keys = day_keys(truth)

    settings, defs, instance = worlds["days"]
    by_day = []
    # Twice: a run of one day judges its rules with only the days loaded before it; the second pass
    # judges each day with every day loaded, as the range does (and as the nightly does anyway).
    for _ in range(2):
        for key in keys:
            for flow in FLOWS:
                by_day.append(defs.resolve_job_def(flow_job_name(flow)).execute_in_process(
                    partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET))

    settings, defs, instance = worlds["range"]
    ranged = [defs.resolve_job_def(flow_job_name(flow)).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET,
        tags={RANGE_START: keys[0], RANGE_END: keys[-1]}) for flow in FLOWS]

    # Dagster: each check has one verdict per partition of the range, the one the days' runs gave.
    days_verdicts, range_verdicts = _verdicts(by_day), _verdicts(ranged)
    assert {p for _, _, p in range_verdicts} == set(keys)
    assert len(range_verdicts) == sum(len(r.get_asset_check_evaluations()) for r in ranged)  # no duplicates
    assert range_verdicts == days_verdicts
    assert any(not passed for passed, _, _ in range_verdicts.values())  # the faults are there to be found
    for asset in worlds["range"][1].resolve_asset_graph().get_all_asset_keys():
        if asset.path[0] == "raw":
            assert worlds["range"][2].get_materialized_partitions(asset) == set(keys), asset
            per_day = [m for r in ranged for m in r.asset_materializations_for_node(asset.to_python_identifier())]
            assert sorted(m.partition for m in per_day) == keys
            # each day's materialization carries that day's own load figures
            assert all("rows_read" in m.metadata and "load_id" in m.metadata for m in per_day)

    # The warehouse: the same rows, dead letters, watermarks and findings, record by record.
    days_url, range_url = worlds["days"][0].warehouse_url, worlds["range"][0].warehouse_url
    assert snapshot(range_url, normalize=True) == snapshot(days_url, normalize=True)
    failures, findings = _findings(range_url)
    assert failures and (failures, findings) == _findings(days_url)


def test_a_backfill_launched_as_the_ui_does_runs_as_one_run_through_the_daemon(tmp_path, monkeypatch):
    from datetime import date, timedelta

    from bench.backfill import flow_asset_keys, launch_backfill, wait_backfill, world
    from bench.daemon import BIN, start_daemon
    from bench.year import _env

    first = date.today() - timedelta(days=4)
    keys = [(first + timedelta(days=i)).isoformat() for i in range(4)]
    settings = world(tmp_path / "home", f"duckdb:///{tmp_path / 'home' / 'warehouse.duckdb'}", first, days=4,
                     leads_per_day=40)
    for k, v in _env(settings).items():
        monkeypatch.setenv(k, v)
    daemon = start_daemon(settings)
    try:
        with dg.DagsterInstance.get() as instance:
            done = wait_backfill(instance, launch_backfill(instance, keys[:3], flow_asset_keys(settings)),
                                 timeout_s=600)
            assert done["status"] == "COMPLETED_SUCCESS" and done["runs"] == 1, done
            run = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": done["backfill_id"]}))[0]
            assert (run.tags[RANGE_START], run.tags[RANGE_END]) == (keys[0], keys[2])

            # The CLI over a range: one run, the same per-partition verdicts.
            cli = subprocess.run(
                [str(BIN / "dagster"), "asset", "materialize", "-m",
                 "orchestration.definitions", "--select", ",".join("/".join(p) for p in flow_asset_keys(settings)),
                 "--partition-range", f"{keys[2]}...{keys[3]}"],
                capture_output=True, text=True, cwd=PROJECT_ROOT, env=_env(settings), timeout=600)
            assert cli.returncode == 0, cli.stderr[-3000:]
            cli_run = next(r for r in instance.get_runs(limit=5) if r.tags.get(RANGE_START) == keys[2])
            assert cli_run.tags[RANGE_END] == keys[3]

            checks = _check_keys(settings)
            for r, days in ((run, keys[:3]), (cli_run, keys[2:])):
                evaluated = {(e.dagster_event.event_specific_data.asset_check_key,
                              e.dagster_event.event_specific_data.partition)
                             for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)}
                assert evaluated == {(c, d) for c in checks for d in days}
            for path in flow_asset_keys(settings):
                assert instance.get_materialized_partitions(dg.AssetKey(path)) == set(keys), path
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    with Warehouse(settings.warehouse_url).session() as s:
        judged = s.query("SELECT DISTINCT partition_key FROM meshline.rule_findings ORDER BY 1")
    assert [k for (k,) in judged] == keys


def _check_keys(settings: Settings) -> set[dg.AssetCheckKey]:
    from orchestration.definitions import build_defs

    graph = build_defs(settings).resolve_asset_graph()
    return {k for k in graph.asset_check_keys if k.asset_key.path[0] == "raw"}
