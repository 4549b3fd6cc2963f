"""Asset checks on partitions: contract checks (counts per reason code), lead_handoff's declared rules
(exactly the injected faults), and the preflight that refuses a load when the source lacks a column."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import dagster as dg
import duckdb
import pytest

from assets.loading import Warehouse
from tests.conftest import SIM_END
from tests.helpers import day_keys, lead_handoff_defs, materialize_day, rule_checks, rule_failures, snapshot


def _evaluations(res) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in res.get_asset_check_evaluations()}


def test_checks_report_dead_letters_by_reason_and_reconciliation_finds_exactly_the_faults(warehouse_url, sandbox):
    truth = sandbox.ground_truth()
    keys = day_keys(truth)
    for key in keys:
        materialize_day(warehouse_url, sandbox, key)
    sandbox.deliver_late()
    by_reason: Counter = Counter()
    missing, duplicated = [], []
    for key in keys:
        res = materialize_day(warehouse_url, sandbox, key)  # the hygiene pass: checks see the whole CRM
        ev = _evaluations(res)
        for name in ("contract_marketing_leads", "contract_crm_leads"):
            md = ev[name].metadata
            by_reason.update(md["dead_letters_by_reason"].value)
            assert md["gx_success"].value is True
            assert ev[name].passed == (md["dead_letters"].value == 0)
        rules = rule_checks(res, "marketing_leads")
        found = rule_failures(warehouse_url, "lead_handoff", key)
        for rule in ("handed_off", "one_crm_lead"):
            assert rules[rule].metadata["failing"].value == len(found.get(rule, ()))
            assert rules[rule].passed == (not found.get(rule))
            assert rules[rule].severity == dg.AssetCheckSeverity.ERROR
        missing += [int(k) for k in found.get("handed_off", ())]
        duplicated += [int(k) for k in found.get("one_crm_lead", ())]
    assert by_reason == Counter(m["reason_code"] for m in truth["malformed"])
    assert sorted(missing) == truth["never_synced"] and truth["never_synced"]
    assert sorted(duplicated) == truth["duplicated"] and truth["duplicated"]
    # The late updates arrived after their partition's first load and were picked up by the re-run.
    with Warehouse(warehouse_url).session() as s:
        companies = dict(s.query("SELECT lead_id, company FROM raw.marketing_leads"))
    assert truth["late_updates"]
    for late in truth["late_updates"]:
        assert companies[late["lead_id"]] == late["company"]


def test_a_source_missing_a_contract_column_refuses_the_load_and_writes_nothing(warehouse_url, sandbox):
    key = day_keys(sandbox.ground_truth())[0]
    materialize_day(warehouse_url, sandbox, key)
    before = snapshot(warehouse_url)
    with duckdb.connect(str(sandbox.paths.crm)) as con:
        con.execute("ALTER TABLE crm_leads DROP COLUMN status")
    assets, checks, resources = lead_handoff_defs(warehouse_url, sandbox)
    crm = [a for a in assets if a.key.path[-1] == "crm_leads"]
    res = dg.materialize(crm, partition_key=key, resources=resources, instance=dg.DagsterInstance.ephemeral(),
                         raise_on_error=False)
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert "lacks column(s) ['status']" in str(failure.event_specific_data.error)
    # Not transient: a single attempt, no retries.
    assert not [e for e in res.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert snapshot(warehouse_url) == before


@pytest.mark.parametrize("check_name", ["contract_crm_leads"])
def test_contract_check_breaking_the_slo_is_blocking_error(tmp_path, check_name):
    """The CRM contract is critical: a dead-letter rate over its SLO fails at ERROR, blocking downstream."""
    from assets.sandbox import FaultRates, LeadHandoffSandbox

    sb = LeadHandoffSandbox(tmp_path / "noisy")
    truth = sb.generate(end=SIM_END, days=2,
                        leads_per_day=40, seed=3, faults=FaultRates(malformed_crm=0.3))
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    res = materialize_day(url, sb, day_keys(truth)[1])
    ev = _evaluations(res)[check_name]
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
    assert ev.metadata["dead_letter_rate"].value > ev.metadata["dead_letter_rate_slo"].value
    assert not res.success  # the blocking check failed the run


def test_a_pinned_version_past_its_deprecation_date_fires_a_warning_check(tmp_path):
    import dataclasses
    from datetime import date, timedelta

    from assets.flows.boundary import deprecation_check
    from expectations import load_contract

    parts = dg.DailyPartitionsDefinition(start_date="2026-01-01")
    base = load_contract("crm_leads")
    results = {}
    for label, when in (("past", date.today() - timedelta(days=1)), ("future", date.today() + timedelta(days=30)),
                        ("never", None)):
        contract = dataclasses.replace(base, deprecated_after=when)

        @dg.asset(key=["raw", "crm_leads"], partitions_def=parts)
        def stub() -> None:
            return None

        res = dg.materialize([stub, deprecation_check(contract, parts)], partition_key="2026-03-01",
                             instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
        results[label] = res.get_asset_check_evaluations()[0]
    assert not results["past"].passed and results["past"].severity == dg.AssetCheckSeverity.WARN
    assert "deprecated since" in results["past"].description
    assert results["future"].passed and results["never"].passed


def test_the_contract_check_validates_again_only_when_the_partitions_rows_changed(warehouse_url, sandbox):
    """A re-run that loaded nothing reuses the stored GX verdict for the same rows and rules; a row loaded
    since, or one deleted behind Meshline's back, makes the suite run again over what is there now."""
    key = day_keys(sandbox.ground_truth())[-1]

    def contract_eval():
        ev = _evaluations(materialize_day(warehouse_url, sandbox, key))["contract_crm_leads"]
        return ev.metadata["gx_reused"].value, ev.metadata["rows_validated"].value, ev.metadata["gx_success"].value

    reused, first_rows, ok = contract_eval()
    assert (reused, ok) == (False, True) and first_rows > 0
    assert contract_eval() == (True, first_rows, True)  # nothing changed: the same verdict, not re-run
    with Warehouse(warehouse_url).transaction() as tx:  # "a job" deletes a loaded row of the partition
        victim = tx.scalar("SELECT max(crm_lead_id) FROM raw.crm_leads WHERE updated_at >= ? AND updated_at < ?",
                           (key, (datetime.fromisoformat(key) + timedelta(days=1)).isoformat()))
        tx.execute("DELETE FROM raw.crm_leads WHERE crm_lead_id = ?", (victim,))
    reused, rows, _ = contract_eval()
    # the reload brings the row back (its token is in the window), and the suite runs over the new rows
    assert reused is False and rows == first_rows
    assert contract_eval()[0] is True
