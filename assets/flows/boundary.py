"""A boundary asset (one raw table, daily partitions, the watermarked loader) and its contract checks."""


import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from assets.config import Boundary
from assets.flows.analytics import DEFAULT_TOLERANCE, analytics_checks
from assets.flows.common import COMPENSATE_TAG, RETRY, asset_key, per_partition, recorded
from assets.loading.ddl import META_SCHEMA, ensure_meta, raw_table, upsert_row, utcnow
from assets.loading.warehouse import Tx, ident
from assets.loading.watermark import daily_window
from assets.resources import DataDocsResource, SourcesResource, WarehouseResource
from expectations.contract import Contract
from expectations.reasons import ContractError, SourceError, SourceUnreachable
from expectations.registry import Registry
from expectations.validation import SuiteResult

# Partitioned asset checks are "preview" in Dagster 1.13; they are what per-partition contracts need.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
# Backfill policies are "beta": they are what lets a backfill's run take a range of days.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy` of function `asset`")

def _owners(contract: Contract) -> list[str]:
    return sorted({v for v in contract.owners.values() if "@" in v})


def column_schema(contract: Contract) -> dg.TableSchema:
    """The contract's columns as Dagster shows them: type, the rules in words, PII marked."""
    def words(c: Any) -> str:
        rules = [w for w, on in (("key", c.name == contract.idempotency_key), ("change token", c.name == contract.change_token),
                                 ("required", c.required), ("PII, redacted in dead letters", c.pii),
                                 (f"pattern {c.pattern}", c.pattern is not None),
                                 (f"one of {list(c.allowed_values or ())}", c.allowed_values is not None),
                                 (f"{c.min} to {c.max}", c.min is not None or c.max is not None)) if on]
        return "; ".join(x for x in (c.description, ", ".join(rules)) if x)

    return dg.TableSchema(columns=[
        dg.TableColumn(c.name, c.type, description=words(c) or None,
                       constraints=dg.TableColumnConstraints(nullable=not (c.required or c.name == contract.idempotency_key)))
        for c in contract.columns])


