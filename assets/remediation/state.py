"""Remediation state in the warehouse: check results, incidents (with time to resolve), compensating
runs, alerts and the audit log. Everything here is plain SQL over `meshline.*`, on DuckDB and Postgres.

- `meshline.check_results`: every evaluation of a partitioned check (contract, reconciliation, volume,
  freshness, gaps): passed or not, its severity, whether remediation applies, and the partitions a
  compensating run should reload. The backfill sensor reads the ones it has not handled yet.
- `meshline.incidents`: a remediable failure opens one incident per (asset, check, partition), with the
  contract's severity (critical → P1, standard → P2); the same check passing resolves it and records
  the minutes it was open. `mttr()` averages them per contract and severity.
- `meshline.remediations`: one row per (flow, partition) under compensation: attempts, next attempt,
  status (pending → launched → resolved, or escalated past the cap).
- `meshline.alerts`: what was paged (or suppressed) for which contract and window.
- `meshline.audit_log`: an append-only log, each row carrying the hash of the row before it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from assets.config import AUDIT_RETENTION_DAYS
from assets.loading.ddl import META_SCHEMA, utcnow
from assets.loading.warehouse import Tx, Warehouse

DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {META_SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.check_results (
        result_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        contract TEXT NOT NULL,
        asset TEXT NOT NULL,
        check_name TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        passed BOOLEAN NOT NULL,
        severity TEXT NOT NULL,
        remediable BOOLEAN NOT NULL,
        target_partitions TEXT NOT NULL,
        description TEXT NOT NULL,
        run_id TEXT NOT NULL,
        evaluated_at TIMESTAMP NOT NULL,
        handled_at TIMESTAMP
    )""",
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.incidents (
        incident_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        contract TEXT NOT NULL,
        asset TEXT NOT NULL,
        check_name TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        description TEXT NOT NULL,
        opened_at TIMESTAMP NOT NULL,
        opened_by_run TEXT NOT NULL,
        resolved_at TIMESTAMP,
        resolved_by_run TEXT,
        minutes_to_resolve DOUBLE PRECISION,
        escalated_at TIMESTAMP
    )""",
    f"ALTER TABLE {META_SCHEMA}.incidents ADD COLUMN IF NOT EXISTS postmortem TEXT",
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.remediations (
        flow TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at TIMESTAMP NOT NULL,
        last_run_key TEXT,
        reason TEXT NOT NULL,
        opened_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL,
        PRIMARY KEY (flow, partition_key)
    )""",
    # One row per synthetic end-to-end run (written by the nightly synthetic job; read by `meshline audit`).
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.synthetic_runs (
        run_id TEXT PRIMARY KEY,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP,
        modes_injected INTEGER NOT NULL,
        modes_detected INTEGER NOT NULL,
        false_positives INTEGER NOT NULL,
        status TEXT NOT NULL
    )""",
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.alerts (
        alert_id TEXT PRIMARY KEY,
        contract TEXT NOT NULL,
        kind TEXT NOT NULL,
        window_start TIMESTAMP NOT NULL,
        window_end TIMESTAMP NOT NULL,
        dead_letters BIGINT NOT NULL,
        rate DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        notifier TEXT NOT NULL,
        payload TEXT NOT NULL,
        sent_at TIMESTAMP NOT NULL
    )""",
    # Where the chain starts after retention pruned older rows: the last pruned row's seq and hash.
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.audit_log_anchor (
        anchor_id INTEGER PRIMARY KEY,
        seq BIGINT NOT NULL,
        row_hash TEXT NOT NULL,
        pruned_at TIMESTAMP NOT NULL
    )""",
    f"ALTER TABLE {META_SCHEMA}.audit_log_anchor ADD COLUMN IF NOT EXISTS anchor_mac TEXT",
    f"""CREATE TABLE IF NOT EXISTS {META_SCHEMA}.audit_log (
        seq BIGINT PRIMARY KEY,
        logged_at TIMESTAMP NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        row_hash TEXT NOT NULL
    )""",
]

SEVERITY = {"critical": "P1", "standard": "P2"}
GENESIS = "0" * 64


now = utcnow  # the loader's clock: one definition of how timestamps are stored


def ensure(tx: Tx) -> None:
    for stmt in DDL:
        tx.execute(stmt)


@dataclass(frozen=True)
class CheckOutcome:
    flow: str
    contract: str
    contract_severity: str
    asset: str
    check_name: str
    partition_key: str
    passed: bool
    severity: str  # WARN | ERROR
    remediable: bool
    description: str
    run_id: str
    target_partitions: tuple[str, ...] = ()


def record_check(wh: Warehouse, o: CheckOutcome, at: datetime | None = None) -> str | None:
    """Store one evaluation and open or resolve its incident, in one transaction. Returns what happened
    to the incident: "opened", "resolved", or None."""
    at = at or now()
    with wh.transaction() as tx:
        ensure(tx)
        tx.execute(
            f"INSERT INTO {META_SCHEMA}.check_results (result_id, flow, contract, asset, check_name, partition_key,"
            " passed, severity, remediable, target_partitions, description, run_id, evaluated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (uuid.uuid4().hex, o.flow, o.contract, o.asset, o.check_name, o.partition_key, o.passed, o.severity,
             o.remediable, ",".join(o.target_partitions or (o.partition_key,)), o.description[:1000], o.run_id, at))
        open_id = tx.scalar(
            f"SELECT incident_id FROM {META_SCHEMA}.incidents WHERE asset = ? AND check_name = ? AND"
            " partition_key = ? AND status = 'open'", (o.asset, o.check_name, o.partition_key))
        if not o.passed and o.remediable and open_id is None:
            iid = uuid.uuid4().hex[:16]
            tx.execute(
                f"INSERT INTO {META_SCHEMA}.incidents (incident_id, flow, contract, asset, check_name, partition_key,"
                " severity, status, description, opened_at, opened_by_run) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?)",
                (iid, o.flow, o.contract, o.asset, o.check_name, o.partition_key,
                 SEVERITY.get(o.contract_severity, "P2"), o.description[:1000], at, o.run_id))
            audit(tx, "meshline", "incident.open", f"{o.asset}/{o.check_name}/{o.partition_key}",
                  {"incident_id": iid, "severity": SEVERITY.get(o.contract_severity, "P2"), "run_id": o.run_id}, at)
            return "opened"
        if o.passed and open_id is not None:
            opened = tx.scalar(f"SELECT opened_at FROM {META_SCHEMA}.incidents WHERE incident_id = ?", (open_id,))
            minutes = (at - opened).total_seconds() / 60
            tx.execute(f"UPDATE {META_SCHEMA}.incidents SET status = 'resolved', resolved_at = ?, resolved_by_run = ?,"
                       " minutes_to_resolve = ? WHERE incident_id = ?", (at, o.run_id, minutes, open_id))
            audit(tx, "meshline", "incident.resolve", f"{o.asset}/{o.check_name}/{o.partition_key}",
                  {"incident_id": open_id, "minutes_to_resolve": round(minutes, 2), "run_id": o.run_id}, at)
            return "resolved"
    return None


def record_postmortem(wh: Warehouse, incident_id: str, url: str, actor: str) -> bool:
    """Attach a postmortem (a link to the write-up) to a resolved incident; audited."""
    with wh.transaction() as tx:
        ensure(tx)
        hit = tx.scalar(f"SELECT count(*) FROM {META_SCHEMA}.incidents WHERE incident_id = ? AND status = 'resolved'",
                        (incident_id,))
        if not hit:
            return False
        tx.execute(f"UPDATE {META_SCHEMA}.incidents SET postmortem = ? WHERE incident_id = ?", (url, incident_id))
        audit(tx, actor, "incident.postmortem", incident_id, {"url": url})
    return True


def mttr(wh: Warehouse) -> list[tuple[str, str, int, float | None]]:
    """(contract, severity, resolved incidents, mean minutes to resolve) per contract and severity."""
    with wh.session() as s:
        if not wh.table_exists(META_SCHEMA, "incidents"):
            return []
        return [(c, sev, int(n), None if m is None else float(m)) for c, sev, n, m in s.query(
            f"SELECT contract, severity, count(*), avg(minutes_to_resolve) FROM {META_SCHEMA}.incidents"
            " WHERE status = 'resolved' GROUP BY contract, severity ORDER BY contract, severity")]


KEYED = "k1:"  # a row hash that is an HMAC under the audit key (older rows hold a bare SHA-256)


def audit_key(tx: Tx) -> bytes:
    """The audit chain's key, derived from the redaction key: a secret that lives outside the database,
    so rows edited, cut or recomputed in the database cannot be given matching hashes."""
    return hmac.digest(tx.key, b"meshline audit log v1", "sha256")


def _row_hash(prev: str, seq: int, at: datetime, actor: str, action: str, target: str, details: str,
              key: bytes | None) -> str:
    body = json.dumps([prev, seq, at.isoformat(), actor, action, target, details], separators=(",", ":")).encode()
    if key is None:  # how rows were hashed before the chain was keyed; verified, never written
        return hashlib.sha256(body).hexdigest()
    return KEYED + hmac.digest(key, body, "sha256").hex()


def _anchor_mac(key: bytes, seq: int, row_hash: str) -> str:
    return hmac.digest(key, f"anchor|{seq}|{row_hash}".encode(), "sha256").hex()


def audit(tx: Tx, actor: str, action: str, target: str, details: dict[str, Any], at: datetime | None = None) -> None:
    """Append one row to the audit log, chained to the one before it. Call inside the transaction
    that does the audited action, so the action and its record commit together."""
    at = at or now()
    ensure(tx)
    last = tx.query(f"SELECT seq, row_hash FROM {META_SCHEMA}.audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev = (last[0][0] + 1, last[0][1]) if last else (1, GENESIS)
    text = json.dumps(details, sort_keys=True, default=str)
    tx.execute(f"INSERT INTO {META_SCHEMA}.audit_log (seq, logged_at, actor, action, target, details, prev_hash, row_hash)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (seq, at, actor, action, target, text, prev,
                _row_hash(prev, seq, at, actor, action, target, text, audit_key(tx))))


def prune_audit_log(wh: Warehouse, days: int, actor: str, at: datetime | None = None) -> int:
    """Delete audit rows older than `days` (90..365), keeping the chain verifiable: the last deleted
    row's seq and hash become the anchor the remaining chain starts from. The pruning is itself audited."""
    lo, hi = AUDIT_RETENTION_DAYS
    if not lo <= days <= hi:
        raise ValueError(f"audit-log retention must be between {lo} and {hi} days, not {days}")
    at = at or now()
    cutoff = at - timedelta(days=days)
    with wh.transaction() as tx:
        ensure(tx)
        last = tx.query(f"SELECT seq, row_hash FROM {META_SCHEMA}.audit_log WHERE logged_at < ? ORDER BY seq DESC"
                        " LIMIT 1", (cutoff,))
        if not last:
            return 0
        seq, row_hash = last[0]
        n = tx.scalar(f"SELECT count(*) FROM {META_SCHEMA}.audit_log WHERE seq <= ?", (seq,))
        tx.execute(f"DELETE FROM {META_SCHEMA}.audit_log WHERE seq <= ?", (seq,))
        tx.execute(f"DELETE FROM {META_SCHEMA}.audit_log_anchor WHERE anchor_id = 1")
        tx.execute(f"INSERT INTO {META_SCHEMA}.audit_log_anchor (anchor_id, seq, row_hash, pruned_at, anchor_mac)"
                   " VALUES (1, ?, ?, ?, ?)", (seq, row_hash, at, _anchor_mac(audit_key(tx), seq, row_hash)))
        audit(tx, actor, "audit_log.prune", "meshline.audit_log", {"rows": int(n), "through_seq": int(seq),
                                                                    "retention_days": days}, at)
    return int(n)


