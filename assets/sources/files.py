"""File drops: CSV and JSONL files landing in a folder.

Each file is known by the SHA-256 of its content. A load reads the files whose checksum it has not
yet delivered to this asset partition (`meshline.file_manifest`, written in the load's own
transaction), so the same file dropped twice, under any name, loads once, and a crash before commit
leaves it to be read again. Records keep any change token, so file drops read the whole partition
window rather than `token > watermark − lookback`. A line that does not parse (broken JSON, a CSV row
of the wrong width) becomes a dead letter located by file and line number, its text redacted.

Each file's change-token range is indexed by checksum (`meshline.file_index`) the first time it is
parsed: a later load skips, without parsing, every file whose records all lie outside its window (a
year of daily drops is not re-parsed for each day). A file holding a record with no readable token, or
only broken lines, is never skipped.

Every record also offers the column `source_position`, `<file name>:<line>`: a contract that names it
as its locator can re-read any record (dead-letter replay) from the file it came from.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import logging
import re
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from assets.loading.warehouse import Tx
from assets.sources.base import Malformed, Source, as_text, has_surrogates, outside, parse_token, printable
from expectations.reasons import SourceUnreachable

_CHECKSUMS: dict[tuple[Any, ...], str] = {}  # (path, inode, size, mtime, ctime) -> checksum, for this process


def checksum(path: Path) -> str:
    """The SHA-256 of a file's content; remembered for this process while the file is unchanged (a
    history backfill reads the same landing folder once per day)."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _CHECKSUMS:
        return _CHECKSUMS[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    _CHECKSUMS[key] = h.hexdigest()
    return _CHECKSUMS[key]


log = logging.getLogger("meshline.sources.files")

POSITION = "source_position"
# A CSV field may be this long; a longer one (or an unterminated quote that swallows the file) is a
# malformed record, never an error that stops the folder.
MAX_FIELD_BYTES = 16 << 20
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class _Lines:
    """The physical lines a CSV reader takes, so a record that fails can be told line by line, and the
    lines after its first parsed again (an unterminated quote swallows the lines that follow it)."""

    def __init__(self, f: Any):
        self._f, self._back, self.taken, self.line = f, deque[tuple[int, str]](), list[tuple[int, str]](), 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._back:
            no, text = self._back.popleft()
        else:
            text = next(self._f)
            self.line += 1
            no = self.line
        self.taken.append((no, text))
        return text

    def give_back(self, lines: list[tuple[int, str]]) -> None:
        self._back.extendleft(reversed(lines))


def _csv_records(path: Path, name: str, probe: bool) -> Iterator[tuple[int, dict[str, Any] | Malformed]]:
    csv.field_size_limit(MAX_FIELD_BYTES)
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        lines = _Lines(f)
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            yield 1, Malformed(name, 1, f"unreadable CSV header: {exc}", printable("".join(t for _, t in lines.taken)))
            return
        if header is None:
            return
        while True:
            lines.taken = []
            try:
                row = next(reader)
                why = None if len(row) == len(header) else f"{len(row)} fields, header has {len(header)}"
            except StopIteration:
                return
            except csv.Error as exc:
                row, why = [], f"CSV: {exc}"
            taken = lines.taken
            if not row and why is not None and not "".join(t for _, t in taken).strip():
                continue  # a blank line is no record
            if why is None:
                yield taken[0][0], dict(zip(header, row, strict=True))
            else:
                first_no, first = taken[0]
                yield first_no, Malformed(name, first_no, why, printable(first.rstrip("\r\n")))
                lines.give_back(taken[1:])
            if probe:
                return




def _disjoint(lo: datetime | None, hi: datetime | None, low: datetime, low_inclusive: bool, high: datetime) -> bool:
    """True when every token in [lo, hi] falls outside the window."""
    if lo is None or hi is None:
        return False
    return hi < low or (hi == low and not low_inclusive) or lo >= high


class FileDropSource(Source):
    uses_watermark = False
    synthetic_columns = (POSITION,)

    def __init__(self, folder: str | Path, *, system: str, table: str, pattern: str = "*"):
        self.folder = Path(folder)
        self.system, self.table, self.pattern = system, table, pattern
        self._skip: set[str] = set()
        self._read: dict[str, tuple[str, int]] = {}  # checksum -> (file name, records delivered)
        self._malformed: list[Malformed] = []
        self._ranges: dict[str, tuple[Any, ...]] = {}  # checksum -> (min token, max token, untokened), indexed before
        self._indexed: dict[str, tuple[Any, ...]] = {}  # checksum -> (name, records, min, max, untokened), this load
        self._seen: set[str] = set()
        self.files_parsed = 0
        self.files_skipped = 0

    def __repr__(self) -> str:
        return f"FileDropSource({self.system}.{self.table}, {self.folder}/{self.pattern})"

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            raise SourceUnreachable(f"{self.system}.{self.table}: landing folder {self.folder} does not exist "
                                    "(not mounted, or not created yet)")
        return sorted(p for p in self.folder.glob(self.pattern)
                      if p.is_file() and p.suffix.lower() in (".csv", ".jsonl", ".ndjson"))

    def columns(self) -> list[str] | None:
        for path in self.files():
            for _, rec in self._records(path, probe=True):
                if isinstance(rec, dict):
                    return sorted(set(rec) | {POSITION})
        return None

    def begin(self, tx: Tx, asset: str, partition_key: str, rescan: bool = False) -> None:
        self._skip = set() if rescan else {r[0] for r in tx.query(
            "SELECT checksum FROM meshline.file_manifest WHERE asset = ? AND partition_key = ?", (asset, partition_key))}
        self._read, self._malformed = {}, []
        self._ranges = {r[0]: r[1:] for r in tx.query(
            "SELECT checksum, min_token, max_token, untokened FROM meshline.file_index WHERE asset = ?", (asset,))}
        self._indexed = {}
        self.files_parsed = self.files_skipped = 0

    def malformed(self) -> list[Malformed]:
        return list(self._malformed)

    def columns_seen(self) -> set[str] | None:
        return set(self._seen) | {POSITION}

    def finish(self, tx: Tx, asset: str, partition_key: str, run_id: str) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        for digest, (name, n) in self._read.items():
            tx.execute("INSERT INTO meshline.file_manifest (checksum, asset, partition_key, file_name, records,"
                       " run_id, loaded_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (digest, asset, partition_key, name, n, run_id, now))
        for digest, (name, n, lo, hi, untokened) in self._indexed.items():
            tx.execute("INSERT INTO meshline.file_index (checksum, asset, file_name, records, min_token, max_token,"
                       " untokened, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (digest, asset, name, n, lo, hi, untokened, now))

    def _records(self, path: Path, probe: bool = False) -> Iterator[tuple[int, dict[str, Any] | Malformed]]:
        """(line number, record or Malformed) for each non-empty line of a file."""
        name = printable(path.name)
        if path.suffix.lower() == ".csv":
            yield from _csv_records(path, name, probe)
            return
        with path.open(encoding="utf-8-sig", errors="replace") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as exc:
                    why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deep"
                    yield line_no, Malformed(name, line_no, f"invalid JSON: {why}", printable(line.rstrip("\n")))
                    continue
                if not isinstance(rec, dict):
                    yield line_no, Malformed(name, line_no, "a JSON line that is not an object",
                                             printable(line.rstrip("\n")))
                    continue
                if _ESCAPED_SURROGATE.search(line) and has_surrogates(rec):
                    yield line_no, Malformed(name, line_no, "a string that is not valid Unicode (a lone surrogate)",
                                             printable(line.rstrip("\n")))
                    continue
                yield line_no, rec
                if probe:
                    return

    def extract(self, columns: Sequence[str], token: str, low: datetime, low_inclusive: bool,
                high: datetime, chunk_rows: int) -> Iterator[pa.Table]:
        schema = pa.schema([(c, pa.string()) for c in columns])
        buf: list[dict[str, Any]] = []
        seen: set[str] = set()
        self._seen = set()
        for path in self.files():
            try:
                digest = checksum(path)
            except OSError as exc:  # renamed or removed since the listing: read under its new name next time
                log.warning("%s.%s: %s changed while the folder was read (%s); it is read by the next load",
                            self.system, self.table, printable(path.name), type(exc).__name__)
                continue
            if digest in self._skip or digest in seen:  # delivered before, or the same file twice now
                continue
            seen.add(digest)
            known = self._ranges.get(digest)
            if known is not None and not known[2] and _disjoint(known[0], known[1], low, low_inclusive, high):
                self.files_skipped += 1  # every record (and so its broken lines' partition) is elsewhere
                continue
            self.files_parsed += 1
            n, total, first_token, last_token, untokened, broken = 0, 0, None, None, False, []
            name = printable(path.name)
            records = self._records(path)
            try:
                first = next(records, None)
            except OSError as exc:  # gone between its checksum and its opening
                log.warning("%s.%s: %s could not be read (%s); it is read by the next load",
                            self.system, self.table, name, type(exc).__name__)
                continue
            for line_no, rec in itertools.chain([] if first is None else [first], records):
                if isinstance(rec, Malformed):
                    broken.append(rec)
                    continue
                self._seen.update(rec)
                total += 1
                ts = parse_token(rec.get(token))
                if ts is None:
                    untokened = True
                else:
                    if first_token is None or ts < first_token:
                        first_token = ts
                    if last_token is None or ts > last_token:
                        last_token = ts
                if outside(ts, low, low_inclusive, high):
                    continue
                row = {c: as_text(rec.get(c), empty_is_null=True) for c in columns}
                if POSITION in row:
                    row[POSITION] = f"{name}:{line_no}"
                buf.append(row)
                n += 1
                if len(buf) >= chunk_rows:
                    yield pa.Table.from_pylist(buf, schema=schema)
                    buf = []
            # A line that does not parse has no change token: it belongs to the partition of the file's
            # earliest record (a file of broken lines only, to whichever load reads it first), so it is
            # read, counted and dead-lettered by exactly one partition.
            if broken and (first_token is None or not outside(first_token, low, low_inclusive, high)):
                self._malformed.extend(broken)
            self._read[digest] = (name, n)
            if known is None:
                self._indexed[digest] = (name, total, first_token, last_token,
                                         untokened or first_token is None)
        if buf:
            yield pa.Table.from_pylist(buf, schema=schema)
