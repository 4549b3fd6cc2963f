"""Compaction of a DuckDB warehouse: merging the row groups that loads leave behind.

A DuckDB load replaces a changed row's stored version by deleting it and appending the new one, so
each load leaves delete marks scattered over the table's row groups and appends its rows as a row
group of their own. A load's commit goes to DuckDB's write-ahead log; the commit that finds the log past
MESHLINE_DUCKDB_CHECKPOINT_THRESHOLD (`assets.loading.warehouse.checkpoint_threshold`) checkpoints it
into the database file, and by default runs DuckDB's vacuum, which merges row groups that fit in fewer;
with MESHLINE_DUCKDB_VACUUM_AT above 0 (`assets.loading.loader._vacuum_at`) loads checkpoint without it
until that share of a table is replaced versions. Left on, the vacuum can make one small load pay for a
large merge: on a million-row table re-loaded with 1% changes and a checkpoint at every commit, a
commit that found four thinned row groups fitting in three rewrote them (360 k rows; 0.35-0.57 s instead
of 0.12-0.16). `compact` checkpoints the log and runs that vacuum once, on every table, at a time chosen
for it (`meshline compact`, and the dbt asset before every build): thinned row groups are merged, the
small ones loads appended are folded together, and the space of replaced versions is reused.

Postgres needs none of this: its loads replace rows in place and autovacuum reclaims dead tuples.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from assets.loading.ddl import META_SCHEMA, ensure_meta, utcnow
from assets.loading.warehouse import Tx, Warehouse


@dataclass
class Compaction:
    compaction_id: str | None
    tables: int = 0
    row_groups_before: int = 0
    row_groups_after: int = 0
    rows_stored_before: int = 0
    rows_stored_after: int = 0
    rows_live: int = 0
    seconds: float = 0.0
    note: str = ""

    @property
    def rows_reclaimed(self) -> int:
        return self.rows_stored_before - self.rows_stored_after

    def summary(self) -> str:
        if self.compaction_id is None:
            return self.note
        return (f"compacted {self.tables} table(s) in {self.seconds:.2f} s: row groups {self.row_groups_before:,}"
                f" -> {self.row_groups_after:,}; rows stored {self.rows_stored_before:,} -> {self.rows_stored_after:,}"
                f" ({self.rows_reclaimed:,} replaced or deleted versions reclaimed; {self.rows_live:,} live)")


def layout(tx: Tx) -> dict[str, tuple[int, int, int]]:
    """Per table of the warehouse file (but the compactions record itself): (row groups, rows stored, live
    rows). Rows stored count the versions deleted but still in their row group; live rows are what a query
    sees."""
    tables = tx.query("SELECT schema_name, table_name FROM duckdb_tables()"
                      " WHERE database_name = current_database() AND NOT temporary"
                      " AND (schema_name, table_name) <> (?, 'compactions') ORDER BY 1, 2", (META_SCHEMA,))
    out = {}
    for schema, table in tables:
        name = f'"{schema}"."{table}"'
        groups, stored = tx.query(
            "SELECT count(DISTINCT row_group_id), coalesce(sum(count) FILTER (WHERE column_path = '[0]'), 0)"
            " FROM pragma_storage_info(?)", (f"{schema}.{table}",))[0]
        out[f"{schema}.{table}"] = (int(groups), int(stored), int(tx.scalar(f"SELECT count(*) FROM {name}")))
    return out


def _totals(per_table: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    """Row groups, rows stored and live rows summed over the tables of a `layout`."""
    return tuple(sum(column) for column in zip(*per_table.values(), strict=True)) or (0, 0, 0)


def compact(warehouse: Warehouse, run_by: str = "meshline compact") -> Compaction:
    """Merge the warehouse's row groups (DuckDB); recorded in meshline.compactions. Nothing for Postgres."""
    if warehouse.dialect != "duckdb":
        return Compaction(None, note="Postgres warehouse: loads replace rows in place and autovacuum reclaims"
                                     " dead tuples; nothing to compact")
    t0 = time.perf_counter()
    result = Compaction(uuid.uuid4().hex)
    # The commit's checkpoint does the work: it writes what the write-ahead log holds into the database
    # file, and with vacuum on DuckDB considers every table's row groups for merging, not only those this
    # transaction wrote. The record is the write that makes the commit one.
    with warehouse.transaction(vacuum=True, checkpoint=True) as tx:
        ensure_meta(tx)
        before = layout(tx)
        result.tables = len(before)
        result.row_groups_before, result.rows_stored_before, result.rows_live = _totals(before)
        tx.execute(f"INSERT INTO {META_SCHEMA}.compactions (compaction_id, started_at, run_by, tables,"
                   " row_groups_before, rows_stored_before, rows_live) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (result.compaction_id, utcnow(), run_by, result.tables, result.row_groups_before,
                    result.rows_stored_before, result.rows_live))
    # the record's figures, written into the file too (no log left behind); no second merge pass
    with warehouse.transaction(vacuum=False, checkpoint=True) as tx:
        result.row_groups_after, result.rows_stored_after, _ = _totals(layout(tx))
        result.seconds = time.perf_counter() - t0
        tx.execute(f"UPDATE {META_SCHEMA}.compactions SET finished_at = ?, row_groups_after = ?,"
                   " rows_stored_after = ? WHERE compaction_id = ?",
                   (utcnow(), result.row_groups_after, result.rows_stored_after, result.compaction_id))
    return result
