"""The resources of one deployment, configured from its settings and meshline.yaml."""

from __future__ import annotations

from typing import Any

from assets.config import Config, source_specs
from assets.dbt import dbt_cli
from assets.loading.redaction import DEV_KEY
from assets.resources import DataDocsResource, NotifierResource, SourcesResource, WarehouseResource
from assets.settings import Settings


def build_resources(settings: Settings, config: Config, dbt_project: Any) -> dict[str, Any]:
    wh = config.warehouse
    return {
        "warehouse": WarehouseResource(url=settings.warehouse_url, duckdb_memory_limit=wh.duckdb_memory_limit,
                                       connect_attempts=wh.connect_attempts,
                                       redaction_key=settings.redaction_key or DEV_KEY),
        "sources": SourcesResource(boundaries=source_specs(settings.sandbox_dir, config)),
        "data_docs": DataDocsResource(root=str(settings.home)),
        "notifier": NotifierResource(url=settings.alert_webhook_url, format=config.operations.alert_format),
        "dbt": dbt_cli(dbt_project, dbt_project.profiles_dir),  # the profile the project was prepared with
    }
