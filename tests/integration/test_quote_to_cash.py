"""quote_to_cash on DuckDB and Postgres: the reconciliation checks find exactly the injected faults,
and the flow keeps the loader's invariants (conservation, idempotent re-run)."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.flows import quote_to_cash
from assets.resources import DataDocsResource, SourcesResource, WarehouseResource
from assets.sandbox.quote_to_cash import QuoteFaults, QuoteToCashSandbox
from tests.conftest import SIM_END
from tests.helpers import day_keys, snapshot


@pytest.fixture
def q2c(tmp_path):
    sb = QuoteToCashSandbox(tmp_path / "q2c")
    sb.generate(end=SIM_END, days=4, deals_per_day=150, seed=3,
                faults=QuoteFaults(malformed_crm=0.005, malformed_billing=0.01))
    return sb


def _run(url, sb, key, tmp_path):
    parts = dg.DailyPartitionsDefinition(start_date="2026-01-01")
    assets, checks = quote_to_cash.build(parts, pool=None)
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
    return {e.check_name: e for e in res.get_asset_check_evaluations()}


def test_reconciliation_finds_exactly_the_injected_faults(warehouse_url, q2c, tmp_path):
    from assets.loading import Warehouse

    truth = q2c.ground_truth()
    keys = day_keys(truth)
    for key in keys:
        _run(warehouse_url, q2c, key, tmp_path)
    before = snapshot(warehouse_url)
    found = {"missing": [], "amount_mismatch": [], "currency_mismatch": [], "no_deal": []}
    wh = Warehouse(warehouse_url)
    for key in keys:  # second pass: every check judged with both sides fully loaded
        ev = _run(warehouse_url, q2c, key, tmp_path)
        deals, invoices = quote_to_cash.reconcile_deals(wh, key), quote_to_cash.reconcile_invoices(wh, key)
        for k in ("missing", "amount_mismatch", "currency_mismatch"):
            found[k] += deals[k]
        found["no_deal"] += invoices["no_deal"]
        rec = ev["invoice_reconciliation"]
        assert rec.metadata["missing_invoice"].value == len(deals["missing"])
        assert rec.passed == (not deals["missing"] and not deals["amount_mismatch"] and not deals["currency_mismatch"])
        assert ev["invoice_has_deal"].passed == (not invoices["no_deal"])
    assert snapshot(warehouse_url) == before  # the second pass changed nothing
    assert sorted(found["missing"]) == truth["no_invoice"] and truth["no_invoice"]
    assert sorted(found["amount_mismatch"]) == truth["amount_mismatch"] and truth["amount_mismatch"]
    assert sorted(found["currency_mismatch"]) == truth["currency_mismatch"] and truth["currency_mismatch"]
    assert sorted(found["no_deal"]) == truth["no_deal"] and truth["no_deal"]
