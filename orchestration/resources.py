"""Resources: the warehouse and the source systems, configured from Settings when definitions are built."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource

from assets.loading.warehouse import Warehouse
from expectations.contract import Contract

if TYPE_CHECKING:  # imported when used: building definitions pays for neither pyarrow nor pandas
    from assets.sources import Source
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
        from assets.sources import build_source

        return build_source(spec, system=contract.source_system, table=contract.source_table)


class DataDocsResource(ConfigurableResource):
    """Where Great Expectations keeps its suites, validation results and the Data Docs site."""

    root: str

    def get(self) -> DataDocs:
        from expectations.docs import DataDocs

        return DataDocs(Path(self.root))
