"""subscription_updates on DuckDB and Postgres, through its real connectors (product events as JSONL
drops, billing's subscriptions over the sandbox's HTTP API on 127.0.0.1): the reconciliation finds
exactly the injected faults, every malformed line and record is dead-lettered where it belongs, and an
event delivered twice loads once."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from assets.loading import Warehouse
from assets.resources import DataDocsResource, SourcesResource, WarehouseResource
from assets.sandbox.billing_api import BillingApi
from assets.sandbox.subscription_updates import SubscriptionFaults, SubscriptionSandbox
from tests.conftest import SIM_END
from tests.helpers import day_keys, rule_checks, rule_failures, shipped_flow, snapshot


@pytest.fixture
def subs(tmp_path):
    sb = SubscriptionSandbox(tmp_path / "subs")
    sb.generate(end=SIM_END, days=4, accounts_per_day=80, seed=5,
                faults=SubscriptionFaults(malformed_lines=0.01, malformed_events=0.01, malformed_billing=0.01))
    with BillingApi(sb.billing_path) as api:
        yield sb, api


def specs(sb, api) -> dict:
    return {"product_plan_events": {"kind": "files", "folder": str(sb.events_dir), "pattern": "*.jsonl"},
            "billing_subscriptions": {"kind": "http", "base_url": api.base_url, "path": "/v1/billing_subscriptions",
                                      "page_size": 100, "rate_per_s": 200, "burst": 20}}


def _run(url, sb, api, key, tmp_path):
    parts = dg.DailyPartitionsDefinition(start_date="2026-01-01")
    assets, checks = shipped_flow("subscription_updates", parts)
    res = dg.materialize([*assets, *checks], partition_key=key, instance=dg.DagsterInstance.ephemeral(),
                         raise_on_error=False, resources={
                             "warehouse": WarehouseResource(url=url),
                             "sources": SourcesResource(boundaries=specs(sb, api)),
                             "data_docs": DataDocsResource(root=str(tmp_path / "docs"))})
    mats = res.get_asset_materialization_events()
    assert {e.asset_key.path[-1] for e in mats} == {"product_plan_events", "billing_subscriptions"}, [
        str(e.event_specific_data.error) for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    return rule_checks(res, "product_plan_events"), mats


def test_reconciliation_finds_exactly_the_injected_faults(warehouse_url, subs, tmp_path):
    sb, api = subs
    truth = sb.ground_truth()
    assert truth["not_reflected"] and truth["plan_mismatch"] and truth["duplicate_deliveries"]
    keys = day_keys(truth)
    superseded = 0
    for key in keys:
        _, mats = _run(warehouse_url, sb, api, key, tmp_path)
        for ev in mats:
            md = {k: v.value for k, v in ev.materialization.metadata.items()}
            assert md["rows_read"] == md["rows_loaded"] + md["rows_superseded"] + md["rows_dead_lettered"]
            superseded += md["rows_superseded"] if ev.asset_key.path[-1] == "product_plan_events" else 0
    before = snapshot(warehouse_url)
    wh = Warehouse(warehouse_url)
    with wh.session() as s:
        account = dict(s.query("SELECT event_id, account_id FROM raw.product_plan_events"))
    found: list[int] = []
    judged = 0
    for key in keys:  # second pass: judged with both sides fully loaded, and nothing changes
        checks, mats = _run(warehouse_url, sb, api, key, tmp_path)
        assert all(e.materialization.metadata["rows_loaded"].value == 0 for e in mats)
        failing = rule_failures(warehouse_url, "subscription_updates", key).get("plan_applied", set())
        found += [account[e] for e in failing]  # the rule names each account's latest event
        check = checks["plan_applied"]
        judged += check.metadata["checked"].value
        assert check.passed == (not failing)
        assert check.metadata["failing"].value == len(failing)
    assert snapshot(warehouse_url) == before
    # billing never applied the event, or applied another plan since
    assert sorted(found) == sorted(truth["not_reflected"] + truth["plan_mismatch"])
    assert judged == truth["accounts"]  # every account judged once, on the day of its latest event
    # An event delivered twice loaded once: one row per event, the second copy superseded.
    with wh.session() as s:
        n_events = s.scalar("SELECT count(*) FROM raw.product_plan_events")
        dead = s.query("SELECT source_system, locator, reason_code, partition_key FROM meshline.dead_letters")
    assert n_events == truth["events"] and superseded == truth["duplicate_deliveries"]

    def where(loc: dict) -> str:
        return f"{loc['file']}:{loc['line']}" if "file" in loc else str(loc.get("source_position", loc.get("row_id")))

    got = sorted((sys_, where(json.loads(loc)), why, part) for sys_, loc, why, part in dead)
    want = sorted((m["system"], m.get("position") or str(m["row_id"]), m["reason_code"], m["partition"])
                  for m in truth["malformed"])
    assert got == want and {w[2] for w in want} == {"malformed_record", "unknown_value", "out_of_range"}
