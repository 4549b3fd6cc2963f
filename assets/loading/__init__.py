"""The watermarked loader: extract → validate → upsert / dead-letter → watermark + load_log, one transaction.

Imported lazily: Dagster definitions and the CLI import `assets.loading.ddl` and friends without paying
for pyarrow until a load runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assets.loading.loader import LoadResult, load_partition
    from assets.loading.warehouse import Warehouse

__all__ = ["LoadResult", "Warehouse", "load_partition"]


def __getattr__(name: str) -> Any:
    if name in ("LoadResult", "load_partition"):
        from assets.loading import loader

        return getattr(loader, name)
    if name == "Warehouse":
        from assets.loading.warehouse import Warehouse

        return Warehouse
    raise AttributeError(name)
