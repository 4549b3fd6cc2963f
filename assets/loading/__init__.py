"""The watermarked loader: extract → validate → upsert / dead-letter → watermark + load_log, one transaction."""

from assets.loading.loader import LoadResult, load_partition
from assets.loading.warehouse import Warehouse

__all__ = ["LoadResult", "Warehouse", "load_partition"]
