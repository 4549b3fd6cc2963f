"""The sandbox's billing system, served as an HTTP JSON API on 127.0.0.1.

    GET /v1/<table>?updated_since=ISO&updated_before=ISO&limit=N&cursor=C
    → {"data": [{...}, ...], "next_cursor": "C2" | null}

Each table of the billing DuckDB file is an endpoint (`/v1/billing_invoices`, `/v1/billing_subscriptions`),
a change log ordered by `row_id`; the cursor is the last `row_id` served (keyset pagination, so a page
is stable while the log grows). `updated_since` is inclusive, `updated_before` exclusive; timestamps
are ISO-8601 strings.

`meshline.yaml`'s `base_url: sandbox` starts one server per billing file in the process that reads it
(a Dagster run worker, the demo, a test) on a free port; it lives as long as that process. Faults the
synthetic runs inject: `throttle_every=N` answers every N-th request 429 with `Retry-After: 0`.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

_PATH = re.compile(r"^/v1/([a-z_][a-z0-9_]*)$")
MAX_LIMIT = 5000


def _json_value(v: Any) -> Any:
    if isinstance(v, datetime | date):
        return v.isoformat()
    return v


class BillingApi:
    def __init__(self, db_path: Path, *, host: str = "127.0.0.1", port: int = 0, throttle_every: int = 0):
        self.db_path = Path(db_path)
        self.host, self.port, self.throttle_every = host, port, throttle_every
        self.requests = 0
        self.throttled = 0  # 429s answered
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the billing API is not running")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> str:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: request lines would only clutter test and demo output
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                with api._lock:
                    api.requests += 1
                    n = api.requests
                if api.throttle_every and n % api.throttle_every == 0:
                    with api._lock:
                        api.throttled += 1
                    return self._send(429, {"error": "rate limited"}, {"Retry-After": "0"})
                url = urlparse(self.path)
                m = _PATH.match(url.path)
                if not m:
                    return self._send(404, {"error": f"no endpoint {url.path}"})
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                try:
                    body = api.page(m.group(1), q)
                except LookupError as exc:
                    return self._send(404, {"error": str(exc)})
                except ValueError as exc:
                    return self._send(400, {"error": str(exc)})
                self._send(200, body)

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, Any] | None = None) -> None:
                data = json.dumps(body, default=_json_value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=f"billing-api-{self.db_path.name}",
                         daemon=True).start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> BillingApi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def page(self, table: str, q: dict[str, str]) -> dict[str, Any]:
        import duckdb

        limit = int(q.get("limit", 500))
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}")
        where: list[str] = ["row_id > ?"]
        params: list[object] = [int(q.get("cursor") or 0)]
        if q.get("updated_since"):
            where.append("updated_at >= ?")
            params.append(datetime.fromisoformat(q["updated_since"]))
        if q.get("updated_before"):
            where.append("updated_at < ?")
            params.append(datetime.fromisoformat(q["updated_before"]))
        with duckdb.connect(str(self.db_path), read_only=True) as con:
            tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            if table not in tables:
                raise LookupError(f"billing has no {table}")
            cur = con.execute(f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY row_id LIMIT ?",
                              [*params, limit + 1])
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
        return {"data": rows, "next_cursor": str(rows[-1]["row_id"]) if more else None}


_RUNNING: dict[str, BillingApi] = {}
_RUNNING_LOCK = threading.Lock()


def serve(db_path: Path) -> str:
    """The base URL of this process's billing API over `db_path`, started on first use."""
    key = str(Path(db_path).resolve())
    with _RUNNING_LOCK:
        api = _RUNNING.get(key)
        if api is None:
            if not Path(key).exists():
                raise FileNotFoundError(f"no simulated billing system at {key}: run `meshline demo` first")
            api = _RUNNING[key] = BillingApi(Path(key))
            api.start()
        return api.base_url