def boundary_asset(contract: Contract, partitions_def: dg.PartitionsDefinition, *, pool: str | None,
                   lookback: timedelta, deadline: timedelta = timedelta(hours=1), flow_description: str = "",
                   per_run: int = 0) -> dg.AssetsDefinition:
    # Dagster has no description for an asset group: the flow's is the first line of each of its assets'.
    flow_line = f"Flow `{contract.boundary_flow}`: {flow_description}\n\n" if flow_description else ""

    @dg.asset(
        key=asset_key(contract),
        partitions_def=partitions_def,
        retry_policy=RETRY,
        # A backfill's run takes a range of days: a run per day pays the run's start (a process, the
        # definitions) again for every day of every flow.
        backfill_policy=dg.BackfillPolicy.multi_run(per_run) if per_run else dg.BackfillPolicy.single_run(),
        pool=pool,
        group_name=contract.boundary_flow,
        owners=_owners(contract),
        kinds={"python", "arrow"},
        description=(f"{flow_line}{contract.description}\n\nLoaded by Meshline's watermarked loader under contract "
                     f"`{contract.name}` v{contract.version} ({contract.severity}); invalid rows go to "
                     f"`meshline.dead_letters`."),
        metadata={"flow": contract.boundary_flow, "flow_description": flow_description or contract.boundary_flow,
                  "contract": contract.name, "contract_version": contract.version,
                  "severity": contract.severity, "idempotency_key": contract.idempotency_key,
                  "change_token": contract.change_token, "lookback_hours": lookback.total_seconds() / 3600,
                  "dagster/table_name": raw_table(contract), "dagster/column_schema": column_schema(contract)},
        tags={"meshline/flow": contract.boundary_flow, "meshline/severity": contract.severity},
    )
    def _load(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
              sources: SourcesResource) -> dg.MaterializeResult[Any]:
        wh = warehouse.get()
        source = sources.source(contract)
        # The warehouse stays open through the step: each load joins it instead of opening the file.
        with wh.held():
            if context.has_partition_key:
                return dg.MaterializeResult(metadata=load_one(context, wh, source, context.partition_key))
            # A backfill's run over a range: each partition loads exactly as a run of its own would,
            # oldest first (so each one's watermark and lookback are what a day-by-day run would see),
            # and its materialization carries its own figures.
            keys = context.partition_keys
            for i, part in enumerate(keys, 1):
                context.add_asset_metadata(load_one(context, wh, source, part), partition_key=part)
                if i % 10 == 0 or i == len(keys):
                    context.log.info(f"{contract.name}: {i}/{len(keys)} partitions loaded")
        return dg.MaterializeResult()

    def load_one(context: dg.AssetExecutionContext, wh: Any, source: Any, part: str) -> dict[str, Any]:
        # A compensating run (the backfill sensor's, `meshline dlq replay`'s) re-extracts the whole window
        # whatever the watermark says: late rows load, fixed records replace their dead letters.
        compensate = context.run.tags.get(COMPENSATE_TAG) == "true"
        # pyarrow comes with the loader: imported when a load runs, not when the definitions load
        from assets.loading.loader import load_partition

        stats = getattr(source, "stats", None)  # what an HTTP source counts: requests, retries, pages
        before = dict(stats or {})
        try:
            r = load_partition(
                wh, source, contract, partition_key=part, window=daily_window(part), run_id=context.run.run_id,
                lookback=lookback, full_refresh=compensate, progress=context.log.info,
                deadline_s=deadline.total_seconds())
        except SourceUnreachable as exc:
            # Usually transient (a restart, a network blip): the retry policy tries again, with backoff.
            raise dg.Failure(description=str(exc), allow_retries=True) from exc
        except (SourceError, ContractError) as exc:
            # Not transient: retrying cannot help, so fail once with the reason.
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        lag = None
        if r.watermark_to is not None:
            lag = (datetime.now(UTC).replace(tzinfo=None) - r.watermark_to).total_seconds() / 60
        context.log.info(
            f"{contract.name} {part}: read {r.rows_read}, loaded {r.rows_loaded}, "
            f"superseded {r.rows_superseded}, dead-lettered {r.rows_dead_lettered} in {r.seconds:.2f}s")
        meta: dict[str, Any] = {
            "rows_read": r.rows_read, "rows_loaded": r.rows_loaded, "rows_superseded": r.rows_superseded,
            "rows_dead_lettered": r.rows_dead_lettered, "rows_held": r.rows_held,
            "dead_letters_by_reason": dg.MetadataValue.json(dict(r.reason_counts)),
            "watermark_from": r.watermark_from.isoformat() if r.watermark_from else "none",
            "watermark_to": r.watermark_to.isoformat() if r.watermark_to else "none",
            "extract_from": r.extract_low.isoformat() if r.extract_low else "",
            "contract_version": contract.version, "load_id": r.load_id, "load_seconds": round(r.seconds, 3),
            "compensating": compensate, "dead_letters_resolved": r.dead_letters_resolved,
        }
        if stats:
            meta.update({f"source_{k}": int(v) - int(before.get(k, 0)) for k, v in stats.items()})
        if lag is not None:
            meta["lag_minutes"] = round(lag, 1)
        if r.unknown_columns:
            meta["unknown_source_columns"] = dg.MetadataValue.json(list(r.unknown_columns))
            context.log.warning(f"{contract.name} {part}: {r.rows_held} rows held: source "
                                f"columns {list(r.unknown_columns)} are in no contract version yet")
        if r.missing_optional:
            meta["missing_optional_columns"] = dg.MetadataValue.json(list(r.missing_optional))
        return meta

    return _load


