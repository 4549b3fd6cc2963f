"""SQL sources: DuckDB files, Postgres (streamed through COPY), anything else SQLAlchemy can reach."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from assets.loading.warehouse import WarehouseURL, ident
from assets.sources.base import Source
from expectations.reasons import SourceError, SourceUnreachable


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _rebatch(tables: Iterator[pa.Table | pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    pending: list[Any] = []
    n = 0
    for t in tables:
        if t.num_rows == 0:
            continue
        pending.append(t if isinstance(t, pa.Table) else pa.Table.from_batches([t]))
        n += t.num_rows
        while n >= rows:
            merged = pa.concat_tables(pending)
            yield merged.slice(0, rows)
            rest = merged.slice(rows)
            pending, n = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if n:
        yield pa.concat_tables(pending)


def _in_window(tokens: pa.ChunkedArray, low: datetime, low_inclusive: bool, high: datetime) -> pa.Array:
    """Rows whose text token, read as the loader reads it, lies in the window; and every row whose token
    cannot be read (the contract dead-letters it instead of it never being seen)."""
    from expectations.rules import coerce_column

    typed, _ = coerce_column(tokens, pa.timestamp("us"))
    lo = pa.scalar(low, typed.type)
    above = pc.greater_equal(typed, lo) if low_inclusive else pc.greater(typed, lo)
    inside = pc.and_(above, pc.less(typed, pa.scalar(high, typed.type)))
    return pc.fill_null(inside, True)


class SqlSource(Source):
    """A table (or view), or a query, in a SQL database. URL forms: duckdb:///PATH,
    postgresql+psycopg2://..., or any SQLAlchemy URL. A `query` is read as a subquery, the change-token
    window applied around it; it may not contain `?` (the window's placeholders)."""


    def __init__(self, url: str, table: str, system: str, query: str | None = None, max_value_mb: float = 2):
        self.url = url
        # A Postgres row is read whole within one block of the COPY stream: the longest value it may hold.
        self.block_bytes = int(max(1.0, max_value_mb) * (1 << 20))
        self.table = table
        self.system = system
        self.query = query
        self._spare = None  # a Postgres connection the preflight opened, for the extract to use
        if query is not None:
            q = query.strip().rstrip(";")
            if "?" in q:
                raise ValueError(f"{system}.{table}: a source query may not contain '?'")
            if ";" in q:
                raise ValueError(f"{system}.{table}: a source query is one SELECT statement (no ';')")
            self._qualified = f"({q}) AS meshline_source"
        else:
            schema, _, name = table.rpartition(".")
            self._qualified = ".".join(ident(p) for p in ([schema] if schema else []) + [name])
        if url.startswith("duckdb:"):
            self.dialect = "duckdb"
        elif url.startswith(("postgresql", "postgres:")):
            self.dialect = "postgres"
        else:
            self.dialect = "sqlalchemy"

    def __repr__(self) -> str:
        return f"SqlSource({self.system}.{self.table}, {self.dialect})"

    def _where(self, token: str, low_inclusive: bool) -> str:
        """The window on the change token; rows with no token belong to no window, so every load reads them
        and the contract dead-letters them (the token is required) instead of never seeing them."""
        op = ">=" if low_inclusive else ">"
        tok = ident(token)
        return f"(({tok} {op} ? AND {tok} < ?) OR {tok} IS NULL)"

    def columns(self) -> list[str]:
        """The table's columns. Preflight: `SourceUnreachable` when the database cannot be reached,
        `SourceError` when it can but the table cannot be read."""
        sql = f"SELECT * FROM {self._qualified} WHERE 1 = 0"
        where = f"the {self.dialect} source of {self.system}.{self.table}"
        conn: Any
        try:
            if self.dialect == "duckdb":
                import duckdb

                path = WarehouseURL.parse(self.url).path
                if path is None or not os.path.exists(path):  # DuckDB would create an empty file: say what is wrong
                    raise FileNotFoundError(f"no database file {path}")
                conn = duckdb.connect(str(path), read_only=True)
            elif self.dialect == "postgres":
                import psycopg2

                conn = psycopg2.connect(WarehouseURL.parse(self.url).dsn, connect_timeout=10)
                conn.set_session(readonly=True)  # a source is read, never written
            else:
                import sqlalchemy as sa

                conn = sa.create_engine(self.url).connect()
        except Exception as exc:  # any driver error on connect: not reachable
            raise SourceUnreachable(f"cannot connect to {where}: {type(exc).__name__}: {_first_line(exc)}") from exc
        try:
            if self.dialect == "duckdb":
                return [d[0] for d in conn.execute(sql).description]
            if self.dialect == "postgres":
                with conn.cursor() as cur:
                    cur.execute(sql)
                    names = [d[0] for d in cur.description]
                conn.rollback()
                # The extract that follows a preflight reads over this connection (one connect per load).
                if self._spare is not None:
                    self._spare.close()
                self._spare, conn = conn, None
                return names
            import sqlalchemy as sa

            return list(conn.execute(sa.text(sql)).keys())
        except Exception as exc:  # reachable, but the table is absent or not readable
            what = "its query" if self.query else f"table {self.table!r}"
            raise SourceError(f"{where} is reachable but {what} cannot be read: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from exc
        finally:
            if conn is not None:
                conn.close()

    def extract(self, columns: Sequence[str], token: str, low: datetime, low_inclusive: bool,
                high: datetime, chunk_rows: int) -> Iterator[pa.Table]:
        cols = ", ".join(ident(c) for c in columns)
        textual = token in columns and self._token_is_text(token)
        params: tuple[Any, ...]
        if textual:  # the database cannot compare text with a timestamp: the window is applied as read
            sql, params = f"SELECT {cols} FROM {self._qualified}", ()
        else:
            sql, params = f"SELECT {cols} FROM {self._qualified} WHERE {self._where(token, low_inclusive)}", (low, high)
        if self.dialect == "duckdb":
            chunks = self._extract_duckdb(sql, params, chunk_rows)
        elif self.dialect == "postgres":
            chunks = self._extract_postgres(sql, params, list(columns), chunk_rows)
        else:
            chunks = self._extract_sqlalchemy(sql, params, chunk_rows)
        if not textual:
            yield from chunks
            return
        for chunk in chunks:
            kept = chunk.filter(_in_window(chunk.column(token), low, low_inclusive, high))
            if kept.num_rows:
                yield kept

    def _token_is_text(self, token: str) -> bool:
        """Whether the change-token column holds text (a DuckDB VARCHAR, a Postgres text or varchar)."""
        sql = f"SELECT {ident(token)} FROM {self._qualified} WHERE 1 = 0"
        if self.dialect == "duckdb":
            import duckdb

            with duckdb.connect(str(WarehouseURL.parse(self.url).path), read_only=True) as con:
                return str(con.execute(sql).description[0][1]).upper() in ("VARCHAR", "STRING")
        if self.dialect == "postgres":
            conn = self._spare
            if conn is None or conn.closed:
                return False  # the extract's own connection reports errors; the window is then SQL's
            with conn.cursor() as cur:
                cur.execute(sql)
                oid = cur.description[0][1]
            conn.rollback()
            return oid in (25, 1042, 1043)  # text, char, varchar
        return False

    def _extract_duckdb(self, sql: str, params: tuple[Any, ...], chunk_rows: int) -> Iterator[pa.Table]:
        import duckdb

        con = duckdb.connect(str(WarehouseURL.parse(self.url).path), read_only=True)
        try:
            reader = con.sql(sql, params=list(params)).to_arrow_reader(chunk_rows)
            yield from _rebatch(iter(reader), chunk_rows)
        finally:
            con.close()

    def _extract_postgres(self, sql: str, params: tuple[Any, ...], columns: list[str], chunk_rows: int) -> Iterator[pa.Table]:
        """COPY (query) TO STDOUT as CSV, streamed through a pipe into Arrow's CSV reader: the rows never
        exist as Python objects, and memory stays at a few chunks whatever the table's size."""
        import psycopg2

        conn, self._spare = self._spare, None
        if conn is None or conn.closed:
            conn = psycopg2.connect(WarehouseURL.parse(self.url).dsn)
            conn.set_session(readonly=True)
        cur = conn.cursor()
        copy_sql = cur.mogrify(f"COPY ({sql.replace('%', '%%').replace('?', '%s')}) TO STDOUT WITH (FORMAT csv)",
                               params).decode()
        rfd, wfd = os.pipe()
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                with os.fdopen(wfd, "wb", buffering=1 << 20) as w:
                    cur.copy_expert(copy_sql, w, size=1 << 20)
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)

        thread = threading.Thread(target=produce, name=f"copy-{self.table}", daemon=True)
        thread.start()
        try:
            with os.fdopen(rfd, "rb", buffering=1 << 20) as r:
                reader = pacsv.open_csv(
                    r,
                    read_options=pacsv.ReadOptions(column_names=columns, block_size=self.block_bytes),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),  # text may hold line breaks
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.string() for c in columns},
                        strings_can_be_null=True, quoted_strings_can_be_null=False),
                )
                yield from _rebatch(iter(reader), chunk_rows)
        except pa.ArrowInvalid as exc:
            thread.join()  # a COPY cut short leaves a ragged last line: its own error is the cause
            if "straddling" in str(exc):  # the reader gave up first; the COPY then lost its pipe
                raise SourceError(f"reading {self.system}.{self.table}: a row holds a value too long for a "
                                  f"{self.block_bytes >> 20} MiB block; raise max_value_mb on this source") from exc
            if errors:
                raise self._copy_error(errors[0]) from errors[0]
            if "Empty CSV file" not in str(exc):
                raise SourceError(f"reading {self.system}.{self.table}: {exc}") from exc
        finally:
            thread.join()
            cur.close()
            conn.close()
        if errors:
            raise self._copy_error(errors[0]) from errors[0]

    def _copy_error(self, exc: BaseException) -> SourceError:
        """A connection lost mid-extract is transient (the asset's retry policy tries again); any other
        failure of the COPY is not."""
        import psycopg2

        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            return SourceUnreachable(f"the connection to {self.system}.{self.table} was lost mid-extract: "
                                     f"{_first_line(exc)}")
        return SourceError(f"COPY from {self.system}.{self.table} failed: {_first_line(exc)}")

    def _extract_sqlalchemy(self, sql: str, params: tuple[Any, ...], chunk_rows: int) -> Iterator[pa.Table]:
        import sqlalchemy as sa

        named = sql.replace("?", ":low", 1).replace("?", ":high", 1)
        engine = sa.create_engine(self.url)
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(
                sa.text(named), {"low": params[0], "high": params[1]})
            keys = list(result.keys())
            while rows := result.fetchmany(chunk_rows):
                yield pa.table({k: [r[i] for r in rows] for i, k in enumerate(keys)})
