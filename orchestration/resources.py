"""The resources of one deployment, configured from its settings and meshline.yaml."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from assets.config import Config, source_specs
from assets.dbt import dbt_cli
from assets.loading.redaction import DEV_KEY
from assets.resources import DataDocsResource, NotifierResource, SourcesResource, WarehouseResource
from assets.settings import Settings


def _env_ref(var: str, value: str | None) -> Any:
    """A setting Dagster resolves from the environment itself when that is where it came from: its
    configuration API then shows the variable's name, never the secret."""
    return dg.EnvVar(var) if value and os.environ.get(var) == value else value


def build_resources(settings: Settings, config: Config, dbt_project: Any) -> dict[str, Any]:
    wh = config.warehouse
    return {
        "warehouse": WarehouseResource(url=_env_ref("MESHLINE_WAREHOUSE_URL", settings.warehouse_url),
                                       duckdb_memory_limit=wh.duckdb_memory_limit,
                                       connect_attempts=wh.connect_attempts,
                                       redaction_key=_env_ref("MESHLINE_REDACTION_KEY", settings.redaction_key) or DEV_KEY),
        "sources": SourcesResource(boundaries=source_specs(settings.sandbox_dir, config, references=True)),
        "data_docs": DataDocsResource(root=str(settings.home)),
        "notifier": NotifierResource(url=_env_ref("MESHLINE_ALERT_WEBHOOK_URL", settings.alert_webhook_url),
                                     format=config.operations.alert_format),
        "dbt": dbt_cli(dbt_project, dbt_project.profiles_dir),  # the profile the project was prepared with
    }
