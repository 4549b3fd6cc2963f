"""The warehouse: one class over DuckDB (embedded default) and Postgres, chosen by a URL.

SQL is written once with `?` placeholders and the types both engines share (BIGINT, DOUBLE PRECISION,
TEXT, TIMESTAMP, DATE, BOOLEAN); the only engine-specific parts are connecting and bulk-inserting an
Arrow table (DuckDB scans it in place; Postgres takes it as CSV over COPY).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

SQL_TYPES = {
    "integer": "BIGINT",
    "number": "DOUBLE PRECISION",
    "string": "TEXT",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
    "boolean": "BOOLEAN",
}

DUCKDB_MEMORY_LIMIT = os.environ.get("MESHLINE_DUCKDB_MEMORY_LIMIT", "128MB")

_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)


# A DuckDB commit appends to the write-ahead log (one write, one fsync) until the log passes this size; that
# commit then checkpoints: it writes everything the log holds into the database file and merges row groups
# (DuckDB's vacuum). Meshline's connections never checkpoint when they close (DuckDB's do by default), so
# the next connection replays the log (a load does it on the thread that opens the warehouse, beside its
# source read); `meshline compact` and the dbt asset's compaction checkpoint it. Measured (make bench's
# million-row table, whose 1% re-run logs 1.5 MB, and its year of daily loads; one machine, one day),
# against a checkpoint at every commit ("0b", Meshline before):
# - a 1% re-run: commit 7-8 ms against 18-26, the re-run 0.098-0.108 s against 0.120-0.135 (medians of 10
#   alternating fresh processes);
# - twenty 1% loads in a row: mean 0.160 s against 0.163 (a checkpoint every other load instead);
# - a year of daily loads of six boundaries: 462 s against 470, the nightly hygiene 61.3 s against 60.7.
# At 4MiB the year took 487 s (nightly 63.8) and at 16MiB, DuckDB's default, 531 s: every connection
# replays up to that much log, and a million-row full load left 13 MB of it (its dead letters) behind.
def checkpoint_threshold() -> str:
    """MESHLINE_DUCKDB_CHECKPOINT_THRESHOLD (default 2MiB), checked."""
    raw = os.environ.get("MESHLINE_DUCKDB_CHECKPOINT_THRESHOLD", "2MiB")
    if not _SIZE.match(raw):
        raise ValueError("MESHLINE_DUCKDB_CHECKPOINT_THRESHOLD must be a size such as 2MiB, 512KB or 0b (every"
                         f" commit checkpoints), not {raw!r}")
    return raw.strip()

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def ident(name: str) -> str:
    """Validate an identifier that goes into SQL text (contract columns, table names)."""
    if not _IDENT.match(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return name


@dataclass(frozen=True)
class WarehouseURL:
    dialect: str  # "duckdb" | "postgres"
    path: Path | None = None  # duckdb
    dsn: str | None = None  # postgres, libpq form
    url: str = ""

    @staticmethod
    def parse(url: str) -> WarehouseURL:
        if url.startswith("duckdb:///"):
            return WarehouseURL("duckdb", path=Path(url[len("duckdb:///"):]), url=url)
        if url.startswith("duckdb://"):
            raise ValueError(f"a DuckDB warehouse URL needs an absolute path (duckdb:///abs/path): {url}")
        if url.startswith(("postgresql+psycopg2://", "postgresql://", "postgres://")):
            from sqlalchemy.engine import make_url

            u = make_url(url)
            parts = [f"host={u.host or '127.0.0.1'}", f"port={u.port or 5432}",
                     f"dbname={u.database or 'postgres'}", f"user={u.username or 'postgres'}"]
            if u.password:
                parts.append(f"password={u.password}")
            return WarehouseURL("postgres", dsn=" ".join(parts), url=url)
        raise ValueError(f"unsupported warehouse URL {url!r}: use duckdb:///PATH or postgresql+psycopg2://...")


class Stage:
    """The rows a load validated, held for its merge and read back under one name.

    Postgres: a temporary table (dropped at commit) filled by COPY. DuckDB: up to `memory_rows` rows are
    kept as Arrow and scanned in place; past that, everything goes to a Parquet file in a folder beside
    the warehouse file, read back as a temporary view. DuckDB keeps the rows of a transaction's temporary
    tables in memory whatever its memory limit (a million rows: about 230 MiB); the file costs a few MiB
    and its pages are the kernel's to evict. The file is removed when the transaction ends."""

    MEMORY_ROWS = 100_000

    def __init__(self, tx: Tx, name: str, body: str, memory_rows: int | None = None):
        self.tx, self.name, self.body = tx, ident(name), body
        self.memory_rows = self.MEMORY_ROWS if memory_rows is None else memory_rows
        self.rows = 0
        self._held: list[pa.Table] = []
        self._writer = None
        self._path: Path | None = None
        if tx.dialect == "duckdb":
            tx.execute(f"DROP VIEW IF EXISTS {self.name}")
        else:
            tx.execute(f"DROP TABLE IF EXISTS {self.name}")
            tx.execute(f"CREATE TEMPORARY TABLE {self.name} ({body}) ON COMMIT DROP")

    def append(self, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        self.rows += data.num_rows
        if self.tx.dialect == "postgres":
            self.tx.insert_arrow(self.name, data)
        elif self._writer is None and self.rows <= self.memory_rows:
            self._held.append(data)
        else:
            self._spill(data)

    def _spill(self, data: pa.Table) -> None:
        if self._writer is None:
            import uuid

            import pyarrow.parquet as pq

            self._path = self.tx.scratch_dir() / f"{self.name}-{uuid.uuid4().hex}.parquet"
            self._writer = pq.ParquetWriter(self._path, data.schema, compression="none", use_dictionary=False,
                                           write_statistics=False, data_page_size=1 << 20)  # cheapest to write
            self.tx.on_close(self._remove)
            held, self._held = self._held, []
            for t in held:
                self._writer.write_table(t)
        self._writer.write_table(data)

    def seal(self) -> None:
        """No more rows: make the stage readable by name."""
        if self.tx.dialect == "postgres":
            return
        if self._writer is not None:
            self._writer.close()
            path = str(self._path).replace("'", "''")
            self.tx.execute(f"CREATE TEMPORARY VIEW {self.name} AS SELECT * FROM read_parquet('{path}')")
        elif self._held:
            import pyarrow as pa

            self.tx.conn.register(self.name, pa.concat_tables(self._held))
            self.tx.on_close(lambda: self.tx.conn.unregister(self.name))
        else:  # nothing staged: an empty table with the stage's columns
            self.tx.execute(f"DROP TABLE IF EXISTS {self.name}")
            self.tx.execute(f"CREATE TEMPORARY TABLE {self.name} ({self.body})")

    def _remove(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)


class Tx:
    """One open transaction (or autocommit session) on the warehouse."""

    def __init__(self, dialect: str, conn: Any, scratch: Path | None = None, vacuum: bool = True):
        self.dialect = dialect
        self.conn = conn
        self.vacuum = vacuum  # see Warehouse.transaction
        self._cur = conn.cursor() if dialect == "postgres" else conn
        self._scratch = scratch
        self._on_close: list = []

    def scratch_dir(self) -> Path:
        """A folder beside the DuckDB warehouse file for a load's staged rows."""
        if self._scratch is None:
            raise RuntimeError("no scratch folder for this warehouse")
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def on_close(self, fn) -> None:
        self._on_close.append(fn)

    def close(self) -> None:
        while self._on_close:
            self._on_close.pop()()

    def stage(self, name: str, body: str) -> Stage:
        return Stage(self, name, body)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgres" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(self._sql(sql), tuple(params))

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT/UPDATE/DELETE and return how many rows it wrote."""
        if self.dialect == "duckdb":
            row = self.conn.execute(sql, tuple(params)).fetchone()
            return int(row[0]) if row else 0
        self._cur.execute(self._sql(sql), tuple(params))
        return max(self._cur.rowcount, 0)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self._cur.execute(self._sql(sql), tuple(params))
        return list(self._cur.fetchall())

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def query_arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        import pyarrow as pa

        if self.dialect == "duckdb":
            return self.conn.sql(sql, params=list(params) or None).to_arrow_table()
        self._cur.execute(self._sql(sql), tuple(params))
        names = [d[0] for d in self._cur.description]
        rows = self._cur.fetchall()
        return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)}) if rows else pa.table(
            {n: pa.array([], pa.null()) for n in names})

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Bulk-insert an Arrow table whose column names match the target's columns."""
        if data.num_rows == 0:
            return
        cols = ", ".join(ident(c) for c in data.column_names)
        if self.dialect == "duckdb":
            self.conn.register("_ml_arrow_in", data)
            try:
                self.conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _ml_arrow_in")
            finally:
                self.conn.unregister("_ml_arrow_in")
            return
        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(data, buf, write_options=pacsv.WriteOptions(include_header=False))
        buf.seek(0)
        self._cur.copy_expert(f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv)", buf)


def _transient_connect_error(exc: Exception) -> bool:
    text = str(exc)
    if "duckdb" in type(exc).__module__:
        return "lock" in text.lower()  # "Could not set lock on file": another process has it open
    if type(exc).__name__ == "OperationalError":  # psycopg2: refused, starting up, too many clients
        return any(s in text for s in ("Connection refused", "starting up", "too many clients",
                                       "shutting down", "timeout", "timed out"))
    return False


class Opening:
    """A warehouse transaction being opened on another thread. DuckDB builds its catalog (about 20-45 ms
    in a fresh process) with the GIL released, so the loader reads from the source meanwhile; `prepare`
    then runs on the same thread inside the new transaction (the loader's DDL check and watermark read),
    its result kept as `prepared`."""

    def __init__(self, warehouse: Warehouse, prepare: Callable[[Tx], Any] | None = None, vacuum: bool = True):
        self._tx: Tx | None = None
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self.prepared: Any = None
        self._thread = threading.Thread(target=self._open, args=(warehouse, prepare, vacuum),
                                        name="warehouse-open", daemon=True)
        self._thread.start()

    def _open(self, warehouse: Warehouse, prepare: Callable[[Tx], Any] | None, vacuum: bool) -> None:
        try:
            tx = warehouse._begin(warehouse._connect(cancel=self._cancel), vacuum)
        except BaseException as exc:  # raised to the caller by result()
            self._error = exc
            return
        try:
            if prepare is not None:
                self.prepared = prepare(tx)
        except BaseException as exc:
            self._error = exc
            _abandon(tx)
            return
        self._tx = tx

    def result(self) -> Tx:
        """The open transaction (waits for it); the error connecting or preparing raised, if any."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._tx

    def discard(self) -> None:
        """The load failed before it used the transaction: roll it back and close the connection (which
        lets go of DuckDB's file lock). A connect still retrying (the file locked by another process) stops
        at its next attempt instead of holding the caller's error back."""
        self._cancel.set()
        self._thread.join()
        if self._tx is not None:
            _abandon(self._tx)
            self._tx = None


def _abandon(tx: Tx) -> None:
    try:
        tx.conn.rollback()
    finally:
        tx.close()
        tx.conn.close()


class Warehouse:
    """Connections to the warehouse named by a URL; `transaction()` commits or rolls back as a unit."""

    def __init__(self, url: str):
        self.url = url
        self.parsed = WarehouseURL.parse(url)
        self.dialect = self.parsed.dialect

    def __repr__(self) -> str:
        return f"Warehouse({self.dialect})"

    # Connecting is retried while the failure is transient: another process holds the DuckDB file's lock
    # (a run worker and a sensor at once), or Postgres refuses connections (restarting, at its limit).
    CONNECT_ATTEMPTS = int(os.environ.get("MESHLINE_WAREHOUSE_CONNECT_ATTEMPTS", "12"))

    def _connect(self, cancel: threading.Event | None = None):
        """A connection; transient failures retried with backoff until `cancel` (if given) is set."""
        import random

        cancel = cancel or threading.Event()
        for attempt in range(self.CONNECT_ATTEMPTS):
            try:
                return self._connect_once()
            except Exception as exc:
                if not _transient_connect_error(exc) or attempt == self.CONNECT_ATTEMPTS - 1 or cancel.is_set():
                    raise
                # exponential backoff, full jitter; woken early by `cancel`
                if cancel.wait(random.uniform(0, min(10.0, 0.1 * 2 ** attempt))):
                    raise
        raise AssertionError("unreachable")

    def _connect_once(self):
        if self.dialect == "duckdb":
            import duckdb

            self.parsed.path.parent.mkdir(parents=True, exist_ok=True)
            # Inserts need not keep source order (the merge orders by change token), which lets DuckDB
            # stream them; temporary tables spill to disk past the memory limit instead of growing RSS.
            conn = duckdb.connect(str(self.parsed.path), config={
                "preserve_insertion_order": False, "memory_limit": DUCKDB_MEMORY_LIMIT})
            try:  # what is committed stays in the write-ahead log until a commit checkpoints (above)
                conn.execute("PRAGMA disable_checkpoint_on_shutdown")
            except BaseException:
                conn.close()
                raise
            return conn
        import psycopg2

        return psycopg2.connect(self.parsed.dsn)

    def _scratch(self) -> Path | None:
        p = self.parsed.path
        return None if p is None else p.parent / f".{p.name}.scratch"

    # The watermark each partition's last load committed, kept beside a DuckDB warehouse file (one small
    # file each, written after the commit): the loader starts reading the source on the bounds it gives
    # while the warehouse opens, and keeps what it read only if the watermark read inside the transaction
    # gives the same bounds. A hint, never the record: missing, stale or unreadable, it costs nothing.
    def hints_dir(self) -> Path | None:
        """The folder of remembered watermarks beside a DuckDB warehouse file (None for Postgres)."""
        p = self.parsed.path
        return None if p is None else p.parent / f".{p.name}.watermarks"

    def _hint_path(self, asset: str, partition_key: str) -> Path | None:
        folder = self.hints_dir()
        if folder is None:
            return None
        digest = hashlib.sha256(f"{asset}\0{partition_key}".encode()).hexdigest()[:16]
        return folder / f"{ident(asset)}-{digest}"

    def watermark_hint(self, asset: str, partition_key: str):
        from datetime import datetime

        path = self._hint_path(asset, partition_key)
        try:
            return None if path is None else datetime.fromisoformat(path.read_text())
        except (OSError, ValueError):
            return None

    def remember_watermark(self, asset: str, partition_key: str, watermark) -> None:
        path = self._hint_path(asset, partition_key)
        if path is None or watermark is None:
            return
        try:
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(watermark.isoformat())
            tmp.replace(path)  # atomic: a reader sees the old hint or the new one
        except OSError:
            pass  # a read-only folder: loads work as without hints

    def open_in_background(self, prepare: Callable[[Tx], Any] | None = None, vacuum: bool = True) -> Opening:
        """Start a transaction on another thread (then `prepare(tx)` in it); `transaction(opening)` goes on
        with it. `vacuum` as for `transaction`."""
        return Opening(self, prepare, vacuum)

    def _begin(self, conn, vacuum: bool = True, checkpoint: bool = False) -> Tx:
        """A transaction on `conn` (closed if beginning fails)."""
        try:
            if self.dialect == "duckdb":
                # Set by every transaction: the setting is the instance's, which connections of one process
                # to one file share.
                threshold = "0b" if checkpoint else checkpoint_threshold()
                conn.execute(f"SET checkpoint_threshold = '{threshold}'")
                if not vacuum:
                    conn.execute("SET max_vacuum_tasks = 0")
                conn.execute("BEGIN TRANSACTION")
        except BaseException:
            conn.close()
            raise
        return Tx(self.dialect, conn, self._scratch(), vacuum)

    @contextmanager
    def transaction(self, opening: Opening | None = None, vacuum: bool = True,
                    checkpoint: bool = False) -> Iterator[Tx]:
        """One transaction, on a new connection or the one `open_in_background` began; committed if the
        block ends normally, else rolled back; the connection closed after.

        DuckDB: the commit goes to the write-ahead log unless the log passes `checkpoint_threshold()`, or
        `checkpoint` is set: then it checkpoints, writing everything the log holds into the database file.
        `vacuum=False` (loads with MESHLINE_DUCKDB_VACUUM_AT above 0): a commit that checkpoints writes
        what the log holds and merges no row groups. At a checkpoint DuckDB merges adjacent row groups that
        deletes have thinned enough to fit in fewer; scattered replacements bring groups there every few
        loads, and such a checkpoint rewrote three or four whole row groups (360 k rows: a 1% re-run that
        checkpointed at every commit took 0.35-0.57 s instead of 0.12-0.16). `compact()` merges them
        instead, at a time chosen for it."""
        tx = opening.result() if opening is not None else self._begin(self._connect(), vacuum, checkpoint)
        conn = tx.conn
        try:
            try:
                yield tx
            except BaseException:
                conn.rollback()
                raise
            else:
                conn.commit()
                if not tx.vacuum and tx.dialect == "duckdb":  # global to the instance, which may be shared
                    conn.execute("RESET max_vacuum_tasks")
            finally:
                tx.close()
        finally:
            conn.close()

    @contextmanager
    def session(self) -> Iterator[Tx]:
        """Autocommit statements (reads, DDL outside a load)."""
        conn = self._connect()
        try:
            if self.dialect == "postgres":
                conn.autocommit = True
            tx = Tx(self.dialect, conn, self._scratch())
            try:
                yield tx
            finally:
                tx.close()
        finally:
            conn.close()

    def table_exists(self, schema: str, table: str) -> bool:
        with self.session() as s:
            return bool(s.scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                (schema, table)))
