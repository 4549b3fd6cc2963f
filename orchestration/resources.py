"""Resources: the warehouse and the source systems, configured from Settings when definitions are built."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from assets.loading.warehouse import Warehouse
from assets.sources import SqlSource
from expectations.contract import Contract
from expectations.docs import DataDocs


class WarehouseResource(ConfigurableResource):
    """The warehouse every boundary loads into (DuckDB file or Postgres database)."""

    url: str

    def get(self) -> Warehouse:
        return Warehouse(self.url)


class SourcesResource(ConfigurableResource):
    """Where each source system lives: a SQL URL per system name (as contracts name them)."""

    urls: dict[str, str]

    def source(self, contract: Contract) -> SqlSource:
        try:
            url = self.urls[contract.source_system]
        except KeyError:
            raise KeyError(f"no source configured for system {contract.source_system!r} "
                           f"(contract {contract.name}); configured: {sorted(self.urls)}") from None
        return SqlSource(url, contract.source_table, contract.source_system)


class DataDocsResource(ConfigurableResource):
    """Where Great Expectations keeps its suites, validation results and the Data Docs site."""

    root: str

    def get(self) -> DataDocs:
        return DataDocs(Path(self.root))
