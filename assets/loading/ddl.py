"""Tables the loader owns: raw.<boundary> (contract columns + provenance) and Meshline's bookkeeping."""

from __future__ import annotations

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


def raw_table(contract: Contract) -> str:
    return f"{RAW_SCHEMA}.{ident(contract.name)}"


def ensure_tables(tx: Tx, contract: Contract) -> None:
    for stmt in META_DDL:
        tx.execute(stmt)
    tx.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}")
    cols = [f"{ident(c.name)} {SQL_TYPES[c.type]}" for c in contract.columns]
    cols += [f"{name} {sql_type}" for name, sql_type in PROVENANCE.items()]
    cols.append(f"PRIMARY KEY ({ident(contract.idempotency_key)})")
    tx.execute(f"CREATE TABLE IF NOT EXISTS {raw_table(contract)} ({', '.join(cols)})")
    # A newer contract version may list more columns (schema drift opted into): add them, nullable.
    for c in contract.columns:
        tx.execute(f"ALTER TABLE {raw_table(contract)} ADD COLUMN IF NOT EXISTS {ident(c.name)} {SQL_TYPES[c.type]}")
