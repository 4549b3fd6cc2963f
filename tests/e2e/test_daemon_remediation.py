"""End to end with a real dagster-daemon over a local instance (SQLite storage, queued runs, the
embedded DuckDB warehouse): CRM leads arrive after their partitions were loaded, the reconciliation
check fails and opens incidents; the compensating-backfill sensor launches the compensating run in the
tick that sees the failure; the run reloads the partition, the leads load, the check passes, the
incident closes with its time to resolve, and the downstream dbt build is requested."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.loading import Warehouse
from assets.sandbox import FaultRates, LeadHandoffSandbox
from assets.settings import PROJECT_ROOT, Settings
from tests.conftest import SIM_END
from tests.helpers import day_keys

pytestmark = pytest.mark.slow

INTERVAL_S = 5


def _state(wh: Warehouse):
    with wh.session() as s:
        rem = s.query("SELECT flow, partition_key, status, attempts, last_run_key FROM meshline.remediations"
                      " ORDER BY partition_key")
        inc = s.query("SELECT partition_key, status, minutes_to_resolve, resolved_by_run FROM meshline.incidents"
                      " WHERE check_name = 'rule_handed_off' ORDER BY partition_key")
    return rem, inc


def test_daemon_compensates_a_late_crm_lead_and_closes_the_incident(home, tmp_path, monkeypatch):
    config = tmp_path / "meshline.yaml"  # the daemon's processes read it through MESHLINE_CONFIG
    config.write_text((PROJECT_ROOT / "meshline.yaml").read_text().replace(
        "sensor_interval_s: 30", f"sensor_interval_s: {INTERVAL_S}", 1))
    monkeypatch.setenv("MESHLINE_CONFIG", str(config))
    settings = Settings.from_env()
    assert settings.config().operations.sensor_interval_s == INTERVAL_S
    dagster_home = settings.ensure_local_dagster_home()
    sandbox = LeadHandoffSandbox(settings.sandbox_dir)
    truth = sandbox.generate(end=SIM_END, days=3, leads_per_day=60, seed=13, faults=FaultRates(
        never_synced=0.08, duplicated=0, slow=0, malformed_marketing=0, malformed_crm=0, late=0))

    from orchestration.definitions import build_defs

    defs = build_defs(settings)
    instance = dg.DagsterInstance.get()
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    for key in day_keys(truth) * 2:  # the second pass judges each day with the CRM fully loaded
        defs.resolve_job_def("lead_handoff_job").execute_in_process(partition_key=key, instance=instance,
                                                                  raise_on_error=False, run_config=quiet)
    wh = Warehouse(settings.warehouse_url)
    _, incidents = _state(wh)
    failing = sorted({p for p, status, _, _ in incidents if status == "open"})
    assert failing, "the sandbox must leave MQLs unsynced past the SLA"
    sandbox.hand_off_late(truth["never_synced"])  # the CRM catches up, with old change tokens

    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                              cwd=PROJECT_ROOT, env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            rem, incidents = _state(wh)
            if rem and all(r[2] == "resolved" for r in rem) and not any(i[1] == "open" for i in incidents):
                break
            time.sleep(2)
        else:
            raise AssertionError(f"not remediated in time: {rem} {incidents}\n"
                                 + (tmp_path / "daemon.log").read_text()[-3000:])
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)

    # One compensating run per failed partition, launched in the tick that saw the failure.
    assert sorted(r[1] for r in rem) == failing and all(r[3] == 1 for r in rem)
    with wh.session() as s:
        audit = s.query("SELECT action, target, logged_at FROM meshline.audit_log WHERE action IN"
                        " ('remediation.open', 'remediation.launch')")
    for part in failing:
        opened = [t for a, tgt, t in audit if a == "remediation.open" and tgt == f"lead_handoff/{part}"]
        launched = [t for a, tgt, t in audit if a == "remediation.launch" and tgt == f"lead_handoff/{part}"]
        assert len(opened) == len(launched) == 1 and opened == launched  # same tick
    runs = {r.tags.get("meshline/remediation"): r for r in instance.get_runs()
            if r.tags.get("meshline/remediation")}
    for _, part, _, _, key in rem:
        run = runs[key]
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["meshline/compensate"] == "true"
        closed = [i for i in incidents if i[0] == part and i[3] == run.run_id]
        assert closed and all(i[1] == "resolved" and i[2] > 0 for i in closed), (part, incidents)
    assert any(k.startswith("dbt:compensate:") for k in runs), "the downstream dbt build was requested"
    with wh.session() as s:
        loaded = s.scalar("SELECT count(*) FROM raw.crm_leads WHERE owner = 'rep_late'")
    assert loaded == len(truth["never_synced"])
