"""Source connectors. Every source reads a table's rows inside a change-token window, in Arrow chunks."""

from assets.sources.base import Source
from assets.sources.sql import SqlSource

__all__ = ["Source", "SqlSource"]
