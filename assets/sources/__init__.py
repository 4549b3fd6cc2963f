"""Source connectors. Every source reads a table's rows inside a change-token window, in Arrow chunks."""

from typing import Any

from assets.sources.base import Malformed, Source
from assets.sources.files import FileDropSource
from assets.sources.http import HttpSource
from assets.sources.sql import SqlSource

__all__ = ["FileDropSource", "HttpSource", "Malformed", "Source", "SqlSource", "build_source"]


def build_source(spec: dict[str, Any], *, system: str, table: str) -> Source:
    """A source from its configuration (meshline.yaml's `source:` block, env references resolved)."""
    from assets.config import expand_env

    spec = {k: expand_env(v) for k, v in spec.items()}
    kind = spec.get("kind", "sql")
    opts = {k: v for k, v in spec.items() if k not in ("kind", "sandbox_db")}
    if kind == "http" and opts.get("base_url") == "sandbox" and spec.get("sandbox_db"):
        from pathlib import Path

        from assets.sandbox.billing_api import serve

        opts["base_url"] = serve(Path(spec["sandbox_db"]))  # this process's server over the simulated system
    if kind == "sql":
        return SqlSource(opts["url"], opts.get("table", table), system, query=opts.get("query"),
                         max_value_mb=opts.get("max_value_mb", 2))
    if kind == "http":
        return HttpSource(opts.pop("base_url"), opts.pop("path"), system=system, table=table, **opts)
    if kind == "files":
        return FileDropSource(opts["folder"], system=system, table=table, pattern=opts.get("pattern", "*"))
    raise ValueError(f"unknown source kind {kind!r} (sql, http, files)")