def _stored_verdict(s: Tx, asset: str, partition_key: str, fingerprint: str) -> SuiteResult | None:
    rows = s.query(f"SELECT success, failed_expectations, unexpected_by_reason, docs_url, rows_validated FROM"
                   f" {META_SCHEMA}.gx_validations WHERE asset = ? AND partition_key = ? AND fingerprint = ?",
                   (asset, partition_key, fingerprint))
    if not rows:
        return None
    ok, failed, by_reason, url, n = rows[0]
    return SuiteResult(success=bool(ok), evaluated=0, failed_expectations=json.loads(failed),
                       unexpected_by_reason=Counter(json.loads(by_reason)), rows=int(n), docs_url=url)


def _store_verdict(tx: Tx, asset: str, partition_key: str, fingerprint: str, suite: SuiteResult) -> None:
    ensure_meta(tx)
    upsert_row(tx, f"{META_SCHEMA}.gx_validations", {
        "asset": asset, "partition_key": partition_key, "fingerprint": fingerprint, "success": suite.success,
        "failed_expectations": json.dumps(suite.failed_expectations),
        "unexpected_by_reason": json.dumps(dict(suite.unexpected_by_reason)), "docs_url": suite.docs_url,
        "rows_validated": suite.rows, "validated_at": utcnow()}, ("asset", "partition_key"))


