"""Tables the loader owns: raw.<boundary> (contract columns + provenance) and Meshline's bookkeeping."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from assets.loading.warehouse import SQL_TYPES, Tx, ident
from expectations.contract import Contract

RAW_SCHEMA = "raw"
META_SCHEMA = "meshline"

PROVENANCE = {
    "_source_system": "TEXT",
    "_change_token": "TIMESTAMP",
    "_run_id": "TEXT",
    "_contract_version": "TEXT",
    "_loaded_at": "TIMESTAMP",
}

META_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {META_SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.dead_letters (
        dead_letter_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        asset TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        contract TEXT NOT NULL,
        contract_version TEXT NOT NULL,
        reason_code TEXT NOT NULL,
        reasons TEXT NOT NULL,
        source_system TEXT NOT NULL,
        source_table TEXT NOT NULL,
        record_key TEXT,
        change_token TEXT,
        locator TEXT NOT NULL,
        payload TEXT NOT NULL,
        run_id TEXT NOT NULL,
        first_seen_at TIMESTAMP NOT NULL,
        status TEXT NOT NULL,
        resolved_at TIMESTAMP,
        resolved_by_run TEXT
    )""",
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.watermarks (
        asset TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        watermark TIMESTAMP NOT NULL,
        run_id TEXT NOT NULL,
        updated_at TIMESTAMP NOT NULL,
        PRIMARY KEY (asset, partition_key)
    )""",
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.load_log (
        load_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        asset TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        rows_read BIGINT NOT NULL,
        rows_loaded BIGINT NOT NULL,
        rows_superseded BIGINT NOT NULL,
        rows_dead_lettered BIGINT NOT NULL,
        rows_held BIGINT NOT NULL DEFAULT 0,
        watermark_from TIMESTAMP,
        watermark_to TIMESTAMP,
        contract_version TEXT NOT NULL,
        run_id TEXT NOT NULL,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP NOT NULL
    )""",
]


META_DDL += [
    # Warehouses created before rows could be held.
    f"ALTER TABLE {META_SCHEMA}.load_log ADD COLUMN IF NOT EXISTS rows_held BIGINT DEFAULT 0",
    # Staged reject: rows whose source offered columns no contract version lists. Not loaded, not
    # dropped: the record stays in the source (locator) and loads once a contract version lists them.
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.held_rows (
        hold_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        asset TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        contract TEXT NOT NULL,
        contract_version TEXT NOT NULL,
        unknown_columns TEXT NOT NULL,
        record_key TEXT,
        change_token TEXT,
        locator TEXT NOT NULL,
        run_id TEXT NOT NULL,
        held_at TIMESTAMP NOT NULL,
        status TEXT NOT NULL,
        released_by_run TEXT
    )""",
]


META_DDL += [
    # The bare locator value (a row id, `file:line`), so a replay that re-reads the record can resolve it.
    f"ALTER TABLE {META_SCHEMA}.dead_letters ADD COLUMN IF NOT EXISTS source_locator TEXT",
    f"ALTER TABLE {META_SCHEMA}.dead_letters ADD COLUMN IF NOT EXISTS resolution TEXT",
]

META_DDL.append(
    # The registry as data: who owns each contract version, how severe it is, its SLOs. Marts and
    # reports join on it. `pinned` comes from publishing the registry; `last_loaded_at` from loads.
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.contracts (
        contract TEXT NOT NULL,
        version TEXT NOT NULL,
        pinned BOOLEAN,
        severity TEXT NOT NULL,
        flow TEXT NOT NULL,
        source_system TEXT NOT NULL,
        source_table TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        change_token TEXT NOT NULL,
        owner_contract TEXT,
        owner_execution TEXT,
        owner_business TEXT,
        freshness_hours DOUBLE PRECISION,
        dead_letter_rate_max DOUBLE PRECISION,
        deprecated_after DATE,
        pii_columns TEXT NOT NULL,
        columns_json TEXT NOT NULL,
        last_loaded_at TIMESTAMP,
        PRIMARY KEY (contract, version)
    )""")

