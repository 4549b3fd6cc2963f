"""Declared rules as Dagster asset checks, and the one table their findings land in.

Each rule of meshline.yaml is one partitioned asset check on its A boundary's asset (blocking when the
rule is critical), named `rule_<name>`, described by the rule in words. Every evaluation upserts its
partition's row of `meshline.rule_findings` (counts, the judging horizon, sample keys: never PII) and is
recorded for incidents and compensation like every other partitioned check.
"""


import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pyarrow as pa

from assets.config import Config
from assets.flows.boundary import build_boundaries
from assets.flows.common import asset_key, per_partition, recorded
from assets.flows.rules import Findings, Rule, evaluate, stored_key
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
    # One key is one row per rule and partition: the B side for orphans, the A side otherwise.
    side = rule.b if rule.kind == "orphans" else rule.a
    tx.execute(f"DELETE FROM {META_SCHEMA}.rule_failures WHERE flow = ? AND rule = ? AND partition_key = ?",
               (rule.flow, rule.name, f.partition_key))
    at = utcnow()
    rows = [(rule.flow, rule.name, f.partition_key, stored_key(k, side, tx.key), state, at)
            for state, keys in (("failing", dict.fromkeys(f.failing_keys)), ("pending", dict.fromkeys(f.pending_keys)))
            for k in keys]
    if rows:
        names = ("flow", "rule", "partition_key", "record_key", "state", "evaluated_at")
        tx.insert_arrow(f"{META_SCHEMA}.rule_failures", pa.table(dict(zip(names, zip(*rows, strict=True), strict=True))))


def run_rule(wh: Warehouse, rule: Rule, partition_key: str, run_id: str) -> Findings | None:
    """Evaluate and store; None when a side has never been loaded (nothing to judge yet)."""
    if not (wh.table_exists("raw", rule.a.name) and wh.table_exists("raw", rule.b.name)):
        return None
    findings = evaluate(wh, rule, partition_key)
    with wh.transaction() as tx:
        store(tx, rule, findings, run_id)
    return findings


def rule_check(rule: Rule, partitions_def: dg.PartitionsDefinition, pool: str | None) -> dg.AssetChecksDefinition:
    """The rule's check on A, and the same verdict on B (`rule_<name>` on both boundaries). Checking B
    as well is what lets the rule run when B's own blocking contract check fails: a partition whose B
    side broke its contract (its bad rows dead-lettered) is still reconciled on what did load, instead
    of its rule being skipped, night after night, without a word."""
    words = rule.words()[0].upper() + rule.words()[1:] + "."
    meta = {"rule_kind": rule.kind, "flow": rule.flow, "sla_hours": rule.sla.total_seconds() / 3600}
    on_a = dg.AssetCheckSpec(rule.check_name, asset=asset_key(rule.a), additional_deps=[asset_key(rule.b)],
                             blocking=rule.critical, description=words, metadata=meta, partitions_def=partitions_def)
    on_b = dg.AssetCheckSpec(rule.check_name, asset=asset_key(rule.b), description=f"{words} (Its verdict as"
                             f" seen from {rule.b.name}; the findings and incidents sit on {rule.a.name}.)",
                             metadata=meta, partitions_def=partitions_def)

    @dg.multi_asset_check(specs=[on_a, on_b], name=f"{rule.flow}__{rule.check_name}", pool=pool)
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Iterator[Any]:
        wh = warehouse.get()
        yield from per_partition(context, wh, lambda part: judge(context, wh, part))

    def judge(context: dg.AssetCheckExecutionContext, wh: Warehouse, part: str) -> list[dg.AssetCheckResult]:
        severity = dg.AssetCheckSeverity.WARN if rule.severity == "standard" else dg.AssetCheckSeverity.ERROR
        f = run_rule(wh, rule, part, context.run.run_id)
        verdict: dict[str, Any]
        if f is None:
            verdict = {"passed": False, "description": f"raw.{rule.a.name} or raw.{rule.b.name} has never been loaded"}
        else:
            meta: dict[str, Any] = {"checked": f.checked, "failing": f.failing, "pending": f.pending,
                                    "as_of": f.as_of.isoformat() if f.as_of else "never",
                                    "sample_keys": dg.MetadataValue.json(f.sample)}
            meta.update({f"value_{k}": v for k, v in f.detail.items()})
            verdict = {"passed": f.passed, "metadata": meta, "description": (
                f"{f.failing} of {f.checked} {'failing' if rule.kind != 'aggregate_parity' else 'differ'}"
                f"{f', {f.pending} pending within the SLA' if f.pending else ''}")}
        return [recorded(context, wh, rule.a, rule.check_name, dg.AssetCheckResult(
                    asset_key=asset_key(rule.a), check_name=rule.check_name, severity=severity, **verdict),
                    partition_key=part, remediable=True),
                # On B the verdict is informational: the severity and the incident are A's.
                dg.AssetCheckResult(asset_key=asset_key(rule.b), check_name=rule.check_name,
                                    severity=dg.AssetCheckSeverity.WARN, **verdict)]

    return _check


def build_flow(flow: str, config: Config, partitions_def: dg.PartitionsDefinition, pool: str | None
               ) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """A flow of meshline.yaml as Dagster definitions: its boundaries' assets and checks, and one check
    per declared rule. Every flow, the shipped three included, is built this way."""
    bounds = config.flow_boundaries(flow)
    _, assets, checks = build_boundaries(tuple(b.name for b in bounds), partitions_def, pool, bounds,
                                         flow_description=config.descriptions.get(flow, ""),
                                         per_run=config.operations.backfill_partitions_per_run)
    checks += [rule_check(rule, partitions_def, pool) for rule in config.rules.get(flow, [])]
    return assets, checks
