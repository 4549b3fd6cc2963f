"""Load one partition of one boundary: DESIGN.md's data path, in one warehouse transaction.

    extract (token > watermark − lookback, inside the window, Arrow chunks)
      → evaluate the contract per row (expectations.rules)
      → valid rows: bulk into a staging table; invalid rows: dead letters (redacted, with locator)
      → merge: newest change token per key wins, only strictly newer rows replace what is there
      → watermark advanced, one load_log row; commit — or roll everything back

Schema drift, decided before anything is written:
- a source that lacks a required column (or the key, token or locator) refuses the load: nothing is
  written, the watermark does not move (`SourceSchemaError`);
- a missing optional column is read as null;
- a source column no contract version lists (and the contract does not ignore) holds every row read:
  a `meshline.held_rows` record each (locator, no values), nothing loaded, watermark unmoved, so the
  same rows load once a contract version lists the column (consumer opt-in); the hold is then released;
- a column whose values no longer cast to the contract's type dead-letters them as `type_mismatch`.

Conservation holds by construction and is asserted before commit:
rows_read = rows_loaded + rows_superseded + rows_dead_lettered + rows_held.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assets.loading.ddl import (
    META_SCHEMA,
    PROVENANCE,
    ensure_tables,
    raw_table,
    upsert_contract,
    upsert_row,
    utcnow,
)
from assets.loading.redaction import json_safe, redact_value
from assets.loading.warehouse import SQL_TYPES, Tx, Warehouse, ident
from assets.loading.watermark import Window, advance, extract_bounds
from assets.sources.base import Source
from expectations.contract import Contract
from expectations.reasons import LoadError, MeshlineError, SourceError, SourceSchemaError
from expectations.rules import Verdicts, evaluate, primary_reason

log = logging.getLogger("meshline.loader")

# Half a DuckDB row group: chunks that divide it keep the row groups a large load appends well filled.
DEFAULT_CHUNK_ROWS = 61_440


@dataclass
class LoadResult:
    load_id: str
    flow: str
    asset: str
    partition_key: str
    contract_version: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_superseded: int = 0
    rows_dead_lettered: int = 0
    rows_held: int = 0
    dead_letters_resolved: int = 0  # open dead letters whose record this load read again, now valid
    unknown_columns: tuple[str, ...] = ()
    missing_optional: tuple[str, ...] = ()
    watermark_from: datetime | None = None
    watermark_to: datetime | None = None
    extract_low: datetime | None = None
    extract_high: datetime | None = None
    reason_counts: Counter[str] = field(default_factory=Counter[str])
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float = 0.0

    @property
    def conserved(self) -> bool:
        return self.rows_read == (self.rows_loaded + self.rows_superseded + self.rows_dead_lettered
                                  + self.rows_held)


def use_releasing_memory_pool() -> None:
    """Arrow allocates through jemalloc with immediate decay, so freed chunk buffers go back to the OS at
    once and a large load's memory stays flat. An operator's ARROW_DEFAULT_MEMORY_POOL is left alone."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL") or pa.default_memory_pool().backend_name == "jemalloc":
        return
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # an Arrow build without jemalloc
        return
    pa.set_memory_pool(pool)


def _stage_ddl(contract: Contract) -> str:
    cols = [f"{ident(c.name)} {SQL_TYPES[c.type]}" for c in contract.columns]
    return ", ".join(cols + ["_row_no BIGINT"])


def _temp(tx: Tx, name: str, body: str) -> None:
    tx.execute(f"DROP TABLE IF EXISTS {name}")
    suffix = " ON COMMIT DROP" if tx.dialect == "postgres" else ""
    tx.execute(f"CREATE TEMPORARY TABLE {name} ({body}){suffix}")


def _py_values(arr: pa.ChunkedArray | pa.Array) -> list[Any]:
    """The column's values as Python objects; a value Python cannot hold (a timestamp past year 9999 from
    a typed source) as the text Arrow writes for it, so its dead letter still shows it."""
    try:
        values: list[Any] = arr.to_pylist()
        return values
    except (OverflowError, ValueError):
        out = []
        for i in range(len(arr)):
            try:
                out.append(arr[i].as_py())
            except (OverflowError, ValueError):
                out.append(pc.cast(arr.slice(i, 1), pa.string())[0].as_py())
        return out


