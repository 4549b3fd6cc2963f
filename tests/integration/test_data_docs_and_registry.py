"""Great Expectations Data Docs (every suite, the latest validations, linked from the checks) and the
contract registry as data in meshline.contracts."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import duckdb

from assets.catalog import publish
from assets.loading import Warehouse
from expectations.compiler import suite_name
from expectations.docs import DataDocs
from expectations.registry import Registry
from tests.helpers import day_keys, materialize_day


def test_data_docs_site_has_every_suite_and_checks_link_their_validation(warehouse_url, sandbox):
    res = materialize_day(warehouse_url, sandbox, day_keys(sandbox.ground_truth())[0])
    docs = DataDocs(sandbox.paths.root.parent / "docs")
    pages = []
    for ev in res.get_asset_check_evaluations():
        if ev.check_name.startswith("contract_") and not ev.check_name.startswith("contract_version"):
            url = ev.metadata["data_docs"].value
            page = Path(urlparse(url).path)
            assert page.exists() and page.is_relative_to(docs.index.parent)
            pages.append(page)
    assert len(pages) == 2
    index_url = docs.build(Registry().get(n) for n in Registry().names())
    index = Path(urlparse(index_url).path)
    assert index == docs.index and index.exists()
    html = index.read_text()
    for name in Registry().names():
        suite = suite_name(Registry().get(name))
        assert suite in html
        assert (index.parent / "expectations" / f"{suite}.html").exists()
    # no raw e-mail address anywhere in the site
    with duckdb.connect(str(sandbox.paths.marketing), read_only=True) as con:
        emails = {r[0] for r in con.execute("SELECT email FROM marketing_leads").fetchall()}
    site = "\n".join(p.read_text(errors="ignore") for p in index.parent.rglob("*.html"))
    assert not [e for e in emails if e and e in site]


def test_registry_lands_in_meshline_contracts(warehouse_url, sandbox):
    reg = Registry()
    assert publish(reg, warehouse_url) == len(reg.all_versions())
    materialize_day(warehouse_url, sandbox, day_keys(sandbox.ground_truth())[0])
    with Warehouse(warehouse_url).session() as s:
        rows = {(r[0], r[1]): r[2:] for r in s.query(
            "SELECT contract, version, pinned, severity, owner_contract, dead_letter_rate_max, deprecated_after,"
            " pii_columns, last_loaded_at FROM meshline.contracts")}
    assert set(rows) == {(c.name, c.version) for c in reg.all_versions()}
    pinned, severity, owner, dl_rate, deprecated, pii, loaded = rows[("crm_leads", "1.0.0")]
    assert pinned is True and severity == "critical" and owner == "sales-ops@meshline.example"
    assert dl_rate == 0.05 and str(deprecated) == "2027-06-30" and loaded is not None
    assert rows[("crm_leads", "1.1.0")][0] is False and rows[("crm_leads", "1.1.0")][-1] is None
    assert rows[("marketing_leads", "1.0.0")][5] == "email,first_name,last_name"
