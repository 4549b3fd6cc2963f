"""quote_to_cash on DuckDB and Postgres: the reconciliation checks find exactly the injected faults,
and the flow keeps the loader's invariants (conservation, idempotent re-run)."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.resources import DataDocsResource, SourcesResource, WarehouseResource
from assets.sandbox.quote_to_cash import QuoteFaults, QuoteToCashSandbox
from tests.conftest import SIM_END
from tests.helpers import day_keys, rule_checks, rule_failures, shipped_flow, snapshot


@pytest.fixture
def q2c(tmp_path):
    sb = QuoteToCashSandbox(tmp_path / "q2c")
    sb.generate(end=SIM_END, days=4, deals_per_day=150, seed=3,
                faults=QuoteFaults(malformed_crm=0.005, malformed_billing=0.01))
    return sb


def _run(url, sb, key, tmp_path):
    parts = dg.DailyPartitionsDefinition(start_date="2026-01-01")
    assets, checks = shipped_flow("quote_to_cash", parts)
    res = dg.materialize([*assets, *checks], partition_key=key, instance=dg.DagsterInstance.ephemeral(),
                         raise_on_error=False, resources={
                             "warehouse": WarehouseResource(url=url),
                             "sources": SourcesResource(boundaries={
                                 "crm_opportunities": {"kind": "sql", "url": sb.crm_url, "table": "crm_opportunities"},
                                 "billing_invoices": {"kind": "sql", "url": sb.billing_url, "table": "billing_invoices"}}),
                             "data_docs": DataDocsResource(root=str(tmp_path / "docs"))})
    assert len(res.get_asset_materialization_events()) == 2
    for ev in res.get_asset_materialization_events():
        md = {k: v.value for k, v in ev.materialization.metadata.items()}
        assert md["rows_read"] == md["rows_loaded"] + md["rows_superseded"] + md["rows_dead_lettered"]
    return rule_checks(res, "crm_opportunities")


def test_reconciliation_finds_exactly_the_injected_faults(warehouse_url, q2c, tmp_path):
    truth = q2c.ground_truth()
    keys = day_keys(truth)
    for key in keys:
        _run(warehouse_url, q2c, key, tmp_path)
    before = snapshot(warehouse_url)
    found: dict[str, list[int]] = {"invoiced": [], "same_amount": [], "same_currency": [], "invoice_has_deal": []}
    for key in keys:  # second pass: every check judged with both sides fully loaded
        ev = _run(warehouse_url, q2c, key, tmp_path)
        failing = rule_failures(warehouse_url, "quote_to_cash", key)
        for rule in found:
            found[rule] += [int(k) for k in failing.get(rule, ())]
            assert ev[rule].metadata["failing"].value == len(failing.get(rule, ()))
            assert ev[rule].passed == (not failing.get(rule))
    assert snapshot(warehouse_url) == before  # the second pass changed nothing
    assert sorted(found["invoiced"]) == truth["no_invoice"] and truth["no_invoice"]
    assert sorted(found["same_amount"]) == truth["amount_mismatch"] and truth["amount_mismatch"]
    assert sorted(found["same_currency"]) == truth["currency_mismatch"] and truth["currency_mismatch"]
    assert sorted(found["invoice_has_deal"]) == truth["no_deal"] and truth["no_deal"]