def _plain_column(values: list[Any], arrow_type: pa.DataType) -> list[Any]:
    """A column's values made JSON-safe, as `redact_row` does value by value (strings, numbers and
    booleans pass as they are)."""
    if (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_integer(arrow_type)
            or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type) or pa.types.is_null(arrow_type)):
        return values
    return [json_safe(v) for v in values]


def _dead_letters(raw: pa.Table, typed: pa.Table, reasons: pa.Array, contract: Contract, *, flow: str,
                  asset: str, partition_key: str, run_id: str, seen_at: datetime, key: bytes) -> pa.Table:
    """One dead-letter row per invalid source row: redacted payload, reason codes, source locator.

    Built column by column (a chunk can hold tens of thousands of invalid rows); the payload and locator
    text, and so the dead letter's id, are exactly what `redact_row` and `json.dumps(sort_keys=True)`
    give row by row, so a re-run finds the dead letters an earlier version wrote."""
    names = sorted(raw.column_names)
    pii = set(contract.pii_columns)
    columns = []
    for name in names:
        values = _py_values(raw.column(name))
        if name in pii:
            cache: dict[Any, str | None] = {}
            values = [cache[v] if v in cache else cache.setdefault(v, redact_value(v, key)) for v in values]
        else:
            values = _plain_column(values, raw.schema.field(name).type)
        columns.append(values)
    keys = [None if k is None else str(k) for k in typed.column(contract.idempotency_key).to_pylist()]
    tokens = [None if t is None else t.isoformat() for t in typed.column(contract.change_token).to_pylist()]
    locs = _py_values(raw.column(contract.locator)) if contract.locator else [None] * raw.num_rows
    loc_name = contract.locator or "row"
    why_all = reasons.to_pylist()
    dumps = json.JSONEncoder(sort_keys=True, default=str).encode
    seen: set[str] = set()
    out: dict[str, list[Any]] = {c: [] for c in (
        "dead_letter_id", "record_key", "change_token", "locator", "source_locator", "payload", "reasons",
        "reason_code")}
    for i, (k, tok, loc, why) in enumerate(zip(keys, tokens, locs, why_all, strict=True)):
        payload = dumps(dict(zip(names, (col[i] for col in columns), strict=True)))
        locator = dumps({"system": contract.source_system, "table": contract.source_table, "key": k,
                         "change_token": tok, loc_name: None if loc is None else str(loc)})
        # Keyed, so the id of a row holding PII is no dictionary-attackable hash of it.
        dl_id = hmac.digest(key, f"{asset}|{locator}|{why}|{payload}".encode(), "sha256").hex()[:32]
        if dl_id in seen:
            continue
        seen.add(dl_id)
        for col, v in (("dead_letter_id", dl_id), ("record_key", k), ("change_token", tok), ("locator", locator),
                       ("source_locator", None if loc is None else str(loc)), ("payload", payload),
                       ("reasons", why), ("reason_code", primary_reason(why))):
            out[col].append(v)
    n = len(seen)
    constant = {"flow": flow, "asset": asset, "partition_key": partition_key, "contract": contract.name,
                "contract_version": contract.version, "source_system": contract.source_system,
                "source_table": contract.source_table, "run_id": run_id, "first_seen_at": seen_at,
                "status": "open"}
    order = ["dead_letter_id", "flow", "asset", "partition_key", "contract", "contract_version", "reason_code",
             "reasons", "source_system", "source_table", "record_key", "change_token", "locator",
             "source_locator", "payload", "run_id", "first_seen_at", "status"]
    data = {c: out[c] if c in out else [constant[c]] * n for c in order}
    return pa.table({c: pa.array(v, pa.timestamp("us") if c == "first_seen_at" else pa.string())
                     for c, v in data.items()})


