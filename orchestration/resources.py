"""Resources: the warehouse and the source systems, configured from Settings when definitions are built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import ConfigurableResource

from assets.loading.warehouse import Warehouse
from assets.sources import Source, build_source
from expectations.contract import Contract
from expectations.docs import DataDocs


class WarehouseResource(ConfigurableResource):
    """The warehouse every boundary loads into (DuckDB file or Postgres database)."""

    url: str

    def get(self) -> Warehouse:
        return Warehouse(self.url)


class SourcesResource(ConfigurableResource):
    """Where each boundary's source lives: boundary name → source spec (meshline.yaml's `source:`)."""

    boundaries: dict[str, dict[str, Any]]

    def source(self, contract: Contract) -> Source:
        try:
            spec = self.boundaries[contract.name]
        except KeyError:
            raise KeyError(f"no source configured for boundary {contract.name!r}; "
                           f"configured: {sorted(self.boundaries)}") from None
        return build_source(spec, system=contract.source_system, table=contract.source_table)


class DataDocsResource(ConfigurableResource):
    """Where Great Expectations keeps its suites, validation results and the Data Docs site."""

    root: str

    def get(self) -> DataDocs:
        return DataDocs(Path(self.root))
