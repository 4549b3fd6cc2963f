"""DESIGN.md's invariants on every boundary of every flow, through its real connector (SQL database, HTTP
API, JSONL file drop), on DuckDB and on Postgres:

1. conservation: every load accounts for every record it read, and the warehouse ends up with exactly
   the newest valid version of every key the source holds, the injected malformed records (and only
   they) dead-lettered;
2. idempotent re-run: loading every partition again changes nothing;
3. atomicity: a crash before commit leaves the warehouse as it was, file manifest included;
4. newest change token wins (checked in 1: the loaded version of each key is its newest valid one);
5. no raw PII outside raw tables: no PII value of the source in dead letters, holds, the load log or logs.

The expected state is computed from the simulated source and its ground truth, not from the loader.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.watermark import daily_window
from assets.sandbox import FaultRates, LeadHandoffSandbox
from assets.sandbox.billing_api import BillingApi
from assets.sandbox.quote_to_cash import QuoteFaults, QuoteToCashSandbox
from assets.sandbox.subscription_updates import SubscriptionSandbox
from assets.sources import build_source
from assets.sources.base import parse_token
from expectations import load_contract
from tests.conftest import SIM_END
from tests.helpers import day_keys, snapshot

DAYS = 3


@dataclass
class Boundary:
    name: str
    spec: dict  # the source spec, as meshline.yaml would give it
    truth: dict
    records: list[dict]  # every record the source holds (parsable ones), with its locator


def _duckdb_rows(path: Path, table: str) -> list[dict]:
    with duckdb.connect(str(path), read_only=True) as con:
        cur = con.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _jsonl_rows(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            out.append({**rec, "source_position": f"{path.name}:{n}"})
    return out


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandboxes")
    lh = LeadHandoffSandbox(root / "lh")
    lh_truth = lh.generate(end=SIM_END, days=DAYS, leads_per_day=50, seed=21,
                           faults=FaultRates(malformed_marketing=0.03, malformed_crm=0.03))
    q2c = QuoteToCashSandbox(root / "q2c")
    q2c_truth = q2c.generate(end=SIM_END, days=DAYS, deals_per_day=120, seed=21,
                             faults=QuoteFaults(malformed_crm=0.01, malformed_billing=0.02))
    subs = SubscriptionSandbox(root / "subs")
    subs_truth = subs.generate(end=SIM_END, days=DAYS, accounts_per_day=60, seed=21)
    with BillingApi(q2c.billing_path) as q2c_api, BillingApi(subs.billing_path) as subs_api:
        def http(api, table):
            return {"kind": "http", "base_url": api.base_url, "path": f"/v1/{table}", "page_size": 50,
                    "rate_per_s": 500, "burst": 50}

        yield {
            "marketing_leads": Boundary("marketing_leads", {"kind": "sql", "url": lh.marketing_url,
                                                            "table": "marketing_leads"},
                                        lh_truth, _duckdb_rows(lh.paths.marketing, "marketing_leads")),
            "crm_leads": Boundary("crm_leads", {"kind": "sql", "url": lh.crm_url, "table": "crm_leads"},
                                  lh_truth, _duckdb_rows(lh.paths.crm, "crm_leads")),
            "crm_opportunities": Boundary("crm_opportunities", {"kind": "sql", "url": q2c.crm_url,
                                                                "table": "crm_opportunities"},
                                          q2c_truth, _duckdb_rows(q2c.crm_path, "crm_opportunities")),
            "billing_invoices": Boundary("billing_invoices", http(q2c_api, "billing_invoices"), q2c_truth,
                                         _duckdb_rows(q2c.billing_path, "billing_invoices")),
            "product_plan_events": Boundary("product_plan_events", {"kind": "files", "folder": str(subs.events_dir),
                                                                    "pattern": "*.jsonl"},
                                            subs_truth, _jsonl_rows(subs.events_dir)),
            "billing_subscriptions": Boundary("billing_subscriptions", http(subs_api, "billing_subscriptions"),
                                              subs_truth, _duckdb_rows(subs.billing_path, "billing_subscriptions")),
        }


BOUNDARIES = ["marketing_leads", "crm_leads", "crm_opportunities", "billing_invoices", "product_plan_events",
              "billing_subscriptions"]


def _loader(url: str, b: Boundary):
    contract = load_contract(b.name)

    def load(key: str, run: str, hook=None):
        source = build_source(b.spec, system=contract.source_system, table=contract.source_table)
        return load_partition(Warehouse(url), source, contract, partition_key=key, window=daily_window(key),
                              run_id=run, before_commit=hook)

    return contract, load


def _where(locator: str) -> str:
    loc = json.loads(locator)
    if "file" in loc:
        return f"{loc['file']}:{loc['line']}"
    return str(loc.get("row_id") or loc.get("source_position"))


def _injected(b: Boundary, system: str) -> set[str]:
    return {str(m.get("position") or m["row_id"]) for m in b.truth["malformed"] if m["system"] == system}


def _expected_raw(b: Boundary, contract, keys: list[str]) -> dict[str, str]:
    """Key → newest valid change token, from the source itself and the injected faults."""
    lo = daily_window(keys[0]).start
    hi = daily_window(keys[-1]).end
    bad = _injected(b, contract.source_system)
    newest: dict[str, datetime] = {}
    for rec in b.records:
        if str(rec[contract.locator]) in bad:
            continue
        tok = rec[contract.change_token]
        tok = tok if isinstance(tok, datetime) else parse_token(tok)
        if not lo <= tok < hi:
            continue
        k = str(rec[contract.idempotency_key])
        if k not in newest or tok > newest[k]:
            newest[k] = tok
    return {k: t.isoformat() for k, t in newest.items()}


@pytest.mark.parametrize("name", BOUNDARIES)
def test_every_boundary_keeps_the_invariants(warehouse_url, sandboxes, name, caplog):
    caplog.set_level(logging.DEBUG)
    b = sandboxes[name]
    contract, load = _loader(warehouse_url, b)
    keys = day_keys(b.truth)
    # 3. atomicity: a crash before the first commit leaves nothing at all
    with pytest.raises(RuntimeError, match="injected"):
        load(keys[0], "crash-0", hook=lambda tx: (_ for _ in ()).throw(RuntimeError("injected crash")))
    assert all(not rows for rows in snapshot(warehouse_url).values())

    results = [load(k, f"run-{k}") for k in keys]
    # 1. conservation, per load and in the load log
    for r in results:
        assert r.rows_read == r.rows_loaded + r.rows_superseded + r.rows_dead_lettered + r.rows_held
    assert sum(r.rows_read for r in results) > 0 and sum(r.rows_held for r in results) == 0
    wh = Warehouse(warehouse_url)
    with wh.session() as s:
        logged = s.query("SELECT rows_read, rows_loaded, rows_superseded, rows_dead_lettered, rows_held"
                         " FROM meshline.load_log WHERE asset = ?", (name,))
        raw = s.query(f"SELECT {contract.idempotency_key}, {contract.change_token} FROM raw.{name}")
        dead = s.query("SELECT locator FROM meshline.dead_letters WHERE asset = ?", (name,))
    assert len(logged) == len(keys) and all(r[0] == sum(r[1:]) for r in logged)
    # ... and the warehouse holds exactly the newest valid version of every key (4: newest token wins)
    assert {str(k): t.isoformat() for k, t in raw} == _expected_raw(b, contract, keys)
    injected = _injected(b, contract.source_system)
    assert injected and sorted(_where(loc) for loc, in dead) == sorted(injected)

    # 2. idempotent re-run: every partition again, nothing changes (not even run ids)
    before = snapshot(warehouse_url)
    snapshot_normalized = snapshot(warehouse_url, normalize=True)
    again = [load(k, f"rerun-{k}") for k in keys]
    assert sum(r.rows_loaded for r in again) == 0
    assert snapshot(warehouse_url) == before

    # 3. atomicity after data exists: a crash leaves data, dead letters, watermark, manifest as they were
    # (the second partition is forgotten first, so that the crashing load has everything to write again)
    w = daily_window(keys[1])
    has_manifest = wh.table_exists("meshline", "file_manifest")
    with wh.transaction() as tx:
        n_logs = tx.scalar("SELECT count(*) FROM meshline.load_log")
        tx.execute(f"DELETE FROM raw.{name} WHERE {contract.change_token} >= ? AND {contract.change_token} < ?",
                   (w.start, w.end))
        for t in ("watermarks", "dead_letters") + (("file_manifest",) if has_manifest else ()):
            tx.execute(f"DELETE FROM meshline.{t} WHERE asset = ? AND partition_key = ?", (name, keys[1]))
    mid = snapshot(warehouse_url)
    with pytest.raises(RuntimeError, match="injected"):
        load(keys[1], "crash-1", hook=lambda tx: (_ for _ in ()).throw(RuntimeError("injected crash")))
    assert snapshot(warehouse_url) == mid
    with wh.session() as s:
        assert s.scalar("SELECT count(*) FROM meshline.load_log") == n_logs
    load(keys[1], "redo-1")  # ... and the partition then loads back to what the clean runs left
    assert snapshot(warehouse_url, normalize=True) == snapshot_normalized

    # 5. no raw PII outside raw tables
    pii = {str(r[c]) for r in b.records for c in contract.pii_columns if r.get(c) and len(str(r[c])) > 3}
    assert bool(pii) == bool(contract.pii_columns)
    with wh.session() as s:
        outside = "\n".join(" ".join(map(str, row)) for t in ("dead_letters", "load_log", "held_rows", "watermarks")
                            if wh.table_exists("meshline", t) for row in s.query(f"SELECT * FROM meshline.{t}"))
    for text, where in ((outside, "meshline tables"), (caplog.text, "logs")):
        leaked = sorted(v for v in pii if v in text)
        assert not leaked, f"{len(leaked)} raw PII value(s) of {name} in {where}"


def test_the_sandboxes_hold_every_fault_kind(sandboxes):
    """The invariants above are only as strong as the data: every boundary has several versions of some
    keys, and malformed records."""
    for name in BOUNDARIES:
        b = sandboxes[name]
        contract = load_contract(name)
        keys = [str(r[contract.idempotency_key]) for r in b.records]
        assert len(keys) > len(set(keys)), f"{name}: no key has more than one version"
        assert _injected(b, contract.source_system), f"{name}: no malformed record"
    assert sandboxes["marketing_leads"].truth["malformed"]
    assert timedelta(days=DAYS) == timedelta(days=len(day_keys(sandboxes["crm_leads"].truth)))
