"""Helpers shared by integration and e2e tests."""

from __future__ import annotations

import dagster as dg

from assets.flows import lead_handoff
from assets.loading.warehouse import Warehouse
from assets.resources import DataDocsResource, SourcesResource, WarehouseResource
from tests.conftest import TEST_REDACTION_KEY

RUN_DEPENDENT = {"_run_id", "_loaded_at", "run_id", "first_seen_at", "loaded_at"}
TABLES = {
    "raw.marketing_leads": "lead_id",
    "raw.crm_leads": "crm_lead_id",
    "raw.crm_opportunities": "opportunity_id",
    "raw.billing_invoices": "invoice_id",
    "raw.product_plan_events": "event_id",
    "raw.billing_subscriptions": "subscription_id",
    "meshline.dead_letters": "dead_letter_id",
    "meshline.watermarks": "asset, partition_key",
    "meshline.file_manifest": "checksum, asset, partition_key",
    "meshline.held_rows": "hold_id",
}


def snapshot(url: str, *, normalize: bool = False) -> dict[str, list[tuple]]:
    """Every warehouse table Meshline writes (load_log aside: it logs runs), as sorted rows.
    `normalize` drops what differs between two runs by design (run ids, load timestamps)."""
    wh = Warehouse(url)
    out: dict[str, list[tuple]] = {}
    for table, order in TABLES.items():
        schema, name = table.split(".")
        if not wh.table_exists(schema, name):
            out[table] = []
            continue
        with wh.session() as s:
            cols = [r[0] for r in s.query(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?"
                " ORDER BY ordinal_position", (schema, name))]
            if normalize:
                drop = RUN_DEPENDENT | ({"updated_at"} if name == "watermarks" else set())
                cols = [c for c in cols if c not in drop]
            out[table] = [tuple(r) for r in s.query(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")]
    return out


def lead_handoff_defs(url: str, sandbox, start: str = "2026-01-01"):
    partitions = dg.DailyPartitionsDefinition(start_date=start)
    assets, checks = lead_handoff.build(partitions, pool=None)
    resources = {
        "warehouse": WarehouseResource(url=url, redaction_key=TEST_REDACTION_KEY),  # as the CLI reads it
        "sources": SourcesResource(boundaries={
            "marketing_leads": {"kind": "sql", "url": sandbox.marketing_url, "table": "marketing_leads"},
            "crm_leads": {"kind": "sql", "url": sandbox.crm_url, "table": "crm_leads"}}),
        "data_docs": DataDocsResource(root=str(sandbox.paths.root.parent / "docs")),
    }
    return assets, checks, resources


def materialize_day(url: str, sandbox, key: str, instance=None, tags: dict | None = None):
    """Both raw assets and their checks for one day. A blocking check may fail the run (that is its job);
    the two loads themselves must have materialized."""
    assets, checks, resources = lead_handoff_defs(url, sandbox)
    res = dg.materialize([*assets, *checks], partition_key=key, resources=resources,
                         instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False, tags=tags)
    loaded = {ev.materialization.asset_key.path[-1] for ev in res.get_asset_materialization_events()}
    if loaded != {"marketing_leads", "crm_leads"}:
        failures = [str(e.step_failure_data.error) for e in res.all_events if e.is_step_failure]
        raise AssertionError(f"{key}: loads failed: {failures}")
    return res


def day_keys(truth: dict) -> list[str]:
    from datetime import date, timedelta

    first = date.fromisoformat(truth["start"])
    return [(first + timedelta(days=i)).isoformat() for i in range(truth["days"])]
