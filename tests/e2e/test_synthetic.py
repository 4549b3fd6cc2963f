"""Synthetic end-to-end runs: every failure mode of the seed's playbooks is injected into an isolated
sandbox and warehouse, run through the real assets, checks and the compensating sensor's logic, and
detected with no false positives; with a detector switched off, the run reports its mode missed and
the command exits non-zero. Retention prunes old results and the Dagster runs of old synthetic runs."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from assets.hygiene.synthetic import MODES, REMEDIABLE, SYNTHETIC_TAG, prune, run_synthetic
from assets.loading import Warehouse
from assets.remediation.state import now
from assets.settings import Settings
from orchestration.cli.synthetic import main

pytestmark = pytest.mark.slow


def test_every_mode_detected_without_false_positives_and_retention(home):
    settings = Settings.from_env()
    settings.ensure_local_dagster_home()
    instance = dg.DagsterInstance.get()

    @dg.asset
    def unrelated():
        return 1

    kept = dg.materialize([unrelated], instance=instance).run_id  # a run retention must leave alone
    # a run of the synthetic job, as the nightly schedule launches it
    job_run = dg.materialize([unrelated], instance=instance, tags={"meshline/pass": "synthetic"}).run_id
    r = run_synthetic(settings, progress=lambda m: None)
    by_mode = {s.mode: s for s in r.scores}
    assert sorted(by_mode) == sorted(MODES)
    for s in r.scores:
        assert s.injected > 0 and s.detected == s.injected, (s.mode, s)
        assert s.false_positives == 0 and s.seconds_to_detect is not None, (s.mode, s)
        if s.mode in REMEDIABLE:
            assert s.remediated == s.injected, (s.mode, s)
    assert r.missed == [] and not (settings.home / "synthetic" / r.run_id).exists()  # isolated, then removed
    wh = Warehouse(settings.warehouse_url)
    with wh.session() as s:
        assert s.scalar("SELECT count(*) FROM meshline.synthetic_results WHERE run_id = ? AND NOT missed",
                        (r.run_id,)) == len(MODES)
        assert s.query("SELECT status FROM meshline.synthetic_runs") == [("passed",)]
        # the run's own world never touched the main warehouse's data
        assert not wh.table_exists("raw", "crm_leads")
    # the world's runs were recorded in an instance of its own: the real assets' history holds none of them
    assert not [x for x in instance.get_runs() if SYNTHETIC_TAG in x.tags]
    assert instance.get_latest_materialization_event(dg.AssetKey(["raw", "crm_leads"])) is None

    # Retention: a result back-dated past the window goes; then, 100 days on, everything synthetic goes.
    with wh.transaction() as tx:
        tx.execute("INSERT INTO meshline.synthetic_runs VALUES ('syn-old', ?, ?, 9, 9, 0, 'passed')",
                   (now() - timedelta(days=120), now() - timedelta(days=120)))
    assert prune(settings, instance=instance, days=90) == {"results": 0, "runs": 1, "dagster_runs": 0}
    out = prune(settings, instance=instance, days=90, at=now() + timedelta(days=100))
    assert out == {"results": len(MODES), "runs": 1, "dagster_runs": 1}
    assert [x.run_id for x in instance.get_runs()] == [kept] and job_run != kept


def test_a_disabled_detector_is_reported_missed_and_fails_the_command(home, capsys):
    assert main(["run", "--disable", "volume"]) == 1
    out = capsys.readouterr().out
    assert "MISSED: partial_write" in out and "8/9 modes detected" in out
    with Warehouse(Settings.from_env().warehouse_url).session() as s:
        missed = s.query("SELECT mode FROM meshline.synthetic_results WHERE missed")
        status = s.query("SELECT status FROM meshline.synthetic_runs")
    assert missed == [("partial_write",)] and status == [("failed",)]
