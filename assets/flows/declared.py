"""Declared rules as Dagster asset checks, and the one table their findings land in.

Each rule of meshline.yaml is one partitioned asset check on its A boundary's asset (blocking when the
rule is critical), named `rule_<name>`, described by the rule in words. Every evaluation upserts its
partition's row of `meshline.rule_findings` (counts, the judging horizon, sample keys: never PII) and is
recorded for incidents and compensation like every other partitioned check.
"""


import json
from typing import Any

import dagster as dg

from assets.flows.common import asset_key, recorded
from assets.flows.rules import Findings, Rule, evaluate
from assets.loading.ddl import META_SCHEMA, ensure_meta, upsert_row, utcnow
from assets.loading.warehouse import Tx, Warehouse
from assets.resources import WarehouseResource


def store(tx: Tx, rule: Rule, f: Findings, run_id: str) -> None:
    ensure_meta(tx)
    upsert_row(tx, f"{META_SCHEMA}.rule_findings", {
        "flow": rule.flow, "rule": rule.name, "kind": rule.kind, "a_asset": rule.a.name, "b_asset": rule.b.name,
        "partition_key": f.partition_key, "checked": f.checked, "failing": f.failing, "pending": f.pending,
        "as_of": f.as_of, "sample_keys": json.dumps(f.sample), "critical": rule.critical, "run_id": run_id,
        "evaluated_at": utcnow()}, ("flow", "rule", "partition_key"))


def run_rule(wh: Warehouse, rule: Rule, partition_key: str, run_id: str) -> Findings | None:
    """Evaluate and store; None when a side has never been loaded (nothing to judge yet)."""
    if not (wh.table_exists("raw", rule.a.name) and wh.table_exists("raw", rule.b.name)):
        return None
    findings = evaluate(wh, rule, partition_key)
    with wh.transaction() as tx:
        store(tx, rule, findings, run_id)
    return findings


def rule_check(rule: Rule, partitions_def: dg.PartitionsDefinition, pool: str | None) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset_key(rule.a), name=rule.check_name, partitions_def=partitions_def,
                    additional_deps=[asset_key(rule.b)], pool=pool, blocking=rule.critical,
                    description=rule.words()[0].upper() + rule.words()[1:] + ".",
                    metadata={"rule_kind": rule.kind, "flow": rule.flow,
                              "sla_hours": rule.sla.total_seconds() / 3600})
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        wh = warehouse.get()
        severity = dg.AssetCheckSeverity.ERROR if rule.critical else dg.AssetCheckSeverity.WARN
        f = run_rule(wh, rule, context.partition_key, context.run.run_id)
        if f is None:
            result = dg.AssetCheckResult(passed=False, severity=severity, description=(
                f"raw.{rule.a.name} or raw.{rule.b.name} has never been loaded"))
            return recorded(context, wh, rule.a, rule.check_name, result, remediable=True)
        meta: dict[str, Any] = {"checked": f.checked, "failing": f.failing, "pending": f.pending,
                                "as_of": f.as_of.isoformat() if f.as_of else "never",
                                "sample_keys": dg.MetadataValue.json(f.sample)}
        meta.update({f"value_{k}": v for k, v in f.detail.items()})
        result = dg.AssetCheckResult(passed=f.passed, severity=severity, metadata=meta, description=(
            f"{f.failing} of {f.checked} {'failing' if rule.kind != 'aggregate_parity' else 'differ'}"
            f"{f', {f.pending} pending within the SLA' if f.pending else ''}"))
        return recorded(context, wh, rule.a, rule.check_name, result, remediable=True)

    return _check