def _unparsable(broken: list[Any], contract: Contract, *, asset: str, partition_key: str, run_id: str,
                seen_at: datetime, key: bytes) -> pa.Table:
    """Dead letters for records that never parsed: located by file and line, the text redacted whole."""
    from assets.loading.redaction import redact_value

    out = {}
    for m in broken:
        locator = json.dumps({"system": contract.source_system, "table": contract.source_table,
                              "file": m.file, "line": m.line}, sort_keys=True)
        dl_id = hmac.new(key, f"{asset}|{locator}".encode(), hashlib.sha256).hexdigest()[:32]
        out[dl_id] = {
            "dead_letter_id": dl_id, "flow": contract.boundary_flow, "asset": asset, "partition_key": partition_key,
            "contract": contract.name, "contract_version": contract.version, "reason_code": "malformed_record",
            "reasons": f"malformed_record:{m.error}"[:500], "source_system": contract.source_system,
            "source_table": contract.source_table, "record_key": None, "change_token": None, "locator": locator,
            "source_locator": f"{m.file}:{m.line}", "payload": json.dumps({"file": m.file, "line": m.line, "content": redact_value(m.raw, key)}),
            "run_id": run_id, "first_seen_at": seen_at, "status": "open",
        }
    return pa.Table.from_pylist(list(out.values()))


def _held(typed: pa.Table, contract: Contract, unknown: tuple[str, ...], *, flow: str, asset: str,
          partition_key: str, run_id: str, held_at: datetime, key: bytes) -> pa.Table:
    """One hold record per row: where to re-read it, never its values."""
    keys = typed.column(contract.idempotency_key).to_pylist()
    tokens = typed.column(contract.change_token).to_pylist()
    locs = typed.column(contract.locator).to_pylist() if contract.locator else [None] * typed.num_rows
    cols = ",".join(unknown)
    out: dict[str, dict[str, Any]] = {}
    for k, tok, loc in zip(keys, tokens, locs, strict=True):
        locator = json.dumps({"system": contract.source_system, "table": contract.source_table,
                              "key": None if k is None else str(k),
                              "change_token": None if tok is None else tok.isoformat(),
                              contract.locator or "row": None if loc is None else str(loc)}, sort_keys=True)
        hold_id = hmac.new(key, f"{asset}|{locator}|{cols}".encode(), hashlib.sha256).hexdigest()[:32]
        out[hold_id] = {
            "hold_id": hold_id, "flow": flow, "asset": asset, "partition_key": partition_key,
            "contract": contract.name, "contract_version": contract.version, "unknown_columns": cols,
            "record_key": None if k is None else str(k),
            "change_token": None if tok is None else tok.isoformat(), "locator": locator, "run_id": run_id,
            "held_at": held_at, "status": "held",
        }
    return pa.Table.from_pylist(list(out.values()))


def _first_per_key(rows: pa.Table, key: str) -> pa.Table:
    """The first row of each `key` (a load may dead-letter one record twice: the same row read twice)."""
    keys = rows.column(key)
    if pc.count_distinct(keys).as_py() == rows.num_rows:
        return rows
    first = (pa.table({"k": keys, "i": pa.array(np.arange(rows.num_rows))})
             .group_by("k", use_threads=False).aggregate([("i", "min")]).column("i_min"))
    return rows.take(pc.sort_indices(first))


def _insert_new(tx: Tx, table: str, key: str, rows: pa.Table) -> None:
    """Insert rows whose `key` is not there yet, once per key (re-runs write nothing twice)."""
    names = ", ".join(ident(n) for n in rows.column_names)
    if tx.dialect == "duckdb":  # DuckDB scans the Arrow table in place; the table may have no key index
        # Duplicates within the batch are dropped before the statement, which has no key index to lean on.
        tx.conn.register("_ml_new_rows", _first_per_key(rows, key))
        try:
            tx.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _ml_new_rows n"
                       f" WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{key} = n.{key})")
        finally:
            tx.conn.unregister("_ml_new_rows")
        return
    _temp(tx, "_ml_new", ", ".join(
        f"{n} {'TIMESTAMP' if pa.types.is_timestamp(rows.schema.field(n).type) else 'TEXT'}"
        for n in rows.column_names))
    tx.insert_arrow("_ml_new", rows)
    tx.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _ml_new ON CONFLICT ({key}) DO NOTHING")