META_DDL.append(
    # File drops: which file (by content checksum) was delivered to which asset partition, so the same
    # file dropped again, under any name, is never loaded twice.
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.file_manifest (
        checksum TEXT NOT NULL,
        asset TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        file_name TEXT NOT NULL,
        records BIGINT NOT NULL,
        run_id TEXT NOT NULL,
        loaded_at TIMESTAMP NOT NULL,
        PRIMARY KEY (checksum, asset, partition_key)
    )""")

META_DDL.append(
    # File drops: the change-token range of each file's records (by content checksum, so it never goes
    # stale), so a load skips without parsing the files that hold nothing for its window.
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.file_index (
        checksum TEXT NOT NULL,
        asset TEXT NOT NULL,
        file_name TEXT NOT NULL,
        records BIGINT NOT NULL,
        min_token TIMESTAMP,
        max_token TIMESTAMP,
        untokened BOOLEAN NOT NULL,
        indexed_at TIMESTAMP NOT NULL,
        PRIMARY KEY (checksum, asset)
    )""")

META_DDL.append(
    # Declared reconciliation rules: the latest evaluation of each rule for each partition (counts and
    # sample keys, never PII), what the rule's check, the scorecard and the report read.
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.rule_findings (
        flow TEXT NOT NULL,
        rule TEXT NOT NULL,
        kind TEXT NOT NULL,
        a_asset TEXT NOT NULL,
        b_asset TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        checked BIGINT NOT NULL,
        failing BIGINT NOT NULL,
        pending BIGINT NOT NULL,
        as_of TIMESTAMP,
        sample_keys TEXT NOT NULL,
        critical BOOLEAN NOT NULL,
        run_id TEXT NOT NULL,
        evaluated_at TIMESTAMP NOT NULL,
        PRIMARY KEY (flow, rule, partition_key)
    )""")

META_DDL.append(
    # The last Great Expectations verdict of each boundary partition, with what it was run over (row
    # count and newest load time in the window, the contract version and its rules' fingerprint): a
    # re-run whose partition is unchanged reuses it instead of validating the same rows again.
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.gx_validations (
        asset TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        success BOOLEAN NOT NULL,
        failed_expectations TEXT NOT NULL,
        unexpected_by_reason TEXT NOT NULL,
        docs_url TEXT,
        rows_validated BIGINT NOT NULL,
        validated_at TIMESTAMP NOT NULL,
        PRIMARY KEY (asset, partition_key)
    )""")

