"""The warehouse: one class over DuckDB (embedded default) and Postgres, chosen by a URL.

SQL is written once with `?` placeholders and the types both engines share (BIGINT, DOUBLE PRECISION,
TEXT, TIMESTAMP, DATE, BOOLEAN); the only engine-specific parts are connecting and bulk-inserting an
Arrow table (DuckDB scans it in place; Postgres takes it as CSV over COPY).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assets.loading.redaction import DEV_KEY, without_secrets
from expectations.reasons import LoadError

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
        raise ValueError(f"unsupported warehouse URL {without_secrets(url)!r}: use duckdb:///PATH or "
                         "postgresql+psycopg2://...")


class Stage:
    """The rows a load validated, held for its merge and read back under one name.

    Postgres: a temporary table (dropped at commit) filled by COPY. DuckDB: up to `memory_rows` rows are
    kept as Arrow and scanned in place; past that, everything goes to a Parquet file in a folder beside
    the warehouse file, read back as a temporary view. DuckDB keeps the rows of a transaction's temporary
    tables in memory whatever its memory limit; the file's pages are the kernel's to evict. The file is removed when the transaction ends."""

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
        try:
            self._write(data)
        except OSError as exc:  # a full disk, say: name the file, not only the errno
            raise LoadError(f"staging rows to {self._path} failed: {exc.strerror or exc}") from exc

    def _write(self, data: pa.Table) -> None:
        if self._writer is None:
            import uuid

            import pyarrow.parquet as pq

            # The writer's pid in the name: a later load removes what a killed one left (`Warehouse._sweep`).
            self._path = self.tx.scratch_dir() / f"{self.name}-{os.getpid()}-{uuid.uuid4().hex}.parquet"
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

    def __init__(self, dialect: str, conn: Any, scratch: Path | None = None, key: bytes = DEV_KEY.encode()):
        self.dialect = dialect
        self.conn = conn
        self.key = key  # the warehouse's redaction key: what the audit chain is keyed by
        self._cur = conn.cursor() if dialect == "postgres" else conn
        self._scratch = scratch
        self._on_close: list[Any] = []

    def scratch_dir(self) -> Path:
        """A folder beside the DuckDB warehouse file for a load's staged rows."""
        if self._scratch is None:
            raise RuntimeError("no scratch folder for this warehouse")
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def on_close(self, fn: Callable[[], None]) -> None:
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
        return max(int(self._cur.rowcount), 0)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(self._sql(sql), tuple(params))
        return list(self._cur.fetchall())

    def lock(self, name: str) -> None:
        """Hold a lock named `name` until this transaction ends, waiting for whoever holds it (Postgres; a
        DuckDB file has one writer at a time already)."""
        if self.dialect == "postgres":
            key = int.from_bytes(hashlib.sha256(f"meshline:{name}".encode()).digest()[:8], "big", signed=True)
            self.execute("SELECT pg_advisory_xact_lock(?)", (key,))

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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _transient_connect_error(exc: Exception) -> bool:
    text = str(exc)
    if "duckdb" in type(exc).__module__:
        return "lock" in text.lower()  # "Could not set lock on file": another process has it open
    if type(exc).__name__ == "OperationalError":  # psycopg2: refused, starting up, too many clients
        return any(s in text for s in ("Connection refused", "starting up", "too many clients",
                                       "shutting down", "timeout", "timed out"))
    return False


class Warehouse:
    """Connections to the warehouse named by a URL; `transaction()` commits or rolls back as a unit.

    `duckdb_memory_limit` bounds DuckDB's memory (past it, a merge spills to disk); `connect_attempts`
    is how often a transient connection failure is tried before it is raised; `redaction_key` keys the
    HMAC that stands in for PII values in what is written beside the raw tables."""

    def __init__(self, url: str, *, duckdb_memory_limit: str = "128MB", connect_attempts: int = 12,
                 redaction_key: bytes = DEV_KEY.encode()):
        self.url = url
        self.parsed = WarehouseURL.parse(url)
        self.dialect = self.parsed.dialect
        self.duckdb_memory_limit = duckdb_memory_limit
        self.connect_attempts = connect_attempts
        self.redaction_key = redaction_key

    def __repr__(self) -> str:
        return f"Warehouse({self.dialect})"

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep a DuckDB warehouse open in this process while inside: every session and transaction then
        joins the open database instead of opening the file again. Other processes cannot open the file
        meanwhile (dbt's included), so hold it only around work this process does alone. On Postgres,
        nothing."""
        if self.dialect != "duckdb":
            yield
            return
        anchor = self._connect()
        try:
            yield
        finally:
            anchor.close()

    def _connect(self) -> Any:
        """A connection; a transient failure (another process holds the DuckDB file, Postgres refuses
        connections while it restarts or is at its limit) is retried with backoff and jitter."""
        import random
        import time

        for attempt in range(self.connect_attempts):
            try:
                return self._connect_once()
            except Exception as exc:
                if not _transient_connect_error(exc) or attempt == self.connect_attempts - 1:
                    raise
                # exponential backoff, jittered by a tenth only: the budget an outage gets is predictable
                time.sleep(min(10.0, 0.1 * 2 ** attempt) * random.uniform(0.9, 1.1))
        raise AssertionError("unreachable")

    def _connect_once(self) -> Any:
        if self.dialect == "duckdb":
            import duckdb

            assert self.parsed.path is not None
            self.parsed.path.parent.mkdir(parents=True, exist_ok=True)
            # Inserts need not keep source order (the merge orders by change token), which lets DuckDB
            # stream them; temporary tables spill to disk past the memory limit instead of growing RSS.
            return duckdb.connect(str(self.parsed.path), config={
                "preserve_insertion_order": False, "memory_limit": self.duckdb_memory_limit})
        import psycopg2

        return psycopg2.connect(self.parsed.dsn)

    def _scratch(self) -> Path | None:
        p = self.parsed.path
        return None if p is None else p.parent / f".{p.name}.scratch"

    def _sweep(self) -> None:
        """Remove staged-row files that a killed load left beside the DuckDB file (they hold raw values,
        PII included): those whose writing process is gone."""
        folder = self._scratch()
        if folder is None or not folder.is_dir():
            return
        for path in folder.glob("*-*-*.parquet"):
            pid = path.stem.split("-")[-2]
            if pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)

    def _begin(self, conn: Any) -> Tx:
        """A transaction on `conn` (closed if beginning fails)."""
        try:
            if self.dialect == "duckdb":
                self._sweep()  # this connection holds the file: no other process is loading into it
                conn.execute("BEGIN TRANSACTION")
        except BaseException:
            conn.close()
            raise
        return Tx(self.dialect, conn, self._scratch(), self.redaction_key)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One transaction on a new connection: committed if the block ends normally, else rolled back;
        the connection closed after."""
        tx = self._begin(self._connect())
        conn = tx.conn
        try:
            try:
                yield tx
            except BaseException:
                # A connection that is gone cannot roll back: what broke it is the error to report.
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise
            else:
                conn.commit()
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
            tx = Tx(self.dialect, conn, self._scratch(), self.redaction_key)
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