def _supersede(tx: Tx, asset: str, letters: pa.Table, run_id: str, at: datetime) -> None:
    """An open dead letter of a record that this load dead-letters again under another id (a contract
    change gave it other reasons) is resolved as superseded: one record, one open dead letter."""
    _temp(tx, "_ml_dl_new", "dead_letter_id TEXT, locator TEXT")
    tx.insert_arrow("_ml_dl_new", letters.select(["dead_letter_id", "locator"]))
    tx.execute(f"UPDATE {META_SCHEMA}.dead_letters SET status = 'resolved', resolved_at = ?, resolved_by_run = ?,"
               " resolution = 'superseded' WHERE asset = ? AND status = 'open' AND locator IN"
               " (SELECT locator FROM _ml_dl_new) AND dead_letter_id NOT IN (SELECT dead_letter_id FROM _ml_dl_new)",
               (at, run_id, asset))


def _resolve_replayed(tx: Tx, contract: Contract, run_id: str, at: datetime) -> int:
    """Open dead letters of this asset whose record (same source locator) this load read and found valid
    are resolved, naming the run: the record was fixed at the source and is now loaded (or superseded
    by a newer version). Runs before this load's own dead letters are written."""
    assert contract.locator is not None  # the caller checks the contract has one
    loc = ident(contract.locator)
    return tx.execute_count(
        f"UPDATE {META_SCHEMA}.dead_letters SET status = 'resolved', resolved_at = ?, resolved_by_run = ?,"
        f" resolution = 'replayed' WHERE asset = ? AND status = 'open' AND source_locator IN"
        f" (SELECT CAST({loc} AS TEXT) FROM _ml_stage)", (at, run_id, contract.name))


def preflight(source: Source, contract: Contract) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
    """Before anything is written: is the source reachable, and do its columns match the contract?

    Returns (columns to read, missing optional columns, unknown columns). Raises `SourceUnreachable`
    when the source cannot be reached, `SourceError` when it can but the table cannot be read, and
    `SourceSchemaError` when it lacks a column no row can be loaded without."""
    try:
        offered = source.columns()
    except SourceError as exc:
        raise type(exc)(f"preflight of {contract.name} failed: {exc}; nothing was loaded and the watermark "
                        "did not move") from exc
    wanted = contract.source_columns
    if offered is None:  # the source cannot say (an API with no records yet): read what the contract names
        return wanted, (), ()
    offered_set = set(offered)
    missing = [c for c in wanted if c not in offered_set]
    refused = [c for c in missing if contract.needed(c)]
    if refused:
        raise SourceSchemaError(
            f"{source.system}.{source.table} lacks column(s) {refused} that contract {contract.name} "
            f"{contract.version} requires; nothing was loaded and the watermark did not move")
    known = set(wanted) | set(contract.ignored_columns) | set(source.synthetic_columns)
    unknown = tuple(c for c in offered if c not in known)
    return [c for c in wanted if c in offered_set], tuple(missing), unknown


def read_watermark(tx: Tx, asset: str, partition_key: str) -> datetime | None:
    value: datetime | None = tx.scalar(
        f"SELECT watermark FROM {META_SCHEMA}.watermarks WHERE asset = ? AND partition_key = ?", (asset, partition_key))
    return value


def _validated(chunks: Iterator[pa.Table], contract: Contract,
               missing_optional: tuple[str, ...]) -> Iterator[tuple[pa.Table, Verdicts]]:
    """Each chunk (optional columns the source lacks added as nulls) with its verdicts."""
    try:
        for chunk in chunks:
            for col in missing_optional:
                chunk = chunk.append_column(col, pa.nulls(chunk.num_rows))
            yield chunk, evaluate(chunk, contract)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:  # an extract stopped early lets go of its connection now
            close()


class _DryRun(Exception):
    """Ends a dry run at the point of commit (rolled back), carrying what the load would have done."""

    def __init__(self, result: LoadResult):
        super().__init__("dry run")
        self.result = result


