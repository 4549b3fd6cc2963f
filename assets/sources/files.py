"""File drops: CSV and JSONL files landing in a folder.

Each file is known by the SHA-256 of its content. A load reads the files whose checksum it has not
yet delivered to this asset partition (`meshline.file_manifest`, written in the load's own
transaction), so the same file dropped twice, under any name, loads once, and a crash before commit
leaves it to be read again. Records keep any change token, so file drops read the whole partition
window rather than `token > watermark − lookback`. A line that does not parse (broken JSON, a CSV row
of the wrong width) becomes a dead letter located by file and line number, its text redacted.

Every record also offers the column `source_position`, `<file name>:<line>`: a contract that names it
as its locator can re-read any record (dead-letter replay) from the file it came from.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from assets.sources.base import Malformed, Source, as_text, outside, parse_token
from expectations.reasons import SourceUnreachable


def checksum(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


POSITION = "source_position"


class FileDropSource(Source):
    uses_watermark = False
    synthetic_columns = (POSITION,)

    def __init__(self, folder: str | Path, *, system: str, table: str, pattern: str = "*"):
        self.folder = Path(folder)
        self.system, self.table, self.pattern = system, table, pattern
        self._skip: set[str] = set()
        self._read: dict[str, tuple[str, int]] = {}  # checksum -> (file name, records delivered)
        self._malformed: list[Malformed] = []

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

    def begin(self, tx, asset: str, partition_key: str, rescan: bool = False) -> None:
        self._skip = set() if rescan else {r[0] for r in tx.query(
            "SELECT checksum FROM meshline.file_manifest WHERE asset = ? AND partition_key = ?", (asset, partition_key))}
        self._read, self._malformed = {}, []

    def malformed(self) -> list[Malformed]:
        return list(self._malformed)

    def finish(self, tx, asset: str, partition_key: str, run_id: str) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        for digest, (name, n) in self._read.items():
            tx.execute("INSERT INTO meshline.file_manifest (checksum, asset, partition_key, file_name, records,"
                       " run_id, loaded_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (digest, asset, partition_key, name, n, run_id, now))

    def _records(self, path: Path, probe: bool = False) -> Iterator[tuple[int, dict | Malformed]]:
        """(line number, record or Malformed) for each non-empty line of a file."""
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8", errors="replace") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    return
                for row in reader:
                    line = reader.line_num
                    if len(row) != len(header):
                        yield line, Malformed(path.name, line, f"{len(row)} fields, header has {len(header)}",
                                              ",".join(row))
                    else:
                        yield line, dict(zip(header, row, strict=True))
                    if probe:
                        return
            return
        with path.open(encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield line_no, Malformed(path.name, line_no, f"invalid JSON: {exc.msg}", line.rstrip("\n"))
                    continue
                if not isinstance(rec, dict):
                    yield line_no, Malformed(path.name, line_no, "a JSON line that is not an object",
                                             line.rstrip("\n"))
                    continue
                yield line_no, rec
                if probe:
                    return

    def extract(self, columns: Sequence[str], token: str, low: datetime, low_inclusive: bool,
                high: datetime, chunk_rows: int) -> Iterator[pa.Table]:
        schema = pa.schema([(c, pa.string()) for c in columns])
        buf: list[dict] = []
        seen: set[str] = set()
        for path in self.files():
            digest = checksum(path)
            if digest in self._skip or digest in seen:  # delivered before, or the same file twice now
                continue
            seen.add(digest)
            n, first_token, broken = 0, None, []
            for line_no, rec in self._records(path):
                if isinstance(rec, Malformed):
                    broken.append(rec)
                    continue
                ts = parse_token(rec.get(token))
                if ts is not None and (first_token is None or ts < first_token):
                    first_token = ts
                if outside(ts, low, low_inclusive, high):
                    continue
                row = {c: as_text(rec.get(c), empty_is_null=True) for c in columns}
                if POSITION in row:
                    row[POSITION] = f"{path.name}:{line_no}"
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
            self._read[digest] = (path.name, n)
        if buf:
            yield pa.Table.from_pylist(buf, schema=schema)