META_DDL.append(
    # Each failing or pending key of a rule's latest evaluation of a partition (redacted when the key is
    # PII): what the dbt mart marts.reconciliation_failures, the demo and the synthetic run read.
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.rule_failures (
        flow TEXT NOT NULL,
        rule TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        record_key TEXT NOT NULL,
        state TEXT NOT NULL,
        evaluated_at TIMESTAMP NOT NULL
    )""")

_CONTRACT_COLS = ("contract", "version", "severity", "flow", "source_system", "source_table", "idempotency_key",
                  "change_token", "owner_contract", "owner_execution", "owner_business", "freshness_hours",
                  "dead_letter_rate_max", "deprecated_after", "pii_columns", "columns_json")


def _contract_row(c: Contract) -> tuple[Any, ...]:
    import json

    cols = [{"name": col.name, "type": col.type, "required": col.required, "pii": col.pii,
             "pattern": col.pattern, "allowed_values": list(col.allowed_values) if col.allowed_values else None,
             "min": col.min, "max": col.max} for col in c.columns]
    return (c.name, c.version, c.severity, c.boundary_flow, c.source_system, c.source_table, c.idempotency_key,
            c.change_token, c.owners.get("contract"), c.owners.get("execution"), c.owners.get("business"),
            c.slos.get("freshness_hours"), c.slos.get("dead_letter_rate_max"), c.deprecated_after,
            ",".join(c.pii_columns), json.dumps(cols, sort_keys=True))


def upsert_row(tx: Tx, table: str, row: dict[str, Any], key: tuple[str, ...]) -> None:
    """Update the row with `row`'s key, or insert it when there is none. The UPDATE comes first: DuckDB's
    INSERT ... ON CONFLICT DO UPDATE costs about four times as much, and a load rewrites rows that exist
    (its watermark, its contract's last load); the upsert settles a key another writer inserted since."""
    sets = [c for c in row if c not in key]
    where = " AND ".join(f"{ident(k)} = ?" for k in key)
    if tx.execute_count(f"UPDATE {table} SET {', '.join(f'{ident(c)} = ?' for c in sets)} WHERE {where}",
                        (*(row[c] for c in sets), *(row[k] for k in key))):
        return
    tx.execute(f"INSERT INTO {table} ({', '.join(ident(c) for c in row)}) VALUES ({', '.join('?' * len(row))})"
               f" ON CONFLICT ({', '.join(ident(k) for k in key)}) DO UPDATE SET"
               f" {', '.join(f'{ident(c)} = excluded.{ident(c)}' for c in sets)}", tuple(row.values()))


def upsert_contract(tx: Tx, contract: Contract, *, pinned: bool | None = None, loaded_at: datetime | None = None) -> None:
    """Write one contract version's row; `pinned` and `last_loaded_at` are only set when given."""
    row = dict(zip(_CONTRACT_COLS, _contract_row(contract), strict=True))
    if pinned is not None:
        row["pinned"] = pinned
    if loaded_at is not None:
        row["last_loaded_at"] = loaded_at
    upsert_row(tx, f"{META_SCHEMA}.contracts", row, ("contract", "version"))


def raw_table(contract: Contract) -> str:
    return f"{RAW_SCHEMA}.{ident(contract.name)}"


# Which DDL a warehouse has had applied, by fingerprint of the statements: a load checks it with two
# catalog reads instead of running some thirty idempotent statements (CREATE ... IF NOT EXISTS, ALTER ...
# ADD COLUMN IF NOT EXISTS) each time. Any change to the DDL, or any of the tables gone, runs them again.
_APPLIED = "ddl_applied"


def _fingerprint(stmts: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n;\n".join(stmts).encode()).hexdigest()[:32]


def _meta_tables() -> list[str]:
    import re

    return re.findall(rf"CREATE TABLE IF NOT EXISTS {META_SCHEMA}\.(\w+)", "\n".join(META_DDL))


# DuckDB keeps dead letters without a PRIMARY KEY, whose index upkeep grows with the table. Ids stay unique
# as they are written: `loader._insert_new` skips ids already there (DuckDB's file lock makes each load the
# only writer); dbt's unique test on the source and the re-run invariant tests check it.
_DEAD_LETTER_PK = "dead_letter_id TEXT PRIMARY KEY,"


def meta_ddl(dialect: str) -> list[str]:
    """The bookkeeping DDL as `dialect` runs it."""
    if dialect != "duckdb":
        return META_DDL
    return [s.replace(_DEAD_LETTER_PK, "dead_letter_id TEXT NOT NULL,") for s in META_DDL]


META_TABLES = _meta_tables()  # META_DDL is complete above
META_FINGERPRINTS = {d: _fingerprint(meta_ddl(d)) for d in ("duckdb", "postgres")}
assert _DEAD_LETTER_PK in "".join(META_DDL) and len(set(META_FINGERPRINTS.values())) == 2


def _raw_ddl(tx: Tx, contract: Contract) -> list[str]:
    cols = [f"{ident(c.name)} {SQL_TYPES[c.type]}" for c in contract.columns]
    cols += [f"{name} {sql_type}" for name, sql_type in PROVENANCE.items()]
    if tx.dialect == "postgres":
        cols.append(f"PRIMARY KEY ({ident(contract.idempotency_key)})")
    # DuckDB: no PRIMARY KEY. Its index upkeep costs more than the rest of a load, and the merge keeps one
    # row per key by construction (winners are unique per key; the versions they replace are deleted
    # first; DuckDB's file lock makes each load the only writer). The invariant and dbt tests check it.
    stmts = [f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}",
             f"CREATE TABLE IF NOT EXISTS {raw_table(contract)} ({', '.join(cols)})"]
    # A newer contract version may list more columns (schema drift opted into): add them, nullable.
    stmts += [f"ALTER TABLE {raw_table(contract)} ADD COLUMN IF NOT EXISTS {ident(c.name)} {SQL_TYPES[c.type]}"
              for c in contract.columns]
    return stmts


def _applied(tx: Tx, raw: tuple[str, str] | None) -> dict[str, str]:
    """Fingerprints of the DDL applied so far, by object ('meta', or a raw table's name); empty when the
    record or any table it speaks for is missing."""
    want = {(META_SCHEMA, t) for t in [*META_TABLES, _APPLIED]} | ({raw} if raw else set())
    # DuckDB: duckdb_columns() is its cheapest catalog read (duckdb_tables() sizes every table).
    catalog = ("(SELECT DISTINCT schema_name AS table_schema, table_name FROM duckdb_columns()) t"
               if tx.dialect == "duckdb" else "information_schema.tables")
    present = {tuple(r) for r in tx.query(
        f"SELECT table_schema, table_name FROM {catalog}"
        f" WHERE table_schema IN (?, ?) AND table_name IN ({', '.join('?' * len(want))})",
        (META_SCHEMA, RAW_SCHEMA, *sorted({t for _, t in want})))}
    if not want <= present:
        return {}
    return dict(tx.query(f"SELECT object, fingerprint FROM {META_SCHEMA}.{_APPLIED}"))


def _record(tx: Tx, obj: str, fingerprint: str) -> None:
    # an upsert: two first loads at once on Postgres (different assets) both record 'meta'
    upsert_row(tx, f"{META_SCHEMA}.{_APPLIED}", {"object": obj, "fingerprint": fingerprint,
                                                 "applied_at": utcnow()}, ("object",))


def utcnow() -> datetime:
    """Now, in UTC, naive: how every Meshline timestamp is stored."""
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(tzinfo=None)


def _apply_meta(tx: Tx) -> None:
    for stmt in meta_ddl(tx.dialect):
        tx.execute(stmt)
    tx.execute(f"CREATE TABLE IF NOT EXISTS {META_SCHEMA}.{_APPLIED} (object TEXT PRIMARY KEY,"
               " fingerprint TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)")
    _record(tx, "meta", META_FINGERPRINTS[tx.dialect])


def ensure_meta(tx: Tx) -> None:
    """Meshline's bookkeeping tables, created or brought up to date (idempotent)."""
    if _applied(tx, None).get("meta") != META_FINGERPRINTS[tx.dialect]:
        _apply_meta(tx)


def ensure_tables(tx: Tx, contract: Contract) -> None:
    """The bookkeeping tables and the contract's raw table, created or brought up to date (idempotent)."""
    raw = _raw_ddl(tx, contract)
    raw_fingerprint = _fingerprint(raw)
    applied = _applied(tx, (RAW_SCHEMA, contract.name))
    if applied.get("meta") != META_FINGERPRINTS[tx.dialect] or applied.get(raw_table(contract)) != raw_fingerprint:
        # DDL is due: one transaction at a time applies it (two CREATE SCHEMA IF NOT EXISTS at once collide
        # on Postgres), and whoever waited reads what the other committed before deciding again.
        tx.lock("ddl")
        applied = _applied(tx, (RAW_SCHEMA, contract.name))
    if applied.get("meta") != META_FINGERPRINTS[tx.dialect]:
        _apply_meta(tx)
    if applied.get(raw_table(contract)) != raw_fingerprint:
        for stmt in raw:
            tx.execute(stmt)
        _record(tx, raw_table(contract), raw_fingerprint)
