"""Dagster resources in front of every external system: the warehouse, the source systems, Great
Expectations' store and the pager. Assets, checks and sensors take them as typed parameters; the
definitions configure them from the settings (`orchestration.resources`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource

from assets.loading.redaction import DEV_KEY
from assets.loading.warehouse import Warehouse
from assets.remediation.notify import Notifier
from expectations.contract import Contract

if TYPE_CHECKING:  # imported when used: building definitions pays for neither pyarrow nor pandas
    from assets.sources import Source
    from expectations.docs import DataDocs


class WarehouseResource(ConfigurableResource):  # type: ignore[type-arg]  # subclassed bare, as Dagster documents it
    """The warehouse every boundary loads into (DuckDB file or Postgres database)."""

    url: str
    duckdb_memory_limit: str = "128MB"
    connect_attempts: int = 12
    redaction_key: str = DEV_KEY

    def get(self) -> Warehouse:
        return Warehouse(self.url, duckdb_memory_limit=self.duckdb_memory_limit,
                         connect_attempts=self.connect_attempts, redaction_key=self.redaction_key.encode())


class SourcesResource(ConfigurableResource):  # type: ignore[type-arg]  # subclassed bare, as Dagster documents it
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


class DataDocsResource(ConfigurableResource):  # type: ignore[type-arg]  # subclassed bare, as Dagster documents it
    """Where Great Expectations keeps its suites, validation results and the Data Docs site."""

    root: str

    def get(self) -> DataDocs:
        from expectations.docs import DataDocs

        return DataDocs(Path(self.root))


class NotifierResource(ConfigurableResource):  # type: ignore[type-arg]  # subclassed bare, as Dagster documents it
    """Where pages go: a webhook (Slack-compatible or JSON) or, with no URL, the log."""

    url: str | None = None
    format: str = "slack"

    def get(self) -> Notifier:
        return Notifier(kind=self.format if self.url else "log", url=self.url)
