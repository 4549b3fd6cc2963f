"""Paging never blocks a sensor tick beyond a bounded time and never loses a page: a webhook that
trickles its answer, one that answers 200 with a broken gzip body, and one that is down while an
incident is escalated or a remediation is exhausted. Real webhook servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest

from assets.loading import Warehouse
from assets.remediation.notify import Notifier, NotifyError
from assets.remediation.paging import escalate_incidents, page_exhausted, resend_failed
from assets.remediation.state import CheckOutcome, now, record_check
from expectations.registry import Registry


class RawHook:
    """A webhook that answers with `mode`: 'trickle' (headers one byte every 0.2 s), 'badgzip' (200 with a
    body that is not gzip), 'down' (503), 'ok' (200)."""

    def __init__(self, mode: str):
        self.mode, self.hits = mode, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next((ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")), 0))
            while len(body) < length:
                body += conn.recv(65536)
            self.hits += 1
            if self.mode == "trickle":
                for b in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                    conn.sendall(bytes([b]))
                    time.sleep(0.2)
            elif self.mode == "badgzip":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\n\x1f\x8bnot a gzip")
            elif self.mode == "down":
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop = True
        self.sock.close()


@pytest.fixture
def hook(request):
    made = []

    def make(mode):
        h = RawHook(mode)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


PAGE = {"kind": "dead_letters", "contract": "crm_leads", "text": "[P1] crm_leads: 3 open dead letters"}


def test_a_webhook_that_trickles_its_answer_is_given_up_within_the_send_deadline(hook):
    h = hook("trickle")
    t0 = time.monotonic()
    with pytest.raises(NotifyError, match="deadline"):
        Notifier(kind="json", url=h.url, deadline_s=2, sleep=lambda s: None).send(PAGE)
    assert time.monotonic() - t0 < 4  # the answer alone would take 8 s per attempt, 4 attempts


def test_a_200_with_a_broken_gzip_body_is_a_delivered_page(hook):
    h = hook("badgzip")
    Notifier(kind="json", url=h.url, sleep=lambda s: None).send(PAGE)  # the status says delivered
    assert h.hits == 1


def _incident(wh, contract, hours_ago):
    record_check(wh, CheckOutcome(flow="lead_handoff", contract=contract.name, contract_severity="critical",
                                  asset=contract.name, check_name="rule_handed_off", partition_key="2026-03-12",
                                  passed=False, severity="ERROR", remediable=True, description="test", run_id="r1"),
                 at=now() - timedelta(hours=hours_ago))


def test_an_escalation_whose_page_failed_is_paged_again_on_the_next_tick(hook, warehouse_url):
    wh = Warehouse(warehouse_url)
    crm = Registry().get("crm_leads")
    _incident(wh, crm, 5)
    down = Notifier(kind="json", url=hook("down").url, sleep=lambda s: None)
    assert [e["status"] for e in escalate_incidents(wh, {"crm_leads": crm}, down)] == ["failed"]
    up = hook("ok")
    assert [e["status"] for e in escalate_incidents(wh, {"crm_leads": crm}, Notifier(kind="json", url=up.url))] == ["sent"]
    assert up.hits == 1
    assert escalate_incidents(wh, {"crm_leads": crm}, Notifier(kind="json", url=up.url)) == []  # once sent, done


def test_an_exhausted_remediation_whose_page_failed_is_resent_until_delivered(hook, warehouse_url):
    wh = Warehouse(warehouse_url)
    crm = Registry().get("crm_leads")
    down = Notifier(kind="json", url=hook("down").url, sleep=lambda s: None)
    assert page_exhausted(wh, crm, "lead_handoff", "2026-03-12", 3, down)["status"] == "failed"
    assert resend_failed(wh, down) == {"sent": 0, "failed": 1}
    up = hook("ok")
    assert resend_failed(wh, Notifier(kind="json", url=up.url)) == {"sent": 1, "failed": 0}
    assert up.hits == 1
    assert resend_failed(wh, Notifier(kind="json", url=up.url)) == {"sent": 0, "failed": 0}
    with wh.session() as s:
        actions = [a for (a,) in s.query("SELECT action FROM meshline.audit_log ORDER BY seq")]
    assert actions.count("page.failed") >= 1 and actions[-1] == "page.resent"


def test_a_tick_with_many_failing_pages_ends_within_its_budget(hook, warehouse_url):
    wh = Warehouse(warehouse_url)
    crm = Registry().get("crm_leads")
    slow = Notifier(kind="json", url=hook("trickle").url, deadline_s=1, sleep=lambda s: None)
    for i in range(6):
        page_exhausted(wh, crm, "lead_handoff", f"2026-03-{i + 1:02d}", 3, Notifier(kind="json", url=hook("down").url,
                                                                                 sleep=lambda s: None))
    t0 = time.monotonic()
    out = resend_failed(wh, slow, budget_s=2.5)
    assert time.monotonic() - t0 < 4.5
    assert out["sent"] == 0 and out["failed"] < 6  # the rest wait for the next tick, still failed, never lost


def test_the_webhook_url_reaches_no_log_line_at_any_level(hook, caplog):
    """The webhook URL is a secret (Slack's carries its token in the path): httpx logs each request's URL
    at INFO, and no line at any level may carry it."""
    import logging

    caplog.set_level(logging.DEBUG)
    ok, down = hook("ok"), hook("down")
    Notifier(kind="json", url=ok.url + "/T000/B000/SECRETTOKEN42", sleep=lambda s: None).send(PAGE)
    with pytest.raises(NotifyError) as exc:
        Notifier(kind="json", url=down.url + "/T000/B000/SECRETTOKEN42", sleep=lambda s: None).send(PAGE)
    assert ok.hits == 1 and "SECRETTOKEN42" not in str(exc.value)
    assert caplog.records and "SECRETTOKEN42" not in caplog.text
