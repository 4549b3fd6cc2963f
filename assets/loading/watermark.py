"""Watermark arithmetic: which change tokens one load of one partition reads. Pure; no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta


@dataclass(frozen=True)
class Window:
    """A half-open interval [start, end) of change tokens."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty window: {self.start} .. {self.end}")


@dataclass(frozen=True)
class ExtractBounds:
    """Read rows with `low <(=) token < high`. `inclusive` says whether `low` itself is read."""

    low: datetime
    inclusive: bool
    high: datetime


def daily_window(partition_key: str) -> Window:
    """The window of a daily partition key, `YYYY-MM-DD` → [that day 00:00, next day 00:00)."""
    try:
        day = date.fromisoformat(partition_key)
    except ValueError as exc:
        raise ValueError(f"not a daily partition key (YYYY-MM-DD): {partition_key!r}") from exc
    start = datetime(day.year, day.month, day.day)
    return Window(start, start + timedelta(days=1))


def extract_bounds(window: Window, watermark: datetime | None, lookback: timedelta,
                   full_refresh: bool = False) -> ExtractBounds:
    """DESIGN.md: change_token > watermark − lookback, inside the partition's window.

    With no watermark yet (first load) or on a full refresh (a compensating re-extract), the whole
    window is read. A watermark from outside the window (e.g. a different partitioning) is clamped.
    """
    if lookback < timedelta(0):
        raise ValueError("lookback must not be negative")
    if watermark is None or full_refresh:
        return ExtractBounds(window.start, True, window.end)
    low = watermark - lookback
    if low < window.start:
        return ExtractBounds(window.start, True, window.end)
    return ExtractBounds(min(low, window.end), False, window.end)


def advance(watermark: datetime | None, max_token_read: datetime | None) -> datetime | None:
    """A watermark never moves backwards."""
    if max_token_read is None:
        return watermark
    if watermark is None:
        return max_token_read
    return max(watermark, max_token_read)
