"""Declared reconciliation rules (assets.flows.rules), each kind over data loaded by the real loader, on
DuckDB and Postgres: every injected fault is found, nothing else is, and a record still inside its SLA
is pending, not failing. Rules that cannot run are refused with the key and the reason."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from assets.flows.rules import RuleError, evaluate, parse_rule
from assets.loading import Warehouse, load_partition
from assets.loading.watermark import daily_window
from assets.sources import FileDropSource
from expectations.contract import parse_contract
from tests.conftest import TEST_REDACTION_KEY

D = datetime(2026, 3, 1)
DAY = "2026-03-01"


def _contract(name, key, columns):
    return parse_contract({
        "contract": name, "version": "1.0.0", "severity": "standard",
        "boundary": {"flow": "billing_sync", "source_system": "s", "table": name},
        "idempotency_key": key, "change_token": "updated_at", "owners": {"contract": "o@meshline.example"},
        "columns": {key: {"type": "integer", "required": True}, **columns,
                    "updated_at": {"type": "timestamp", "required": True}}}, f"{name}.yml")


DEALS = _contract("deals", "deal_id", {"stage": {"type": "string"}, "amount": {"type": "number"},
                                       "currency": {"type": "string"}, "plan": {"type": "string"},
                                       "closed_at": {"type": "timestamp"}})
INVOICES = _contract("invoices", "invoice_id", {"deal_id": {"type": "integer"}, "amount": {"type": "number"},
                                                "currency": {"type": "string"}, "plan_code": {"type": "string"},
                                                "issued_at": {"type": "timestamp"}})
EVENTS = _contract("plan_events", "event_id", {"subscription_id": {"type": "integer"}, "plan": {"type": "string"},
                                               "event_at": {"type": "timestamp"}})
SUBS = _contract("subscriptions", "subscription_id", {"plan": {"type": "string"}})
CONTRACTS = {c.name: c for c in (DEALS, INVOICES, EVENTS, SUBS)}


def _t(hours: float) -> str:
    return (D + timedelta(hours=hours)).isoformat()


def _deals():
    out = []
    for i in range(1, 11):  # won deals 1..10 closed on D; deal 10 late in the day (still within its SLA)
        out.append({"deal_id": i, "stage": "won", "amount": 100.0 * i, "currency": "USD", "plan": "pro",
                    "closed_at": _t(20 if i == 10 else i), "updated_at": _t(20 if i == 10 else i)})
    out.append({"deal_id": 11, "stage": "lost", "amount": 5.0, "currency": "USD", "plan": "pro",
                "closed_at": _t(3), "updated_at": _t(3)})  # filtered out: not won
    return out


def _invoices():
    out = []
    for n, deal in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 8, 99], start=1):  # 8 twice; 9, 10 never; 99 no deal of ours
        amount = 100.0 * deal
        amount += {2: 5.0, 3: 0.001}.get(deal, 0)  # 2 differs; 3 within the tolerance
        if deal == 8:
            amount = 400.0  # two invoices of 400 for deal 8's 800: each pair disagrees
        out.append({"invoice_id": n, "deal_id": deal, "amount": amount, "currency": "usd" if deal == 4 else "USD",
                    "plan_code": "BASIC" if deal == 5 else "PRO", "issued_at": _t(10), "updated_at": _t(36)})
    return out


def _events():
    rows = [(1, 1, "basic", 8), (2, 1, "pro", 9), (3, 2, "basic", 8), (4, 3, "pro", 22), (5, 4, "pro", 7)]
    return [{"event_id": e, "subscription_id": s, "plan": p, "event_at": _t(h), "updated_at": _t(h)} for e, s, p, h in rows]


def _subs():
    return [{"subscription_id": s, "plan": p, "updated_at": _t(23)} for s, p in ((1, "pro"), (2, "pro"), (3, "basic"))]


@pytest.fixture
def loaded(warehouse_url, tmp_path):
    wh = Warehouse(warehouse_url, redaction_key=TEST_REDACTION_KEY.encode())
    for contract, rows in ((DEALS, _deals()), (INVOICES, _invoices()), (EVENTS, _events()), (SUBS, _subs())):
        folder = tmp_path / contract.name
        folder.mkdir()
        (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for day in (DAY, "2026-03-02"):
            load_partition(wh, FileDropSource(folder, system="s", table=contract.name), contract, partition_key=day,
                           window=daily_window(day), run_id="r")
    return wh


def rule(name, **spec):
    flow = {"deals": DEALS, "invoices": INVOICES} if spec["from"] == "deals" else {"plan_events": EVENTS,
                                                                                  "subscriptions": SUBS}
    return parse_rule("billing_sync", name, spec, flow)


INVOICED = {"from": "deals", "to": "invoices", "match": {"deal_id": "deal_id"}, "partition_by": "closed_at",
            "where": [{"column": "stage", "op": "=", "value": "won"}]}


def test_presence_finds_the_deal_never_invoiced_and_waits_for_the_one_inside_its_sla(loaded):
    f = evaluate(loaded, rule("invoiced", kind="presence", sla="24h", **INVOICED), DAY)
    assert (f.checked, f.failing, f.pending, f.sample) == (10, 1, 1, ["9"])
    assert f.as_of == D + timedelta(hours=36)


def test_presence_with_b_at_fails_a_match_stamped_after_the_sla_as_a_missing_one(loaded):
    plain = evaluate(loaded, rule("invoiced", kind="presence", sla="5h", **INVOICED), DAY)
    assert plain.failing_keys == [9, 10]  # never invoiced (deal 10 too: 20:00 is past 36:00 - 5 h)
    # invoices are issued at 10:00: for deals closed before 05:00 that is after the 5 h SLA
    timely = evaluate(loaded, rule("invoiced_in_time", kind="presence", sla="5h", b_at="issued_at", **INVOICED), DAY)
    assert (timely.checked, timely.failing_keys, timely.pending) == (10, [1, 2, 3, 4, 9, 10], 0)


def test_cardinality_finds_the_deal_invoiced_twice(loaded):
    f = evaluate(loaded, rule("one_invoice", kind="cardinality", at_most=1, **INVOICED), DAY)
    assert (f.failing, f.sample) == (1, ["8"])
    exact = evaluate(loaded, rule("exactly_one", kind="cardinality", exactly=1, sla="24h", **INVOICED), DAY)
    assert (exact.failing, exact.pending, exact.sample) == (2, 1, ["8", "9"])


def test_orphans_finds_the_invoice_for_a_deal_we_do_not_have(loaded):
    f = evaluate(loaded, rule("orphans", kind="orphans", **{**INVOICED, "b_partition_by": "issued_at"}), DAY)
    assert (f.checked, f.failing, f.sample) == (10, 1, ["10"])  # invoice 10 is the one for deal 99


def test_agreement_finds_the_pairs_that_differ_within_tolerance_and_mapping(loaded):
    fields = [{"from": "amount", "to": "amount", "tolerance": 0.01}, {"from": "currency", "to": "currency"},
              {"from": "plan", "to": "plan_code", "map": {"pro": "PRO"}}]
    f = evaluate(loaded, rule("same_terms", kind="agreement", fields=fields, **INVOICED), DAY)
    assert (f.checked, f.failing, f.sample) == (9, 5, ["2", "4", "5", "8", "8"])


def test_latest_state_finds_the_plan_change_billing_never_applied(loaded):
    f = evaluate(loaded, rule("plan_applied", kind="latest_state", sla="2h", fields=[{"from": "plan", "to": "plan"}],
                              order_by="event_at", **{"from": "plan_events", "to": "subscriptions",
                                                      "match": {"subscription_id": "subscription_id"},
                                                      "partition_by": "event_at"}), DAY)
    # sub 1: newest pro, billing pro; sub 2: basic vs pro (failing); sub 3: 22:00 after the 21:00 cutoff
    # (pending); sub 4: no subscription in billing (failing). Samples are the newest events' ids.
    assert (f.checked, f.failing, f.pending, f.sample) == (4, 2, 1, ["3", "5"])


def test_latest_state_with_b_at_fails_at_once_when_b_changed_since_but_to_another_state(loaded):
    spec = {"from": "plan_events", "to": "subscriptions", "match": {"subscription_id": "subscription_id"},
            "partition_by": "event_at", "kind": "latest_state", "sla": "2h", "order_by": "event_at",
            "fields": [{"from": "plan", "to": "plan"}]}
    # sub 3's newest event (pro, 22:00) is inside the SLA, but billing changed it at 23:00 to basic
    f = evaluate(loaded, rule("plan_applied", b_at="updated_at", **spec), DAY)
    assert (f.failing, f.pending, f.sample) == (3, 0, ["3", "4", "5"])


def test_aggregate_parity_of_counts_and_sums(loaded):
    base = {"from": "deals", "to": "invoices", "partition_by": "closed_at", "b_partition_by": "issued_at",
            "where": [{"column": "stage", "op": "=", "value": "won"}]}
    count = evaluate(loaded, rule("count", kind="aggregate_parity", aggregate="count", **base), DAY)
    assert count.passed and count.detail == {"a": 10.0, "b": 10.0}
    total = evaluate(loaded, rule("sum", kind="aggregate_parity", aggregate="sum", column="amount", tolerance=0.01,
                                  **base), DAY)
    assert not total.passed and total.detail["a"] == 5500.0


@pytest.mark.parametrize("change, key, reason", [
    ({"to": "payments"}, ("to",), "no boundary 'payments' in this flow"),
    ({"match": {"deal_id": "nope"}}, ("match", "deal_id"), "contract invoices has no column 'nope'"),
    ({"match": {"stage": "deal_id"}}, ("match", "stage"), "deals.stage is a string but invoices.deal_id is a integer"),
    ({"where": [{"column": "region", "op": "=", "value": "eu"}]}, ("where", 0, "column"), "has no column 'region'"),
    ({"where": [{"column": "stage", "op": "like", "value": "w%"}]}, ("where", 0, "op"), "expected one of"),
    ({"where": [{"column": "stage", "op": "=", "value": 3}]}, ("where", 0, "value"), "3 is not a string value"),
    ({"where": ["stage = 'won' OR 1=1"]}, ("where", 0), "a filter is {column"),
    ({"where": [{"column": "stage", "op": "=", "value": ["won"]}]}, ("where", 0, "value"), "= takes one value"),
    ({"where": [{"column": "stage", "op": "in", "value": []}]}, ("where", 0, "value"), "in takes a non-empty list"),
    ({"sla": "a day"}, ("sla",), "expected a duration"),
    ({"kind": "vibes"}, ("kind",), "expected one of presence"),
    ({"partition_by": "stage"}, ("partition_by",), "deals.stage is a string, expected timestamp or date"),
    ({"severity": "urgent"}, ("severity",), "expected one of critical, error, standard"),
    ({"cutoff": 3}, ("cutoff",), "unknown key for a presence rule"),
    ({"b_at": "currency"}, ("b_at",), "invoices.currency is a string, expected timestamp or date"),
])
def test_a_rule_that_cannot_run_is_refused_with_key_and_reason(change, key, reason):
    spec = {"kind": "presence", "sla": "24h", **INVOICED, **change}
    with pytest.raises(RuleError) as exc:
        parse_rule("billing_sync", "r", spec, {"deals": DEALS, "invoices": INVOICES}, where=("flows", "billing_sync",
                                                                                               "rules", "r"))
    assert exc.value.where == ("flows", "billing_sync", "rules", "r", *key)
    assert reason in exc.value.reason


def test_rules_describe_themselves_in_words():
    r = rule("invoiced", kind="presence", sla="48h", **INVOICED)
    assert r.words() == "every deals row has a matching invoices row (deal_id=deal_id) within 48 h"
    assert r.check_name == "rule_invoiced"
