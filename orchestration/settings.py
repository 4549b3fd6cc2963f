"""One environment switch: the warehouse URL. Everything else follows from it.

    MESHLINE_HOME            local state (default ./.meshline): DuckDB warehouse, Dagster storage, sandbox
    MESHLINE_WAREHOUSE_URL   duckdb:///PATH (default: $MESHLINE_HOME/warehouse.duckdb) or
                             postgresql+psycopg2://USER[:PASSWORD]@HOST:PORT/DB
    MESHLINE_PARTITION_START first daily partition (default 2026-01-01)
    MESHLINE_CONFIG          flows, boundaries and sources (default ./meshline.yaml)
    MESHLINE_REDACTION_KEY   key for redacting PII in dead letters and logs (required when the warehouse
                             is Postgres; the embedded default falls back to a development key)

`Settings.from_env()` is called when definitions are built, never at import time and never inside an
asset body, so tests build definitions for DuckDB and for Postgres in one process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
WAREHOUSE_POOL = "meshline_warehouse"

LOCAL_DAGSTER_YAML = """\
# Written by Meshline for the embedded default. Storage is SQLite under this folder.
# Every run that writes the DuckDB warehouse is in the `{pool}` pool, limited to 1, so schedules,
# sensors and backfills queue instead of failing on DuckDB's single-writer lock.
storage:
  sqlite:
    base_dir: {base}
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
concurrency:
  pools:
    default_limit: 1
    granularity: run
telemetry:
  enabled: false
"""


@dataclass(frozen=True)
class Settings:
    home: Path
    warehouse_url: str
    partition_start: str = "2026-01-01"
    config_path: Path = PROJECT_ROOT / "meshline.yaml"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("MESHLINE_HOME") or PROJECT_ROOT / ".meshline").resolve()
        url = env.get("MESHLINE_WAREHOUSE_URL") or f"duckdb:///{home / 'warehouse.duckdb'}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which Meshline does not install.
            raise ValueError("MESHLINE_WAREHOUSE_URL: use postgresql+psycopg2://... for a Postgres warehouse")
        if not (url.startswith("duckdb:///") or url.startswith("postgresql+psycopg2://")):
            raise ValueError(f"MESHLINE_WAREHOUSE_URL: unsupported URL {url!r} "
                             "(duckdb:///ABSOLUTE/PATH or postgresql+psycopg2://...)")
        return cls(home=home, warehouse_url=url,
                   partition_start=env.get("MESHLINE_PARTITION_START", "2026-01-01"),
                   config_path=Path(env.get("MESHLINE_CONFIG") or PROJECT_ROOT / "meshline.yaml").resolve())

    @property
    def dialect(self) -> str:
        return "duckdb" if self.warehouse_url.startswith("duckdb") else "postgres"

    @property
    def local(self) -> bool:
        return self.dialect == "duckdb"

    @property
    def dbt_target(self) -> str:
        return self.dialect

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def sandbox_dir(self) -> Path:
        return self.home / "sandbox"

    @property
    def warehouse_pool(self) -> str | None:
        """Local mode: one pool of size 1 for every warehouse writer (DuckDB has one writer)."""
        return WAREHOUSE_POOL if self.local else None

    def dbt_env(self) -> dict[str, str]:
        """Environment for dbt: the profile's target and its connection, derived from the URL."""
        env = {"MESHLINE_DBT_TARGET": self.dbt_target}
        if self.local:
            env["MESHLINE_DBT_DUCKDB_PATH"] = self.warehouse_url[len("duckdb:///"):]
            return env
        from sqlalchemy.engine import make_url

        u = make_url(self.warehouse_url)
        env.update({
            "MESHLINE_DBT_PG_HOST": u.host or "127.0.0.1", "MESHLINE_DBT_PG_PORT": str(u.port or 5432),
            "MESHLINE_DBT_PG_USER": u.username or "postgres", "MESHLINE_DBT_PG_PASSWORD": u.password or "",
            "MESHLINE_DBT_PG_DBNAME": u.database or "postgres",
        })
        return env

    def ensure_local_dagster_home(self) -> Path:
        """Create $MESHLINE_HOME/dagster with a dagster.yaml for the embedded default (kept if present)."""
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        cfg = self.dagster_home / "dagster.yaml"
        if not cfg.exists():
            cfg.write_text(LOCAL_DAGSTER_YAML.format(base=self.dagster_home, pool=WAREHOUSE_POOL))
        return self.dagster_home
