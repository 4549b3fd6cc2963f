"""The nightly covers every rule's SLA, driven as it fires: day by day, a YAML-only flow's sources grow
(deals exported by the CRM the day they close, invoices by billing the next day), the `nightly_hygiene`
schedule is evaluated at each night's 01:00 tick and every run it requests for the flow is executed.
One day's CRM export is cut off halfway and the rest arrives two nights later. At the end, what the
rules' findings hold is exactly what was injected, every fault of every rule, on DuckDB and Postgres.

A nightly that reached back only as far as the boundaries' 6 h lookback would judge each day once,
before billing's next-day invoices were in: every never-invoiced deal would still be pending, and the
rest of the cut-off day would never be loaded."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import dagster as dg

from tests.helpers import rule_failures
from tests.integration.test_yaml_flow import yaml_flow  # noqa: F401  (the fixture)

START = date(2026, 4, 1)
DAYS = 8          # simulated days of traffic
FAULT_DAYS = 5    # faults go into the first five: their SLA passes, as of billing's data, before the end
CUT_DAY = 2       # this day's CRM export arrives half, the rest two nights later
DEALS_PER_DAY = 12


def _at(day: int, hour: int) -> str:
    return (datetime.combine(START + timedelta(days=day), datetime.min.time()) + timedelta(hours=hour)).isoformat()


def _world() -> tuple[dict[int, dict[str, list[dict]]], dict[str, set[str]]]:
    """Per day, the files dropped that night; and per rule, the keys it must find."""
    drops: dict[int, dict[str, list[dict]]] = {d: {"deals": [], "invoices": []} for d in range(DAYS + 1)}
    want: dict[str, set[str]] = {"invoiced": set(), "one_invoice_each": set(), "same_terms": set(),
                                 "no_stray_invoices": set()}
    invoice_id = 0
    for day in range(DAYS):
        faulty = day < FAULT_DAYS
        for i in range(DEALS_PER_DAY):
            deal_id = day * 100 + i
            deal = {"deal_id": deal_id, "stage": "won", "amount": 1000.0 + i, "currency": "USD", "plan": "pro",
                    "closed_at": _at(day, 1 + i), "updated_at": _at(day, 1 + i)}
            # the cut day's later half is exported two nights late, with its own (old) change tokens
            late = day == CUT_DAY and i >= DEALS_PER_DAY // 2
            drops[day + 2 if late else day]["deals"].append(deal)
            if faulty and i == DEALS_PER_DAY - 1:  # never invoiced
                want["invoiced"].add(str(deal_id))
                continue
            copies = 2 if faulty and i == DEALS_PER_DAY - 2 else 1  # invoiced twice
            if copies == 2:
                want["one_invoice_each"].add(str(deal_id))
            amount = deal["amount"] + (7.0 if faulty and i == DEALS_PER_DAY - 3 else 0.0)  # billed another amount
            if amount != deal["amount"]:
                want["same_terms"].add(str(deal_id))
            for _ in range(copies):  # billing invoices the next day, within the 24 h SLA
                invoice_id += 1
                drops[day + 1]["invoices"].append({
                    "invoice_id": invoice_id, "deal_id": deal_id, "amount": amount, "currency": "USD",
                    "plan_code": "PRO", "issued_at": _at(day + 1, i), "updated_at": _at(day + 1, i)})
        if faulty:  # an invoice for a deal the CRM does not have
            invoice_id += 1
            drops[day]["invoices"].append({"invoice_id": invoice_id, "deal_id": 90_000 + day, "amount": 5.0,
                                           "currency": "USD", "plan_code": "PRO", "issued_at": _at(day, 13),
                                           "updated_at": _at(day, 13)})
            want["no_stray_invoices"].add(str(invoice_id))
    return drops, want


def test_the_nightly_as_it_fires_finds_every_injected_fault_of_every_rule(yaml_flow, tmp_path):  # noqa: F811
    from orchestration.definitions import build_defs

    landing = tmp_path / "landing"
    for f in landing.glob("*/*"):  # the fixture's one-day export is not this world
        f.unlink()
    drops, want = _world()
    assert all(want.values())
    defs = build_defs(yaml_flow)
    job = defs.resolve_job_def("billing_sync_job")
    flow_keys = {dg.AssetKey(["raw", "deals"]), dg.AssetKey(["raw", "invoices"])}
    nightly = defs.resolve_schedule_def("nightly_hygiene")
    instance = dg.DagsterInstance.ephemeral()
    judged: dict[str, int] = {}
    for day in range(DAYS):
        for name, rows in drops[day].items():  # the day's exports land in the evening
            if rows:
                (landing / name / f"export-{day}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        night = datetime.combine(START + timedelta(days=day + 1), datetime.min.time()) + timedelta(hours=1)
        tick = nightly.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=night,
                                                               repository_def=defs.get_repository_def()))
        mine = [r for r in tick.run_requests or [] if r.run_key and ":billing_sync:" in r.run_key]
        # the 24 h SLA plus the day billing needs: the three days before the night, newest first
        assert [r.partition_key for r in mine] == [(START + timedelta(days=day - k)).isoformat() for k in (0, 1, 2)]
        for r in mine:
            assert set(r.asset_selection) == flow_keys
            res = job.execute_in_process(partition_key=r.partition_key, instance=instance, tags=r.tags,
                                         raise_on_error=False)
            loaded = {e.asset_key for e in res.get_asset_materialization_events()}
            assert loaded == flow_keys, r.partition_key
            judged[r.partition_key] = judged.get(r.partition_key, 0) + 1
    assert judged[START.isoformat()] == 3  # each day judged on three nights

    found: dict[str, set[str]] = rule_failures(yaml_flow.warehouse_url, "billing_sync")
    # same_terms compares each invoice with its deal: the key is the deal's
    assert {rule: found.get(rule, set()) for rule in want} == want
    # the cut day's late half was loaded and judged: its never-invoiced deal is among the findings
    assert str(CUT_DAY * 100 + DEALS_PER_DAY - 1) in found["invoiced"]
