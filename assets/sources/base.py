"""The one interface every source system is read through."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from assets.loading.warehouse import Tx


@dataclass(frozen=True)
class Malformed:
    """A record the source could not even parse (a broken JSON line, a CSV row of the wrong width)."""

    file: str
    line: int
    error: str
    raw: str  # the raw text; the loader redacts all of it


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogates(value: Any) -> bool:
    """True when a parsed record holds a lone UTF-16 surrogate (JSON's `"\\ud800"`): text no UTF-8 store
    can hold, so the record is malformed rather than loadable."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(has_surrogates(k) or has_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_surrogates(v) for v in value)
    return False


def printable(text: str) -> str:
    """Text fit for UTF-8 (a file name or raw line holding undecodable bytes or lone surrogates): those
    become U+FFFD, everything else is kept."""
    return _SURROGATE.sub("\ufffd", text)


class Source(ABC):
    """A table of one source system, read in change-token windows.

    `system` and `table` go into provenance columns and dead-letter locators.
    """

    system: str
    table: str
    # Sources whose records can arrive with any change token (file drops) say False: each load reads
    # the whole window, and the source itself skips what it already delivered.
    uses_watermark: bool = True
    # Columns the connector itself adds to every record (a file drop's `source_position`): offered to a
    # contract that names them, never "unknown" source columns when it does not.
    synthetic_columns: tuple[str, ...] = ()
    # When the running load must stop (time.monotonic()); a source that waits (HTTP) waits no longer.
    deadline: float | None = None

    def begin(self, tx: Tx, asset: str, partition_key: str, rescan: bool = False) -> None:  # noqa: B027 - optional hook
        """Called inside the load's transaction before extracting (file drops read their manifest;
        `rescan`, for a compensating reload, reads every file again)."""

    def malformed(self) -> list[Malformed]:
        """Records of the last extract that could not be parsed; the loader dead-letters them."""
        return []

    def columns_seen(self) -> set[str] | None:
        """Every column name the last extract met in any record (a file drop or an API can change its
        shape after the first record, which is all the preflight sees). None for a fixed-schema source."""
        return None

    def finish(self, tx: Tx, asset: str, partition_key: str, run_id: str) -> None:  # noqa: B027 - optional hook
        """Called inside the load's transaction after writing (file drops record what they delivered)."""

    @abstractmethod
    def columns(self) -> list[str] | None:
        """The columns the source offers now (preflight: a required column missing refuses the load, an
        unknown one holds the rows). None when the source cannot tell (e.g. an API with no records)."""

    @abstractmethod
    def extract(self, columns: Sequence[str], token: str, low: datetime, low_inclusive: bool,
                high: datetime, chunk_rows: int) -> Iterator[pa.Table]:
        """Rows with low <(=) token < high, as Arrow tables of at most `chunk_rows` rows.

        Values may arrive as strings; the loader casts them to the contract's types.
        """


def as_text(value: Any, empty_is_null: bool = False) -> str | None:
    """A JSON or CSV value as the text the loader casts to the contract's type."""
    if value is None or (empty_is_null and value == ""):
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_token(value: Any) -> datetime | None:
    """An ISO-8601 change token as naive UTC; None when absent or unreadable (the contract then
    dead-letters the record: the loader sees the raw text)."""
    if value is None or value == "":
        return None
    try:  # read as the loader's cast reads it: surrounding spaces do not make another token
        d = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return d.astimezone(UTC).replace(tzinfo=None) if d.tzinfo else d


def outside(ts: datetime | None, low: datetime, low_inclusive: bool, high: datetime) -> bool:
    """True when a readable token falls outside the window; an unreadable one is never filtered out."""
    return ts is not None and (ts < low or (ts == low and not low_inclusive) or ts >= high)
