"""Paging against a webhook receiver on 127.0.0.1, on DuckDB and Postgres: what a page holds, one page
per contract and window, suppression unless worse, escalation of incidents past their SLO and of
exhausted remediation, retries of transient webhook failures only — and no raw PII in any payload."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import pytest

from assets.loading import Warehouse
from assets.remediation.notify import Notifier, NotifyError
from assets.remediation.paging import escalate_incidents, page_dead_letters, page_exhausted
from assets.remediation.state import CheckOutcome, now, record_check
from assets.resources import NotifierResource
from expectations.registry import Registry
from tests.helpers import day_keys, materialize_day


class Receiver:
    """A webhook endpoint: records every JSON body; answers with the queued statuses, then 200."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        rec = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                rec.bodies.append(json.loads(self.rfile.read(n)))
                status = rec.statuses.pop(0) if rec.statuses else 200
                self.send_response(status)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _pii(sandbox) -> set[str]:
    with duckdb.connect(str(sandbox.paths.marketing), read_only=True) as con:
        rows = con.execute("SELECT email, first_name, last_name FROM marketing_leads").fetchall()
    return {v for r in rows for v in r if v and len(v) > 3}


def test_pages_grouped_suppressed_escalated_and_free_of_pii(warehouse_url, sandbox, receiver):
    for key in day_keys(sandbox.ground_truth()):
        materialize_day(warehouse_url, sandbox, key)
    wh = Warehouse(warehouse_url)
    reg = Registry()
    # Tight thresholds, so that the sandbox's few dead letters breach them.
    mkt = dataclasses.replace(reg.get("marketing_leads"), slos={"dead_letter_count_max": 1, "dead_letter_rate_max": 0.5})
    crm = dataclasses.replace(reg.get("crm_leads"), slos={"dead_letter_count_max": 1, "dead_letter_rate_max": 0.5})
    notifier = Notifier(kind="json", url=receiver.url, sleep=lambda s: None)
    at = now() + timedelta(seconds=1)

    pages = page_dead_letters(wh, [mkt, crm], notifier, at=at)
    assert [p["status"] for p in pages] == ["sent", "sent"] and len(receiver.bodies) == 2  # one per contract
    with wh.session() as s:
        by_reason = {(a, r): int(n) for a, r, n in s.query(
            "SELECT asset, reason_code, count(*) FROM meshline.dead_letters WHERE status = 'open' GROUP BY 1, 2")}
        partitions = s.scalar("SELECT count(DISTINCT partition_key) FROM meshline.dead_letters")
    assert partitions > 1, "the dead letters span partitions, the page does not multiply"
    for body, c in zip(receiver.bodies, (mkt, crm), strict=True):
        assert body["contract"] == c.name and body["owner"] == c.owners["contract"] and body["runbook"] == c.runbook
        assert body["severity"] == ("P1" if c.critical else "P2")
        assert body["by_reason"] == {r: n for (a, r), n in by_reason.items() if a == c.name}
        assert body["dead_letters"] == sum(body["by_reason"].values()) and "count" in body["breaches"][0]
        assert body["sample_keys"] and all(k.startswith("redacted:") for k in body["sample_keys"])

    # Right after: suppressed (recorded, not sent). Then crm gets worse: paged again, marketing not.
    assert [p["status"] for p in page_dead_letters(wh, [mkt, crm], notifier, at=at + timedelta(minutes=5))] == [
        "suppressed", "suppressed"]
    with wh.transaction() as tx:
        tx.execute("INSERT INTO meshline.dead_letters (dead_letter_id, flow, asset, partition_key, contract,"
                   " contract_version, reason_code, reasons, source_system, source_table, record_key, change_token,"
                   " locator, payload, run_id, first_seen_at, status) SELECT dead_letter_id || 'x', flow, asset,"
                   " partition_key, contract, contract_version, reason_code, reasons, source_system, source_table,"
                   " record_key, change_token, locator, payload, run_id, first_seen_at, status"
                   " FROM meshline.dead_letters WHERE asset = 'crm_leads'")
    later = page_dead_letters(wh, [mkt, crm], notifier, at=at + timedelta(minutes=10))
    assert [(p["contract"], p["status"]) for p in later] == [("marketing_leads", "suppressed"), ("crm_leads", "sent")]
    assert len(receiver.bodies) == 3
    with wh.session() as s:
        recorded = dict(s.query("SELECT status, count(*) FROM meshline.alerts GROUP BY status"))
    assert recorded == {"sent": 3, "suppressed": 3}

    # Incidents past their SLO: a P1 open 5 h (SLO 4 h) is escalated once; a P2 open 5 h (SLO 24 h) is not.
    for contract, sev in ((crm, "critical"), (mkt, "standard")):
        record_check(wh, CheckOutcome(flow="lead_handoff", contract=contract.name, contract_severity=sev,
                                      asset=contract.name, check_name="rule_handed_off",
                                      partition_key="2026-03-12", passed=False, severity="ERROR", remediable=True,
                                      description="test", run_id="r1"), at=at - timedelta(hours=5))
    esc = escalate_incidents(wh, {"crm_leads": crm, "marketing_leads": mkt}, notifier, at=at)
    assert [(e["page"]["contract"], e["page"]["severity"]) for e in esc] == [("crm_leads", "P1")]
    assert receiver.bodies[-1]["kind"] == "incident_escalation" and receiver.bodies[-1]["owner"] == crm.owners["contract"]
    assert escalate_incidents(wh, {"crm_leads": crm, "marketing_leads": mkt}, notifier, at=at) == []

    page_exhausted(wh, crm, "lead_handoff", "2026-03-12", 3, notifier, at=at)
    assert receiver.bodies[-1]["kind"] == "remediation_exhausted" and receiver.bodies[-1]["attempts"] == 3

    text = json.dumps(receiver.bodies)
    leaked = [v for v in _pii(sandbox) if v in text]
    assert not leaked, f"raw PII in pages: {len(leaked)} value(s)"
    with wh.session() as s:
        stored = " ".join(p for (p,) in s.query("SELECT payload FROM meshline.alerts"))
    assert not [v for v in _pii(sandbox) if v in stored]


def test_slack_format_and_retries_of_transient_failures_only(receiver):
    page = {"kind": "dead_letters", "contract": "crm_leads", "text": "[P1] crm_leads: 3 open dead letters"}
    slack = Notifier(kind="slack", url=receiver.url, sleep=lambda s: None)
    receiver.statuses = [500, 503]
    slack.send(page)
    assert receiver.bodies == [{"text": page["text"]}] * 3  # two transient failures, then delivered
    receiver.bodies.clear()
    receiver.statuses = [400]
    with pytest.raises(NotifyError, match="HTTP 400 .*not retried"):
        slack.send(page)
    assert len(receiver.bodies) == 1
    receiver.bodies.clear()
    receiver.statuses = [500] * 10
    with pytest.raises(NotifyError, match="failed 4 times"):
        Notifier(kind="json", url=receiver.url, sleep=lambda s: None).send(page)
    assert len(receiver.bodies) == 4
    assert NotifierResource().get().kind == "log"
    assert NotifierResource(url=receiver.url).get().kind == "slack"
    assert NotifierResource(url=receiver.url, format="json").get().kind == "json"
