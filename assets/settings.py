"""Settings: the one place Meshline reads its environment.

    MESHLINE_HOME              local state (default ./.meshline): DuckDB warehouse, Dagster storage, sandbox
    MESHLINE_WAREHOUSE_URL     duckdb:///PATH (default: $MESHLINE_HOME/warehouse.duckdb) or
                               postgresql+psycopg2://USER[:PASSWORD]@HOST:PORT/DB
    MESHLINE_CONFIG            flows, boundaries, sources and operations (default ./meshline.yaml)
    MESHLINE_REDACTION_KEY     HMAC key for redacted PII: required, 16 characters or more, with a Postgres
                               warehouse; the embedded default falls back to a development key
    MESHLINE_ALERT_WEBHOOK_URL where pages are posted (unset: pages go to the log)

`Settings.from_env()` runs when the definitions are built and when a CLI command starts, never at import
time and never inside an asset body, so tests build definitions for DuckDB and for Postgres in one
process. Everything a user rarely changes is in `meshline.yaml` (`assets.config`), whose `${VAR}`
references are expanded from the environment captured here. One exception, on purpose: an HTTP
source's `token_env` names a variable the source reads when it sends a request, so the token itself
never enters the definitions or Dagster's resource configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assets.config import Config
    from assets.loading.warehouse import Warehouse

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DEFAULT_CONFIG = PROJECT_ROOT / "meshline.yaml"
WAREHOUSE_POOL = "meshline_warehouse"
MIN_REDACTION_KEY = 16

LOCAL_DAGSTER_YAML = """\
# Written by Meshline for the embedded default. Storage is SQLite under this folder.
# Every run that writes the DuckDB warehouse is in the `{pool}` pool, limited to 1, so schedules,
# sensors and backfills queue instead of failing on DuckDB's single-writer lock.
storage:
  sqlite:
    base_dir:
      env: DAGSTER_HOME  # this folder, wherever it is moved or copied
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1  # a queued run starts within a second (Dagster's default waits up to 5)
concurrency:
  pools:
    default_limit: 1
    granularity: run
telemetry:
  enabled: false
"""


def _environ() -> dict[str, str]:
    return dict(os.environ)


@dataclass(frozen=True)
class Settings:
    home: Path
    warehouse_url: str
    config_path: Path = DEFAULT_CONFIG
    redaction_key: str | None = None
    alert_webhook_url: str | None = None
    # What `${VAR}` in meshline.yaml expands from: the environment when the settings were made.
    env: Mapping[str, str] = field(default_factory=_environ, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("MESHLINE_HOME") or PROJECT_ROOT / ".meshline").resolve()
        url = env.get("MESHLINE_WAREHOUSE_URL") or f"duckdb:///{home / 'warehouse.duckdb'}"
        if url.startswith(("postgresql://", "postgres://")):
            # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which Meshline does not install.
            raise ValueError("MESHLINE_WAREHOUSE_URL: use postgresql+psycopg2://... for a Postgres warehouse")
        if not url.startswith(("duckdb:///", "postgresql+psycopg2://")):
            raise ValueError("MESHLINE_WAREHOUSE_URL: unsupported URL (duckdb:///ABSOLUTE/PATH or "
                             "postgresql+psycopg2://...)")
        return cls(home=home, warehouse_url=url,
                   config_path=Path(env.get("MESHLINE_CONFIG") or DEFAULT_CONFIG).resolve(),
                   redaction_key=env.get("MESHLINE_REDACTION_KEY") or None,
                   alert_webhook_url=env.get("MESHLINE_ALERT_WEBHOOK_URL") or None, env=env)

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

    def config(self) -> Config:
        """meshline.yaml, checked (`assets.config.load_config`)."""
        from assets.config import load_config

        return load_config(self.config_path, self.env)

    def check_redaction_key(self) -> None:
        """A Postgres warehouse holds a team's real records: what stands in for their PII is keyed by a
        secret of the team's own, never the development key anyone can read in this repository."""
        if not self.local and len(self.redaction_key or "") < MIN_REDACTION_KEY:
            raise ValueError(f"MESHLINE_REDACTION_KEY: a Postgres warehouse needs a redaction key of at least "
                             f"{MIN_REDACTION_KEY} characters (a random secret of your own)")

    @property
    def key(self) -> bytes:
        """The redaction key (the development key on the embedded default): it also keys the audit chain,
        so every connection that writes or verifies audit rows uses it."""
        from assets.loading.redaction import DEV_KEY

        return (self.redaction_key or DEV_KEY).encode()

    def warehouse(self, config: Config | None = None) -> Warehouse:
        """The warehouse, with meshline.yaml's `warehouse:` options and the redaction key."""
        from assets.loading.warehouse import Warehouse

        self.check_redaction_key()
        opts = (config or self.config()).warehouse
        return Warehouse(self.warehouse_url, duckdb_memory_limit=opts.duckdb_memory_limit,
                         connect_attempts=opts.connect_attempts,
                         redaction_key=self.key)

    def dbt_profiles_dir(self) -> Path:
        """A dbt profiles.yml for this warehouse under MESHLINE_HOME (owner-only: it holds the connection),
        so dbt gets its target and connection without any environment variable."""
        from sqlalchemy.engine import make_url

        if self.local:
            output = {"type": "duckdb", "path": self.warehouse_url[len("duckdb:///"):], "schema": "main",
                      "threads": 1}
        else:
            u = make_url(self.warehouse_url)
            output = {"type": "postgres", "host": u.host or "127.0.0.1", "port": u.port or 5432,
                      "user": u.username or "postgres", "password": u.password or "",
                      "dbname": u.database or "postgres", "schema": "public", "threads": 2}
        import json

        folder = self.home / "dbt"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "profiles.yml"
        text = json.dumps({"meshline": {"target": self.dbt_target, "outputs": {self.dbt_target: output}}},
                          indent=2)  # JSON is YAML
        if not path.exists() or path.read_text() != text:
            tmp = folder / f".profiles.{os.getpid()}.tmp"
            tmp.touch(mode=0o600)
            tmp.write_text(text)
            tmp.replace(path)
        return folder

    def ensure_local_dagster_home(self) -> Path:
        """$MESHLINE_HOME/dagster with a dagster.yaml for the embedded default. A file of the user's own is
        kept; one Meshline wrote earlier is brought up to date."""
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        cfg = self.dagster_home / "dagster.yaml"
        text = LOCAL_DAGSTER_YAML.format(pool=WAREHOUSE_POOL)
        if not cfg.exists() or (cfg.read_text().startswith(text.splitlines()[0]) and cfg.read_text() != text):
            cfg.write_text(text)
        return self.dagster_home
