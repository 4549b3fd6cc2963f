"""The contract catalog outside the repository: the registry published to the warehouse, and the Great
Expectations Data Docs site."""

from __future__ import annotations

from pathlib import Path

from assets.loading.ddl import ensure_meta, upsert_contract
from assets.loading.warehouse import Warehouse
from expectations.registry import Registry


def publish(reg: Registry, warehouse_url: str) -> int:
    """Write every version of every contract (pinned or not) to meshline.contracts. Returns rows written."""
    pins = reg.pins()
    contracts = reg.all_versions()
    with Warehouse(warehouse_url).transaction() as tx:
        ensure_meta(tx)
        for c in contracts:
            upsert_contract(tx, c, pinned=pins.get(c.name, reg.pinned(c.name)) == c.version)
    return len(contracts)


def build_docs(reg: Registry, home: Path) -> str:
    """The Data Docs site of every pinned contract under `home`; its index page."""
    from expectations.docs import DataDocs

    return DataDocs(home).build(reg.get(n) for n in reg.names())
