"""HttpSource against a local server (127.0.0.1) that throttles (429 with Retry-After in seconds, as an
HTTP date, 0 and absent), fails (500), answers slowly and drops connections: every page is loaded
exactly once and the request rate never exceeds the configured limit."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.watermark import Window
from assets.sources.http import HttpSource
from expectations.contract import parse_contract
from expectations.reasons import SourceError

T0 = datetime(2026, 3, 1)
RECORDS = [{"invoice_id": i, "amount": f"{i}.50", "currency": "USD",
            "updated_at": (T0 + timedelta(minutes=i)).isoformat()} for i in range(1, 301)]


class FaultServer:
    """Serves RECORDS in pages; `faults` maps a request number (1-based) to a fault."""

    def __init__(self, faults: dict[int, str], pagination: str = "cursor"):
        self.faults, self.pagination = faults, pagination
        self.stamps: list[float] = []
        self.served_pages: list[int] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with server.lock:
                    server.stamps.append(time.monotonic())
                    n = len(server.stamps)
                fault = server.faults.get(n)
                q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                if urlparse(self.path).path != "/invoices":
                    return self._send(404, {"error": "not found"})
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "slow":
                    time.sleep(0.6)
                if fault == "500":
                    return self._send(500, {"error": "boom"})
                if fault and fault.startswith("429"):
                    _, _, after = fault.partition(":")
                    headers = {}
                    if after == "date":
                        headers["Retry-After"] = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
                    elif after:
                        headers["Retry-After"] = after
                    return self._send(429, {"error": "slow down"}, headers)
                since = datetime.fromisoformat(q.get("updated_since", "1970-01-01T00:00:00"))
                before = datetime.fromisoformat(q.get("updated_before", "2100-01-01T00:00:00"))
                rows = [r for r in RECORDS if since <= datetime.fromisoformat(r["updated_at"]) < before]
                limit = int(q.get("limit", 50))
                start = int(q.get("cursor", 0)) if server.pagination == "cursor" else (int(q.get("page", 1)) - 1) * limit
                page = rows[start:start + limit]
                nxt = str(start + limit) if start + limit < len(rows) else None
                with server.lock:
                    server.served_pages.append(start)
                self._send(200, {"data": page, "next_cursor": nxt})

            def _send(self, status, body, headers=None):
                raw = json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request):
    srv = FaultServer(*request.param)
    yield srv
    srv.close()


def _source(url, **kw) -> HttpSource:
    opts = dict(system="billing", table="invoices", page_size=25, rate_per_s=20, burst=1, timeout_s=0.3,
                backoff_base_s=0.05, backoff_cap_s=0.2, max_retries=6)
    opts.update(kw)
    return HttpSource(url, "/invoices", **opts)


def _ids(tables) -> list[int]:
    return [int(x) for t in tables for x in t.column("invoice_id").to_pylist()]


FAULTS = {2: "429:0", 3: "429", 5: "429:date", 7: "500", 8: "slow", 10: "drop", 11: "500", 12: "429:1", 14: "drop"}


@pytest.mark.parametrize("server", [(FAULTS, "cursor"), (FAULTS, "page")], indirect=True)
def test_every_page_exactly_once_under_faults_and_rate_limited(server):
    src = _source(server.url, pagination=server.pagination)
    tables = list(src.extract(["invoice_id", "amount", "currency", "updated_at"], "updated_at", T0, True,
                              T0 + timedelta(days=1), chunk_rows=40))
    ids = _ids(tables)
    assert sorted(ids) == [r["invoice_id"] for r in RECORDS] and len(ids) == len(set(ids))
    assert all(t.num_rows <= 40 for t in tables)
    assert src.stats["retries"] == len(FAULTS) and src.stats["throttled"] == 4
    # rate: never more than rate + burst requests in any one-second window
    stamps = server.stamps
    for i, t in enumerate(stamps):
        assert len([s for s in stamps[i:] if s < t + 1.0]) <= 20 + 1
    # the HTTP-date Retry-After was honoured (second resolution: at least ~1 s)
    assert stamps[5] - stamps[4] >= 0.9
    # Retry-After 0 and absent still went through the bucket and backoff: no busy loop
    assert stamps[2] - stamps[1] >= 1 / 20 * 0.9


@pytest.mark.parametrize("server", [({}, "cursor")], indirect=True)
def test_window_bounds_are_exact(server):
    src = _source(server.url)
    low, high = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
    got = _ids(src.extract(["invoice_id", "updated_at"], "updated_at", low, False, high, 100))
    assert got == list(range(11, 20))
    got = _ids(src.extract(["invoice_id", "updated_at"], "updated_at", low, True, high, 100))
    assert got == list(range(10, 20))


@pytest.mark.parametrize("server", [({n: "500" for n in range(1, 50)}, "cursor")], indirect=True)
def test_gives_up_after_max_retries_with_a_clear_error(server):
    src = _source(server.url, max_retries=3)
    with pytest.raises(SourceError, match="gave up .* after 4 attempts .*HTTP 500"):
        list(src.extract(["invoice_id"], "updated_at", T0, True, T0 + timedelta(days=1), 100))
    assert len(server.stamps) == 4


@pytest.mark.parametrize("server", [({}, "cursor")], indirect=True)
def test_a_non_transient_status_is_not_retried(server):
    src = HttpSource(server.url, "/nope", system="billing", table="invoices", rate_per_s=50)
    with pytest.raises(SourceError, match="HTTP 404 .*not retried"):
        list(src.extract(["invoice_id"], "updated_at", T0, True, T0 + timedelta(days=1), 100))
    assert len(server.stamps) == 1


def test_missing_token_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MESHLINE_TEST_TOKEN", raising=False)
    src = HttpSource("http://127.0.0.1:9", "/x", system="billing", table="invoices", token_env="MESHLINE_TEST_TOKEN")
    with pytest.raises(SourceError, match="MESHLINE_TEST_TOKEN"):
        src.columns()


CONTRACT = {
    "contract": "billing_invoices", "version": "1.0.0", "severity": "critical",
    "boundary": {"flow": "quote_to_cash", "source_system": "billing", "table": "invoices"},
    "idempotency_key": "invoice_id", "change_token": "updated_at", "owners": {"contract": "billing@meshline.example"},
    "columns": {"invoice_id": {"type": "integer", "required": True}, "amount": {"type": "number", "min": 0},
                "currency": {"type": "string", "pattern": "currency_code"},
                "updated_at": {"type": "timestamp", "required": True}},
}


@pytest.mark.parametrize("server", [(FAULTS, "cursor")], indirect=True)
def test_load_partition_from_an_http_source_conserves_and_reruns_cleanly(server, warehouse_url):
    contract = parse_contract(CONTRACT, "billing_invoices.yml")
    wh = Warehouse(warehouse_url)
    window = Window(T0, T0 + timedelta(days=1))
    r = load_partition(wh, _source(server.url), contract, partition_key="2026-03-01", window=window, run_id="r1")
    assert (r.rows_read, r.rows_loaded, r.rows_dead_lettered) == (300, 300, 0)
    r2 = load_partition(wh, _source(server.url), contract, partition_key="2026-03-01", window=window, run_id="r2")
    assert r2.rows_loaded == 0 and r2.rows_read == r2.rows_superseded
    with wh.session() as s:
        assert s.scalar("SELECT count(DISTINCT invoice_id) FROM raw.billing_invoices") == 300


def test_a_password_in_the_base_url_reaches_no_error_and_no_log(caplog):
    """A base URL with credentials, an API that never answers: the error names the boundary and the URL
    without its password, and no log line at any level carries it."""
    import logging
    import socket

    from assets.sources.http import HttpSource
    from expectations.reasons import SourceUnreachable

    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = HttpSource(f"http://svc:hunter2-secret@127.0.0.1:{port}", "/v1/invoices", system="billing",
                        table="invoices", max_retries=1, sleep=lambda s: None)
    with pytest.raises(SourceUnreachable) as exc:
        source._get({})
    assert "billing.invoices" in str(exc.value) and "svc:***@127.0.0.1" in str(exc.value)
    assert "hunter2" not in str(exc.value) and "hunter2" not in repr(source)
    assert "hunter2" not in caplog.text