def contract_check(contract: Contract, partitions_def: dg.PartitionsDefinition, *, pool: str | None
                   ) -> dg.AssetChecksDefinition:
    """The contract suite on one partition: the compiled Great Expectations suite over the rows that were
    loaded (nothing invalid may have slipped through), plus the partition's open dead letters by reason
    code. Outcomes:

    - passed: the suite passes and no row of the partition was dead-lettered;
    - failed, WARN: rows were dead-lettered (quarantined, replayable) but at most the contract's
      `dead_letter_rate_max` of them: what was loaded is sound, downstream may go on;
    - failed, ERROR where the contract is critical (blocking downstream in the run), WARN otherwise:
      the suite fails on loaded rows, the dead-letter rate breaks the SLO, or rows are held because the
      source sent columns no contract version lists (the check names them).
    """
    breach = dg.AssetCheckSeverity.ERROR if contract.critical else dg.AssetCheckSeverity.WARN
    slo = contract.slos.get("dead_letter_rate_max", 0.0)
    # What the suite is compiled from: a verdict is reused only under the same rules.
    rules_id = hashlib.sha256(f"{contract.version}{contract.columns!r}".encode()).hexdigest()[:16]
    tok = ident(contract.change_token)
    cols = ", ".join(ident(c) for c in contract.column_names)

    @dg.asset_check(
        asset=asset_key(contract), name=f"contract_{contract.name}", partitions_def=partitions_def,
        blocking=contract.critical, pool=pool,
        description=f"Contract {contract.name} v{contract.version}: GX suite on loaded rows, no open dead letters.",
        metadata={"contract_version": contract.version, "severity": contract.severity},
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
               data_docs: DataDocsResource) -> Any:
        wh = warehouse.get()
        with wh.held():  # one open warehouse for the range's batch and every day's verdict
            fresh = {} if context.has_partition_key else validate_range(wh, data_docs, context.partition_keys)
            yield from per_partition(context, None, lambda part: [judge(context, wh, data_docs, part,
                                                                        fresh.get(part))])

    def rows_of(s: Tx, part: str) -> tuple[int, str]:
        """(rows of the partition in raw, the fingerprint its verdict is stored under)."""
        window = daily_window(part)
        n_rows, newest = s.query(f"SELECT count(*), max(_loaded_at) FROM {raw_table(contract)}"
                                 f" WHERE {tok} >= ? AND {tok} < ?", (window.start, window.end))[0]
        return int(n_rows), f"{rules_id}:{n_rows}:{newest.isoformat() if newest else '-'}"

    def validate_range(wh: Any, data_docs: DataDocsResource, keys: Sequence[str]) -> dict[str, SuiteResult]:
        """A range's partitions validated as one batch: the suite's expectations are all row by row
        (`expectations.compiler.ROW_WISE`), so rows that pass together pass in any partition of them.
        When the batch fails, nothing is returned and each partition is validated alone, which says
        where."""
        with wh.session() as s:
            stored = wh.table_exists(META_SCHEMA, "gx_validations")
            todo = {}
            for part in keys:
                n, fingerprint = rows_of(s, part)
                if n and not (stored and _stored_verdict(s, contract.name, part, fingerprint)):
                    todo[part] = (n, fingerprint)
            if len(todo) < 2:
                return {}
            frame = s.query_arrow(f"SELECT {cols} FROM {raw_table(contract)} WHERE {tok} >= ? AND {tok} < ?",
                                  (daily_window(min(todo)).start, daily_window(max(todo)).end)).to_pandas()
        suite = data_docs.get().validate(frame, contract)
        if not suite.success:
            return {}
        verdicts = {part: replace(suite, rows=n) for part, (n, _) in todo.items()}
        with wh.transaction() as tx:
            for part, (_, fingerprint) in todo.items():
                _store_verdict(tx, contract.name, part, fingerprint, verdicts[part])
        return verdicts

    def judge(context: dg.AssetCheckExecutionContext, wh: Any, data_docs: DataDocsResource, part: str,
              validated: SuiteResult | None) -> dg.AssetCheckResult:
        with wh.session() as s:
            n_rows, fingerprint = rows_of(s, part)
            stored = n_rows and validated is None and wh.table_exists(META_SCHEMA, "gx_validations")
            suite = validated or (_stored_verdict(s, contract.name, part, fingerprint) if stored else None)
            frame = None
            if suite is None and n_rows:
                window = daily_window(part)
                frame = s.query_arrow(
                    f"SELECT {cols} FROM {raw_table(contract)} WHERE {tok} >= ? AND {tok} < ?",
                    (window.start, window.end)).to_pandas()
            dead = dict(s.query(
                f"SELECT reason_code, count(*) FROM {META_SCHEMA}.dead_letters WHERE asset = ? AND"
                " partition_key = ? AND status = 'open' GROUP BY reason_code", (contract.name, part)))
            held = s.query(
                f"SELECT unknown_columns, count(*) FROM {META_SCHEMA}.held_rows WHERE asset = ? AND"
                " partition_key = ? AND status = 'held' GROUP BY unknown_columns",
                (contract.name, part)) if wh.table_exists(META_SCHEMA, "held_rows") else []
            # The partition's volume: what its loads read (rows in raw move to later partitions as they
            # change, so the rows now in the window alone would overstate the rate).
            read = s.scalar(f"SELECT max(rows_read) FROM {META_SCHEMA}.load_log WHERE asset = ? AND partition_key = ?",
                            (contract.name, part)) or 0
        # The GX suite, stored with its Data Docs page (imports great_expectations: only here), unless
        # these very rows were validated under these rules before (a nightly re-run that loaded nothing).
        reused = suite is not None and validated is None
        if frame is not None:
            suite = data_docs.get().validate(frame, contract)
            with wh.transaction() as tx:
                _store_verdict(tx, contract.name, part, fingerprint, suite)
        n_dead = sum(dead.values())
        n_held = sum(n for _, n in held)
        held_cols = sorted({c for cols, _ in held for c in cols.split(",")})
        volume = max(int(read), n_dead + n_rows)
        rate = n_dead / volume if volume else 0.0
        suite_ok = suite is None or suite.success
        passed = n_dead == 0 and n_held == 0 and suite_ok
        breached = not suite_ok or rate > slo or bool(n_held)
        severity = breach if breached else dg.AssetCheckSeverity.WARN
        description = (f"{n_dead} open dead letter(s), rate {rate:.2%} (SLO {slo:.2%}); GX suite "
                       f"{'not run (no rows)' if suite is None else 'passed' if suite.success else 'FAILED'}")
        if n_held:
            description = (f"{n_held} row(s) held: source column(s) {', '.join(held_cols)} are in no version of "
                           f"contract {contract.name}; list them in a new version to load the rows. " + description)
        return recorded(context, wh, contract, f"contract_{contract.name}", dg.AssetCheckResult(
            passed=passed, severity=severity, description=description,
            metadata={
                "held_rows": n_held,
                "held_columns": dg.MetadataValue.json(held_cols),
                "dead_letters": n_dead,
                "dead_letters_by_reason": dg.MetadataValue.json(dead),
                "dead_letter_rate": round(rate, 5),
                "dead_letter_rate_slo": slo,
                "rows_validated": n_rows,
                "gx_reused": reused,
                "gx_success": bool(suite is None or suite.success),
                "gx_failed_expectations": dg.MetadataValue.json(suite.failed_expectations if suite else []),
                "gx_unexpected_by_reason": dg.MetadataValue.json(json.loads(json.dumps(
                    dict(suite.unexpected_by_reason) if suite else {}))),
                "contract_version": contract.version,
                **({"data_docs": dg.MetadataValue.url(suite.docs_url)} if suite and suite.docs_url else {}),
            },
        ), partition_key=part, remediable=breached)

    return _check