def audit_head(wh: Warehouse) -> str | None:
    """`<seq>:<row hash>` of the newest audit row: kept outside the warehouse, it lets `verify_audit_log`
    notice the newest rows being cut (a chain's own hashes cannot)."""
    with wh.transaction() as tx:
        ensure(tx)
        last = tx.query(f"SELECT seq, row_hash FROM {META_SCHEMA}.audit_log ORDER BY seq DESC LIMIT 1")
    return f"{last[0][0]}:{last[0][1]}" if last else None


def verify_audit_log(wh: Warehouse, head: str | None = None) -> list[str]:
    """Problems with the chain (an edited, deleted, reordered or recomputed row, a forged anchor; with a
    `head` exported earlier, newest rows cut); empty when intact."""
    with wh.transaction() as tx:
        ensure(tx)
        key = audit_key(tx)
        rows = tx.query(f"SELECT seq, logged_at, actor, action, target, details, prev_hash, row_hash FROM"
                        f" {META_SCHEMA}.audit_log ORDER BY seq")
        anchor = tx.query(f"SELECT seq, row_hash, anchor_mac FROM {META_SCHEMA}.audit_log_anchor WHERE anchor_id = 1")
    problems = []
    if anchor and not hmac.compare_digest(anchor[0][2] or "", _anchor_mac(key, anchor[0][0], anchor[0][1])):
        problems.append(f"anchor (seq {anchor[0][0]}): not written by Meshline's pruning (forged or edited)")
    prev, expect_seq = (anchor[0][1], anchor[0][0] + 1) if anchor else (GENESIS, 1)
    keyed_seen = False
    for seq, at, actor, action, target, details, prev_hash, row_hash in rows:
        if seq != expect_seq:
            problems.append(f"row {seq}: expected seq {expect_seq} (a row was deleted)")
        if prev_hash != prev:
            problems.append(f"row {seq}: does not follow the row before it (deleted or reordered)")
        keyed = row_hash.startswith(KEYED)
        if keyed_seen and not keyed:
            problems.append(f"row {seq}: an unkeyed hash after keyed rows (recomputed without the key)")
        keyed_seen = keyed_seen or keyed
        if not hmac.compare_digest(_row_hash(prev_hash, seq, at, actor, action, target, details,
                                             key if keyed else None), row_hash):
            problems.append(f"row {seq}: content does not match its hash (edited, or recomputed without the key)")
        prev, expect_seq = row_hash, seq + 1
    if head is not None:
        problems += _check_head(head, rows, anchor)
    return problems


def _check_head(head: str, rows: list[Any], anchor: list[Any]) -> list[str]:
    seq_text, _, want = head.partition(":")
    if not seq_text.isdigit() or not want:
        return [f"head {head!r}: expected <seq>:<hash>, as `meshline audit-log head` prints it"]
    seq = int(seq_text)
    found = {r[0]: r[7] for r in rows}
    if seq in found:
        return [] if hmac.compare_digest(found[seq], want) else [f"row {seq}: differs from the exported head"]
    if anchor and seq == anchor[0][0]:
        return [] if hmac.compare_digest(anchor[0][1], want) else [f"row {seq}: differs from the exported head"]
    if anchor and seq < anchor[0][0]:
        return []  # pruned by retention since the head was exported; the anchor carries the chain on
    return [f"row {seq} (the exported head) is missing: the newest rows were cut"]
