"""Helpers shared by integration and e2e tests."""

from __future__ import annotations

import dagster as dg

from assets.config import load_config
from assets.flows.declared import build_flow
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


def shipped_flow(flow: str, partitions: dg.PartitionsDefinition) -> tuple[list, list]:
    """(assets, checks) of a flow as the shipped meshline.yaml declares it."""
    from assets.settings import DEFAULT_CONFIG

    return build_flow(flow, load_config(DEFAULT_CONFIG), partitions, None)


def lead_handoff_defs(url: str, sandbox, start: str = "2026-01-01"):
    partitions = dg.DailyPartitionsDefinition(start_date=start)
    assets, checks = shipped_flow("lead_handoff", partitions)
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


def rule_failures(url: str, flow: str, partition_key: str | None = None) -> dict[str, set[str]]:
    """Per rule of the flow, the keys meshline.rule_failures holds failing (one partition, or all)."""
    out: dict[str, set[str]] = {}
    sql = "SELECT rule, record_key FROM meshline.rule_failures WHERE flow = ? AND state = 'failing'"
    with Warehouse(url).session() as s:
        rows = s.query(sql + " AND partition_key = ?", (flow, partition_key)) if partition_key else s.query(sql, (flow,))
    for rule, key in rows:
        out.setdefault(rule, set()).add(key)
    return out


def rule_checks(res, on: str) -> dict[str, dg.AssetCheckEvaluation]:
    """The run's rule checks on boundary `on` (the A side their findings and severity belong to), by rule."""
    return {e.check_name[len("rule_"):]: e for e in res.get_asset_check_evaluations()
            if e.check_name.startswith("rule_") and e.asset_key.path[-1] == on}
