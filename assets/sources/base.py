"""The one interface every source system is read through."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime

import pyarrow as pa


class Source(ABC):
    """A table of one source system, read in change-token windows.

    `system` and `table` go into provenance columns and dead-letter locators.
    """

    system: str
    table: str

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