def deprecation_check(contract: Contract, partitions_def: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    """Warns once the pinned contract version is past its deprecation date."""

    @dg.asset_check(
        asset=asset_key(contract), name=f"contract_version_{contract.name}", partitions_def=partitions_def,
        description=f"The pinned version of contract {contract.name} is not past its deprecation date.",
        metadata={"contract_version": contract.version,
                  "deprecated_after": str(contract.deprecated_after) if contract.deprecated_after else "never"},
    )
    def _check(context: dg.AssetCheckExecutionContext) -> Any:
        today = datetime.now(UTC).date()
        past = contract.deprecated_on(today)
        verdict = dg.AssetCheckResult(
            passed=not past, severity=dg.AssetCheckSeverity.WARN,
            description=(f"{contract.ref} is deprecated since {contract.deprecated_after}: pin a newer version"
                         if past else f"{contract.ref} is current"
                         + (f" (deprecated after {contract.deprecated_after})" if contract.deprecated_after else "")),
            metadata={"deprecated_after": str(contract.deprecated_after or "never"), "today": today.isoformat()},
        )
        yield from per_partition(context, None, lambda part: [verdict])

    return _check


def flow_contracts(names: tuple[str, ...], boundaries: list[Boundary] | None = None) -> list[Contract]:
    """The contracts a flow's boundaries run under: meshline.yaml's choice, else the registry's pins."""
    reg = Registry()
    conf = {b.name: b for b in boundaries or []}
    if conf and set(conf) != set(names):
        raise ValueError(f"this flow needs boundaries {sorted(names)}, configuration gives {sorted(conf)}")
    return [reg.get(conf[n].contract, conf[n].contract_version) if n in conf else reg.get(n) for n in names]


def build_boundaries(names: tuple[str, ...], partitions_def: dg.PartitionsDefinition, pool: str | None,
                     boundaries: list[Boundary] | None = None, default_lookback: timedelta = timedelta(hours=6),
                     flow_description: str = "", per_run: int = 0) -> tuple[list[Contract], list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """(contracts, assets, checks) every flow shares: one asset per boundary, its contract check, its
    contract-version (deprecation) check and the warehouse-analytics checks (volume, freshness, gaps)."""
    contracts = flow_contracts(names, boundaries)
    conf = {b.name: b for b in boundaries or []}
    assets = [boundary_asset(c, partitions_def, pool=pool,
                             lookback=timedelta(hours=conf[c.name].lookback_hours) if c.name in conf
                             else default_lookback,
                             deadline=timedelta(minutes=conf[c.name].deadline_minutes if c.name in conf else 60),
                             flow_description=flow_description, per_run=per_run)
              for c in contracts]
    checks = [contract_check(c, partitions_def, pool=pool) for c in contracts]
    checks += [deprecation_check(c, partitions_def) for c in contracts]
    for c in contracts:
        tolerance = conf[c.name].volume_tolerance if c.name in conf else DEFAULT_TOLERANCE
        checks += analytics_checks(c, partitions_def, pool, tolerance)
    return contracts, assets, checks
