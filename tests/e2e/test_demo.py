"""The demo, end to end through Dagster and dbt: it finds exactly the injected faults, on DuckDB (the
embedded default) and on Postgres, and running it twice changes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pytest

from assets.loading import Warehouse
from assets.settings import Settings
from orchestration.cli.demo import run_demo
from tests.conftest import SIM_END, TEST_REDACTION_KEY
from tests.helpers import snapshot

pytestmark = pytest.mark.slow


def _found(url: str, flow: str) -> dict[str, set[int]]:
    """Per rule of the flow, the records marts.reconciliation_failures shows failing (and "pending")."""
    out: dict[str, set[int]] = {}
    with Warehouse(url).session() as s:
        for rule, state, key in s.query("SELECT rule, state, record_key FROM marts.reconciliation_failures"
                                        " WHERE flow = ?", (flow,)):
            out.setdefault(rule if state == "failing" else "pending", set()).add(key)
    return out


def _ints(keys: set) -> set[int]:
    return {int(k) for k in keys}


def _assert_exact(url: str, truth: dict) -> None:
    found = _found(url, "lead_handoff")
    assert _ints(found["handed_off"]) == set(truth["never_synced"])
    assert _ints(found["one_crm_lead"]) == set(truth["duplicated"])
    # a late handoff fails the in-time rule as a missing one does
    assert _ints(found["handed_off_in_time"]) == set(truth["never_synced"]) | set(truth["slow"])
    with Warehouse(url).session() as s:
        dead = s.query("SELECT source_system, locator, reason_code FROM meshline.dead_letters"
                       " WHERE flow = 'lead_handoff'")
        companies = dict(s.query("SELECT lead_id, company FROM raw.marketing_leads"))
        pii_cols = s.query("SELECT table_schema, table_name, column_name FROM information_schema.columns"
                           " WHERE table_schema IN ('staging', 'marts')"
                           " AND column_name IN ('email', 'first_name', 'last_name')")
    assert sorted((a, int(json.loads(loc)["row_id"]), r) for a, loc, r in dead) == sorted(
        (m["system"], m["row_id"], m["reason_code"]) for m in truth["malformed"])
    assert all(companies[u["lead_id"]] == u["company"] for u in truth["late_updates"])
    assert pii_cols == []


def _assert_exact_q2c(url: str, truth: dict) -> None:
    found = _found(url, "quote_to_cash")
    with Warehouse(url).session() as s:
        dead = s.query("SELECT source_system, locator, reason_code FROM meshline.dead_letters"
                       " WHERE flow = 'quote_to_cash'")
    assert truth["no_invoice"] and truth["amount_mismatch"] and truth["currency_mismatch"] and truth["no_deal"]
    assert _ints(found["invoiced"]) == set(truth["no_invoice"])
    assert _ints(found["same_amount"]) == set(truth["amount_mismatch"])
    assert _ints(found["same_currency"]) == set(truth["currency_mismatch"])
    assert _ints(found["invoice_has_deal"]) == set(truth["no_deal"])
    assert sorted((a, int(json.loads(loc)["row_id"]), r) for a, loc, r in dead) == sorted(
        (m["system"], m["row_id"], m["reason_code"]) for m in truth["malformed"])


def _assert_exact_subs(url: str, truth: dict) -> None:
    found = _found(url, "subscription_updates")
    with Warehouse(url).session() as s:
        account = dict(s.query("SELECT event_id, account_id FROM raw.product_plan_events"))
        dead = s.query("SELECT source_system, locator, reason_code FROM meshline.dead_letters"
                       " WHERE flow = 'subscription_updates'")
        pii_cols = s.query("SELECT column_name FROM information_schema.columns WHERE table_schema IN"
                           " ('staging', 'marts') AND column_name IN ('actor_email', 'billing_email')")
    assert truth["not_reflected"] and truth["plan_mismatch"]
    # the rule names each account's latest event; billing never applied it, or applied another plan
    assert {account[e] for e in found["plan_applied"]} == set(truth["not_reflected"]) | set(truth["plan_mismatch"])
    located = sorted((a, f"{d['file']}:{d['line']}" if "file" in d else str(d.get("source_position") or d["row_id"]), r)
                     for a, loc, r in dead for d in [json.loads(loc)])
    assert located == sorted((m["system"], str(m.get("position") or m["row_id"]), m["reason_code"])
                             for m in truth["malformed"])
    assert pii_cols == []


# Three days at seed 5 still inject every fault kind of the three flows (5 never synced, 4 duplicated, 4 slow,
# 7 malformed leads; one of each quote-to-cash fault; 4 unreflected and 4 mismatched plans): the test
# asserts each kind is present.
DAYS = 3


@pytest.mark.parametrize("backend", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_demo_finds_exactly_the_injected_handoff_faults(backend, home, request, capsys):
    url = (f"duckdb:///{home / 'warehouse.duckdb'}" if backend == "duckdb" else request.getfixturevalue("pg_url"))
    settings = Settings(home=home, warehouse_url=url, redaction_key=TEST_REDACTION_KEY)
    summary = run_demo(settings, days=DAYS, leads_per_day=60, seed=5, end=SIM_END)
    out = capsys.readouterr().out
    truth = summary["truth"]
    assert summary["dbt_success"]
    assert truth["never_synced"] and truth["duplicated"] and truth["slow"] and truth["malformed"]
    _assert_exact(url, truth)
    totals = summary["totals"]
    assert (totals["handed_off"], totals["one_crm_lead"], totals["handed_off_in_time"]) == (
        len(truth["never_synced"]), len(truth["duplicated"]), len(truth["never_synced"]) + len(truth["slow"]))
    assert totals["hygiene_loaded"] == len(truth["late_updates"])
    # the per-day table and the way on
    for day in ("2026-03-12", "2026-03-14"):
        assert f" {day} " in out
    assert "make dev" in out and "crm_leads" in out and "one_crm_lead" in out
    assert summary["report"] in out and "<svg" in Path(summary["report"]).read_text()  # the report, and where
    assert not re.search(r"@(example\.com|example\.org|mail\.example\.net)", out), "no sandbox e-mail printed"
    # the runs are in the instance the UI reads
    instance = dg.DagsterInstance.get()
    runs = instance.get_runs()
    # three flows, two passes, each a run over every day as a backfill runs a range; one dbt build
    assert len(runs) == 3 * 2 + 1
    ranges = {(r.tags.get("dagster/asset_partition_range_start"), r.tags.get("dagster/asset_partition_range_end"))
              for r in runs if r.job_name != "dbt_build_job"}
    assert ranges == {(truth["start"], truth["end"])}
    assert {r.job_name for r in runs} == {"lead_handoff_job", "quote_to_cash_job", "subscription_updates_job",
                                          "dbt_build_job"}
    q2c_truth = summary["quote_to_cash"]["truth"]
    _assert_exact_q2c(url, q2c_truth)
    assert "quote_to_cash per day" in out
    subs_truth = summary["subscription_updates"]["truth"]
    _assert_exact_subs(url, subs_truth)
    assert "subscription_updates per day" in out and "warehouse_analytics" in out
    # the hygiene scorecard: per flow and day, adding up to the same findings
    with Warehouse(url).session() as s:
        card = {flow: (int(dead), int(fails), int(read)) for flow, dead, fails, read in s.query(
            "SELECT flow, sum(dead_letters), sum(reconciliation_failures), sum(rows_read)"
            " FROM marts.hygiene_scorecard GROUP BY flow")}
        days = s.scalar("SELECT count(DISTINCT partition_key) FROM marts.hygiene_scorecard")
    assert days == DAYS
    # the scorecard sums each rule's failures: a never-synced MQL fails both presence rules
    assert card["lead_handoff"][:2] == (len(truth["malformed"]), 2 * len(truth["never_synced"])
                                        + len(truth["duplicated"]) + len(truth["slow"]))
    assert card["quote_to_cash"][:2] == (len(q2c_truth["malformed"]), sum(
        len(q2c_truth[k]) for k in ("no_invoice", "amount_mismatch", "currency_mismatch", "no_deal")))
    assert card["subscription_updates"][:2] == (len(subs_truth["malformed"]), len(subs_truth["not_reflected"])
                                                + len(subs_truth["plan_mismatch"]))
    for flow in ("lead_handoff", "quote_to_cash", "subscription_updates"):
        assert card[flow][2] == summary[flow]["totals"]["read"]
        assert summary["warehouse_analytics"][flow]["reconciliation_failures"] == card[flow][1]

    if backend == "duckdb":  # running it twice is safe: same warehouse, same findings
        before = snapshot(url)
        again = run_demo(settings, days=DAYS, leads_per_day=60, seed=5, end=SIM_END)
        assert again["totals"]["loaded"] == 0 and again["totals"]["hygiene_loaded"] == 0
        assert snapshot(url) == before
        _assert_exact(url, truth)
