"""Paging the owners: dead-letter thresholds per contract, incident SLO breaches, exhausted remediation.

Dead letters, per contract, over a window (default the last 24 h, by when each was first seen):

- count: more open dead letters than `slos.dead_letter_count_max`;
- rate: open dead letters / rows read by the window's loads above `slos.dead_letter_rate_max`;
- growth: this window's dead letters over the previous window's above `slos.dead_letter_growth_max`.

Any breach gives one page per contract and window — never one per row or partition. A contract paged
within the suppression interval (default: the window) is not paged again unless it got worse (count or
rate up by more than 10% since the last page); the suppressed page is still recorded in
`meshline.alerts`. A page names the owner, the runbook and the severity, counts by reason code and a
few HMAC-redacted sample keys; it holds no record values.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from assets.loading.ddl import META_SCHEMA
from assets.loading.redaction import redact_value
from assets.loading.warehouse import Tx, Warehouse
from assets.remediation.notify import Notifier, NotifyError
from assets.remediation.probe import Probe
from assets.remediation.state import SEVERITY, audit, ensure, now
from expectations.contract import Contract

DEFAULT_WINDOW = timedelta(hours=24)
RESOLVE_HOURS = {"P1": 4.0, "P2": 24.0}
WORSE = 1.10
SAMPLE_KEYS = 3


@dataclass(frozen=True)
class DeadLetterStats:
    contract: str
    window_start: datetime
    window_end: datetime
    count: int
    previous: int
    rows_read: int
    by_reason: dict[str, int]
    sample_keys: list[str]

    @property
    def rate(self) -> float:
        return self.count / self.rows_read if self.rows_read else (1.0 if self.count else 0.0)


def stats(wh: Warehouse, contract: Contract, at: datetime, window: timedelta = DEFAULT_WINDOW) -> DeadLetterStats:
    start, prev_start = at - window, at - 2 * window
    with wh.session() as s:
        if not wh.table_exists(META_SCHEMA, "dead_letters"):
            return DeadLetterStats(contract.name, start, at, 0, 0, 0, {}, [])
        by_reason = {r: int(n) for r, n in s.query(
            f"SELECT reason_code, count(*) FROM {META_SCHEMA}.dead_letters WHERE contract = ? AND status = 'open'"
            " AND first_seen_at >= ? AND first_seen_at < ? GROUP BY reason_code ORDER BY reason_code",
            (contract.name, start, at))}
        previous = s.scalar(f"SELECT count(*) FROM {META_SCHEMA}.dead_letters WHERE contract = ? AND"
                            " first_seen_at >= ? AND first_seen_at < ?", (contract.name, prev_start, start))
        read = s.scalar(f"SELECT coalesce(sum(rows_read), 0) FROM {META_SCHEMA}.load_log WHERE asset = ? AND"
                        " finished_at >= ? AND finished_at < ?", (contract.name, start, at))
        keys = [k for (k,) in s.query(
            f"SELECT record_key FROM {META_SCHEMA}.dead_letters WHERE contract = ? AND status = 'open' AND"
            " first_seen_at >= ? AND first_seen_at < ? AND record_key IS NOT NULL ORDER BY dead_letter_id LIMIT ?",
            (contract.name, start, at, SAMPLE_KEYS))]
    hkey = wh.redaction_key
    return DeadLetterStats(contract.name, start, at, sum(by_reason.values()), int(previous or 0), int(read or 0),
                           by_reason, [str(redact_value(k, hkey)) for k in keys])


def breaches(st: DeadLetterStats, contract: Contract) -> list[str]:
    out = []
    cmax, rmax, gmax = (contract.slos.get(k) for k in
                        ("dead_letter_count_max", "dead_letter_rate_max", "dead_letter_growth_max"))
    if cmax is not None and st.count > cmax:
        out.append(f"count {st.count} > {cmax:g}")
    if rmax is not None and st.count and st.rate > rmax:
        out.append(f"rate {st.rate:.2%} > {rmax:.2%}")
    if gmax is not None and st.previous and st.count / st.previous > gmax:
        out.append(f"growth ×{st.count / st.previous:.1f} > ×{gmax:g}")
    return out


def _page(contract: Contract, kind: str, summary: str, extra: dict[str, Any]) -> dict[str, Any]:
    sev = SEVERITY.get(contract.severity, "P2")
    owner = contract.owners.get("contract") or contract.owners.get("execution")
    return {"kind": kind, "contract": contract.name, "contract_version": contract.version, "severity": sev,
            "owner": owner, "execution_owner": contract.owners.get("execution"), "runbook": contract.runbook,
            "text": f"[{sev}] {contract.name}: {summary} — owner {owner}; runbook {contract.runbook or 'none'}",
            **extra}


def _last_sent(s: Tx, contract: str, kind: str) -> tuple[Any, ...] | None:
    rows = s.query(f"SELECT sent_at, dead_letters, rate FROM {META_SCHEMA}.alerts WHERE contract = ? AND kind = ?"
                   " AND status = 'sent' ORDER BY sent_at DESC LIMIT 1", (contract, kind))
    return rows[0] if rows else None


def resend_failed(wh: Warehouse, notifier: Notifier, *, budget_s: float = 40.0, at: datetime | None = None
                  ) -> dict[str, int]:
    """Send again every escalation page (exhausted or unfixable remediation) that failed (dead-letter and incident pages are
    re-evaluated by their own tick). Pages are tried oldest first until `budget_s` is spent; what is left
    stays failed for the next tick. Returns {"sent", "failed"} of this call."""
    import json

    at = at or now()
    until = time.monotonic() + budget_s
    with wh.transaction() as tx:
        ensure(tx)
        rows = tx.query(f"SELECT alert_id, contract, kind, payload FROM {META_SCHEMA}.alerts WHERE status = 'failed'"
                        " AND kind IN ('remediation_exhausted', 'remediation_unfixable') ORDER BY sent_at")
    out = {"sent": 0, "failed": 0}
    for alert_id, contract, kind, payload in rows:
        if time.monotonic() > until:
            break
        page = {k: v for k, v in json.loads(payload).items() if k != "error"}
        try:
            notifier.send(page)
        except NotifyError:
            out["failed"] += 1
            continue
        with wh.transaction() as tx:
            tx.execute(f"UPDATE {META_SCHEMA}.alerts SET status = 'sent', sent_at = ? WHERE alert_id = ?", (at, alert_id))
            audit(tx, "meshline", "page.resent", contract, {"kind": kind, "alert_id": alert_id,
                                                             "notifier": notifier.name}, at)
        out["sent"] += 1
    return out


def _record(wh: Warehouse, contract: str, kind: str, start: datetime, end: datetime, count: int, rate: float, status: str, notifier: Notifier,
            page: dict[str, Any], at: datetime) -> None:
    import json

    with wh.transaction() as tx:
        ensure(tx)
        tx.execute(f"INSERT INTO {META_SCHEMA}.alerts (alert_id, contract, kind, window_start, window_end,"
                   " dead_letters, rate, status, notifier, payload, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (uuid.uuid4().hex, contract, kind, start, end, count, rate, status, notifier.name,
                    json.dumps(page, sort_keys=True, default=str), at))
        audit(tx, "meshline", f"page.{status}", contract, {"kind": kind, "dead_letters": count,
                                                            "notifier": notifier.name}, at)


def page_dead_letters(wh: Warehouse, contracts: list[Contract], notifier: Notifier, *, at: datetime | None = None,
                      window: timedelta = DEFAULT_WINDOW, suppress: timedelta | None = None) -> list[dict[str, Any]]:
    """Evaluate every contract's thresholds; page or suppress. Returns one dict per contract in breach:
    {"contract", "status": sent | suppressed | failed, "page"}."""
    at = at or now()
    suppress = window if suppress is None else suppress
    with wh.transaction() as tx:
        ensure(tx)
    out = []
    for c in contracts:
        st = stats(wh, c, at, window)
        why = breaches(st, c)
        if not why:
            continue
        with wh.session() as s:
            last = _last_sent(s, c.name, "dead_letters")
        worse = last is None or st.count > last[1] * WORSE or st.rate > last[2] * WORSE
        page = _page(c, "dead_letters", f"{st.count} open dead letter(s) in {window.total_seconds() / 3600:g} h "
                     f"({'; '.join(why)})", {
                         "window": [st.window_start.isoformat(), st.window_end.isoformat()], "dead_letters": st.count,
                         "rate": round(st.rate, 5), "previous_window": st.previous, "rows_read": st.rows_read,
                         "breaches": why, "by_reason": st.by_reason, "sample_keys": st.sample_keys})
        status = "suppressed"
        if last is None or at - last[0] >= suppress or worse:
            try:
                notifier.send(page)
                status = "sent"
            except NotifyError as exc:
                status = "failed"
                page["error"] = str(exc)
        _record(wh, c.name, "dead_letters", st.window_start, at, st.count, st.rate, status, notifier, page, at)
        out.append({"contract": c.name, "status": status, "page": page})
    return out


def escalate_incidents(wh: Warehouse, contracts: dict[str, Contract], notifier: Notifier, *, at: datetime | None = None
                       ) -> list[dict[str, Any]]:
    """Page once for every open incident past its resolve SLO (the contract's `resolve_hours`, else P1 4 h,
    P2 24 h) and mark it escalated."""
    at = at or now()
    with wh.transaction() as tx:
        ensure(tx)
        rows = tx.query(f"SELECT incident_id, contract, asset, check_name, partition_key, severity, opened_at"
                        f" FROM {META_SCHEMA}.incidents WHERE status = 'open' AND escalated_at IS NULL")
    out = []
    for iid, cname, asset, check, part, sev, opened in rows:
        c = contracts.get(cname)
        limit = (c.slos.get("resolve_hours") if c else None) or RESOLVE_HOURS.get(sev, 24.0)
        open_h = (at - opened).total_seconds() / 3600
        if open_h <= limit:
            continue
        page = {"kind": "incident_escalation", "incident_id": iid, "contract": cname, "severity": sev,
                "asset": asset, "check": check, "partition": part, "open_hours": round(open_h, 2), "resolve_slo_hours": limit}
        if c:
            page = _page(c, "incident_escalation", f"incident {iid} ({check} {part}) open {open_h:.1f} h, past "
                         f"its {limit:g} h SLO", {k: v for k, v in page.items() if k not in ("kind", "contract")})
        else:
            page["text"] = f"[{sev}] {cname}: incident {iid} open {open_h:.1f} h, past its {limit:g} h SLO"
        status = "sent"
        try:
            notifier.send(page)
        except NotifyError as exc:
            status, page["error"] = "failed", str(exc)
        if status == "sent":  # a failed page leaves the incident unescalated: the next tick pages again
            with wh.transaction() as tx:
                tx.execute(f"UPDATE {META_SCHEMA}.incidents SET escalated_at = ? WHERE incident_id = ?", (at, iid))
        _record(wh, cname, "incident_escalation", opened, at, 0, 0.0, status, notifier, page, at)
        out.append({"incident_id": iid, "status": status, "page": page})
    return out


def page_exhausted(wh: Warehouse, contract: Contract | None, flow: str, partition: str, attempts: int, notifier: Notifier,
                   at: datetime | None = None) -> dict[str, Any]:
    """Compensation gave up after `attempts`: page the flow's owner."""
    summary = f"compensating backfill of {flow} {partition} failed {attempts} time(s): escalated to a human"
    return _escalation(wh, contract, "remediation_exhausted", summary, {"flow": flow, "partition": partition,
                                                                        "attempts": attempts}, notifier, at)


def page_unfixable(wh: Warehouse, contract: Contract | None, probe: Probe, notifier: Notifier,
                   at: datetime | None = None) -> dict[str, Any]:
    """A failing partition no reload can change (the probe's dry run found nothing new and no dead
    letter now valid): page the flow's owner at once, with the probe's counts."""
    summary = (f"{probe.flow} {probe.partition} is failing and a reload cannot change it, so no compensating "
               f"run was launched: {probe.words()}. The source systems must fix it: escalated to a human")
    return _escalation(wh, contract, "remediation_unfixable", summary, {
        "flow": probe.flow, "partition": probe.partition, "probe": probe.evidence}, notifier, at)


def _escalation(wh: Warehouse, contract: Contract | None, kind: str, summary: str, details: dict[str, Any],
                notifier: Notifier, at: datetime | None) -> dict[str, Any]:
    at = at or now()
    page = (_page(contract, kind, summary, details) if contract
            else {"kind": kind, "text": summary, **details})
    status = "sent"
    try:
        notifier.send(page)
    except NotifyError as exc:
        status, page["error"] = "failed", str(exc)
    _record(wh, contract.name if contract else details["flow"], kind, at, at, 0, 0.0, status, notifier, page, at)
    return {"status": status, "page": page}