class _LateDrift(Exception):
    """Columns no contract version lists appeared after the records the preflight saw."""

    def __init__(self, columns: tuple[str, ...]):
        super().__init__(", ".join(columns))
        self.columns = columns


def _guarded(chunks: Iterator[tuple[pa.Table, Verdicts]], what: str, deadline: float | None,
             counted: Callable[[], int]) -> Iterator[tuple[pa.Table, Verdicts]]:
    """The extract, with a deadline, and with any unexpected failure of the source or of a value named by
    boundary and partition (a `SourceError`; Meshline's own errors pass as they are)."""
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise LoadError(f"{what}: the load passed its deadline after reading {counted():,} rows; nothing "
                            "was written and the watermark did not move (deadline_minutes in meshline.yaml)")
        try:
            item = next(chunks)
        except StopIteration:
            return
        except (MeshlineError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a source answer no connector foresaw: named, never a bare traceback
            raise SourceError(f"{what}: reading the source failed after {counted():,} rows: "
                              f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        yield item


def load_partition(
    warehouse: Warehouse,
    source: Source,
    contract: Contract,
    *,
    partition_key: str,
    window: Window,
    run_id: str,
    lookback: timedelta = timedelta(hours=6),
    full_refresh: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    before_commit: Callable[[Tx], None] | None = None,
    progress: Callable[[str], None] | None = None,
    deadline_s: float | None = None,
    dry_run: bool = False,
) -> LoadResult:
    """Load one partition. Either everything (data, dead letters, watermark, load_log) commits, or nothing.

    `before_commit` runs inside the transaction after every write and before COMMIT (tests inject
    crashes there). `progress` receives human-readable progress lines (no row values). A load still
    reading after `deadline_s` seconds stops with a `LoadError` and writes nothing. A `dry_run` does
    all of it and rolls back at the point of commit: what the load would do, with nothing written.
    """
    run = functools.partial(_load, warehouse, source, contract, partition_key=partition_key, window=window,
                            run_id=run_id, lookback=lookback, full_refresh=full_refresh, chunk_rows=chunk_rows,
                            before_commit=before_commit, progress=progress, deadline_s=deadline_s,
                            dry_run=dry_run)
    try:
        return run()
    except _LateDrift as drift:
        # Rolled back: read again, holding every row, as if the preflight had seen the new columns.
        return run(late_unknown=drift.columns)
    except _DryRun as done:
        return done.result


def _load(
    warehouse: Warehouse,
    source: Source,
    contract: Contract,
    *,
    partition_key: str,
    window: Window,
    run_id: str,
    lookback: timedelta,
    full_refresh: bool,
    chunk_rows: int,
    before_commit: Callable[[Tx], None] | None,
    progress: Callable[[str], None] | None,
    deadline_s: float | None,
    dry_run: bool = False,
    late_unknown: tuple[str, ...] = (),
) -> LoadResult:
    t0 = time.perf_counter()
    source.deadline = None if deadline_s is None else time.monotonic() + deadline_s
    asset = contract.name
    say = progress or log.info
    use_releasing_memory_pool()
    key = warehouse.redaction_key
    raw_t = raw_table(contract)
    k, tok = ident(contract.idempotency_key), ident(contract.change_token)
    tiebreak = ident(contract.locator) if contract.locator else "_row_no"
    cols = [ident(c) for c in contract.column_names]
    read_cols, missing_optional, unknown = preflight(source, contract)
    unknown = unknown + tuple(c for c in late_unknown if c not in unknown)
    started = utcnow()
    result = LoadResult(load_id=uuid.uuid4().hex, flow=contract.boundary_flow, asset=asset,
                        partition_key=partition_key, contract_version=contract.version,
                        started_at=started, unknown_columns=unknown, missing_optional=missing_optional)
    if unknown:
        say(f"{asset} {partition_key}: source offers column(s) {list(unknown)} that contract "
            f"{contract.ref} does not list: holding the rows read (staged reject) until a contract "
            "version lists them")

    with warehouse.transaction() as tx:
        # Loads of one boundary take turns (a nightly, a compensation and a replay can meet): each picks its
        # winners against what the one before it committed, and reads the watermark it left.
        tx.lock(f"load:{asset}")
        ensure_tables(tx, contract)
        wm_from = read_watermark(tx, asset, partition_key)
        bounds = extract_bounds(window, wm_from, lookback, full_refresh or not source.uses_watermark)
        source.begin(tx, asset, partition_key, rescan=full_refresh)
        result.watermark_from, result.extract_low, result.extract_high = wm_from, bounds.low, bounds.high
        stage = tx.stage("_ml_stage", _stage_ddl(contract))

        max_token = None
        row_no = 0
        dead_letters: list[pa.Table] = []
        holds: list[pa.Table] = []
        chunks = _guarded(
            _validated(source.extract(read_cols, contract.change_token, bounds.low, bounds.inclusive,
                                      bounds.high, chunk_rows), contract, missing_optional),
            f"{asset} {partition_key} ({source!r})", source.deadline, lambda: result.rows_read)
        for chunk, verdicts in chunks:
            n = chunk.num_rows
            if unknown:
                holds.append(_held(verdicts.table, contract, unknown, flow=contract.boundary_flow, asset=asset,
                                   partition_key=partition_key, run_id=run_id, held_at=started,
                                   key=key))
                result.rows_read += n
                result.rows_held += n
                continue
            typed = verdicts.table.append_column("_row_no", pa.array(np.arange(row_no, row_no + n, dtype=np.int64)))
            row_no += n
            result.rows_read += n
            # The watermark moves only to tokens the window holds, read as the window filter read them.
            tokens = verdicts.table.column(contract.change_token)
            if pa.types.is_timestamp(tokens.type):
                tokens = pc.filter(tokens, pc.and_(pc.less(tokens, pa.scalar(bounds.high, tokens.type)),
                                                   pc.greater_equal(tokens, pa.scalar(bounds.low, tokens.type))))
            max_token = advance(max_token, pc.max(tokens).as_py())
            if verdicts.n_invalid:
                invalid = pc.invert(verdicts.valid)
                dead_letters.append(_dead_letters(
                    chunk.filter(invalid), verdicts.table.filter(invalid), verdicts.reasons, contract,
                    flow=contract.boundary_flow, asset=asset, partition_key=partition_key, run_id=run_id,
                    seen_at=started, key=key))
                result.rows_dead_lettered += verdicts.n_invalid
                result.reason_counts.update(verdicts.reason_counts)
                typed = typed.filter(verdicts.valid)
            stage.append(typed)
            if result.rows_read >= 5 * chunk_rows and (result.rows_read // chunk_rows) % 5 == 0:
                say(f"{asset} {partition_key}: {result.rows_read:,} rows read, "
                    f"{result.rows_dead_lettered:,} dead-lettered so far")

        seen = source.columns_seen()
        if seen is not None and not unknown:
            known = set(contract.source_columns) | set(contract.ignored_columns) | set(source.synthetic_columns)
            late = tuple(sorted(seen - known))
            if late:
                say(f"{asset} {partition_key}: column(s) {list(late)} that contract {contract.ref} does not list "
                    "appear past the first record: reading again, holding every row")
                raise _LateDrift(late)
        stage.seal()
        # The extract's buffers go back to the OS before the merge asks DuckDB for its share of memory.
        pa.default_memory_pool().release_unused()
        broken = source.malformed()
        if broken:
            dead_letters.append(_unparsable(broken, contract, asset=asset, partition_key=partition_key,
                                            run_id=run_id, seen_at=started, key=key))
            result.rows_read += len(broken)
            result.rows_dead_lettered += len(broken)
            result.reason_counts["malformed_record"] += len(broken)

        # Newest change token per key wins; a row replaces the stored one only if strictly newer, so a
        # re-run (equal tokens) and a late, older version (smaller token) both change nothing. Winners are
        # picked on a narrow projection, then only their rows are written, with provenance.
        _temp(tx, "_ml_win", f"{k} {SQL_TYPES[contract.column(contract.idempotency_key).type]}, _row_no BIGINT")
        if tx.dialect == "postgres":  # without statistics the planner misjudges the stage's size
            tx.execute("ANALYZE _ml_stage")
        newest = (f"SELECT {k}, {tok}, _row_no{'' if tiebreak == '_row_no' else ', ' + tiebreak},"
                  f" row_number() OVER (PARTITION BY {k} ORDER BY {tok} DESC, {tiebreak} DESC) AS _rn"
                  f" FROM _ml_stage")
        result.rows_loaded = tx.execute_count(
            f"INSERT INTO _ml_win SELECT {k}, _row_no FROM ({newest}) s WHERE s._rn = 1 AND NOT EXISTS ("
            f" SELECT 1 FROM {raw_t} r WHERE r.{k} = s.{k} AND r.{tok} >= s.{tok})")
        all_cols = cols + list(PROVENANCE)
        provenance = (contract.source_system, run_id, contract.version, result.started_at)
        tx.execute(f"DELETE FROM {raw_t} WHERE {k} IN (SELECT {k} FROM _ml_win)")
        tx.execute(f"INSERT INTO {raw_t} ({', '.join(all_cols)})"
                   f" SELECT {', '.join(cols)}, ?, {tok}, ?, ?, ? FROM _ml_stage"
                   f" WHERE _row_no IN (SELECT _row_no FROM _ml_win)", provenance)
        valid = result.rows_read - result.rows_dead_lettered - result.rows_held
        result.rows_superseded = valid - result.rows_loaded

        if contract.locator and contract.locator in contract.column_names:
            result.dead_letters_resolved = _resolve_replayed(tx, contract, run_id, started)
        if dead_letters:
            letters = pa.concat_tables(dead_letters, promote_options="default")
            _supersede(tx, asset, letters, run_id, started)
            _insert_new(tx, f"{META_SCHEMA}.dead_letters", "dead_letter_id", letters)
        if holds:
            _insert_new(tx, f"{META_SCHEMA}.held_rows", "hold_id", pa.concat_tables(holds))
            max_token = None  # held rows must be read again: the watermark stays where it was
        else:
            # The source no longer offers unknown columns (a contract version now lists them): the rows
            # held for this partition were read again by this load, so their hold is over.
            tx.execute(f"UPDATE {META_SCHEMA}.held_rows SET status = 'released', released_by_run = ?"
                       " WHERE asset = ? AND partition_key = ? AND status = 'held'", (run_id, asset, partition_key))

        source.finish(tx, asset, partition_key, run_id)
        wm_to = advance(wm_from, max_token)
        result.watermark_to = wm_to
        if wm_to is not None and wm_to != wm_from:
            upsert_row(tx, f"{META_SCHEMA}.watermarks", {"asset": asset, "partition_key": partition_key,
                       "watermark": wm_to, "run_id": run_id, "updated_at": utcnow()}, ("asset", "partition_key"))
        result.finished_at = utcnow()
        upsert_contract(tx, contract, loaded_at=result.finished_at)
        if not result.conserved:  # a bug, never a data condition: refuse to commit
            raise LoadError(f"conservation broken for {asset} {partition_key}: read {result.rows_read} != "
                            f"loaded {result.rows_loaded} + superseded {result.rows_superseded} + "
                            f"dead-lettered {result.rows_dead_lettered} + held {result.rows_held}")
        tx.execute(
            f"INSERT INTO {META_SCHEMA}.load_log (load_id, flow, asset, partition_key, rows_read, rows_loaded,"
            " rows_superseded, rows_dead_lettered, rows_held, watermark_from, watermark_to, contract_version,"
            " run_id, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (result.load_id, result.flow, asset, partition_key, result.rows_read, result.rows_loaded,
             result.rows_superseded, result.rows_dead_lettered, result.rows_held, wm_from, wm_to,
             contract.version, run_id,
             result.started_at, result.finished_at))
        if before_commit is not None:
            before_commit(tx)
        if dry_run:
            result.seconds = time.perf_counter() - t0
            raise _DryRun(result)  # rolls the transaction back
    result.seconds = time.perf_counter() - t0
    return result
