"""HTTP JSON API sources: cursor or page pagination, a token-bucket rate limit, and retries.

- 429: wait what `Retry-After` says (seconds or an HTTP date; 0 means now, absent means our own
  backoff), then ask for the same page again. The token bucket still applies, so even `Retry-After: 0`
  never turns into a busy loop.
- 5xx, timeouts, dropped connections: exponential backoff with full jitter, the same page again.
- any other 4xx: not transient; a `SourceError` at once.
A page's cursor (or number) moves on only after that page was read in full, so a page is never lost
and never read twice.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from assets.loading.redaction import without_secrets
from assets.sources.base import Malformed, Source, as_text, has_surrogates, outside, parse_token
from expectations.reasons import SourceError, SourceUnreachable

# httpx logs every request line with its URL at INFO: credentials in a base URL must not reach the logs.
logging.getLogger("httpx").setLevel(logging.WARNING)

TRANSIENT_STATUS = {429, 500, 502, 503, 504}
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


class TokenBucket:
    """`rate` requests per second on average, at most `burst` at once. Thread-safe; clock injectable."""

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until there is one. Returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1 - 1e-9:  # tolerance: a float refill must not leave 0.99999 forever
                    self._tokens = max(0.0, self._tokens - 1)
                    return waited
                need = (1 - self._tokens) / self.rate
            self._sleep(need)
            waited += need


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: ASCII delta-seconds or an HTTP date. None if absent or
    unreadable (the caller then uses its own backoff); never negative, never an error."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):
        return float(min(int(value[:12]), 10**11))  # beyond any wait the caller accepts
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base · 2^attempt))."""
    return (rng or random).uniform(0, min(cap, base * (2 ** attempt)))


class HttpSource(Source):
    """A JSON API endpoint returning `{"<records_key>": [...], "<next_key>": cursor-or-null}`.

    The window goes out as query parameters (`since_param` inclusive or not per `low_inclusive`,
    `until_param` exclusive); pagination is by cursor (`cursor_param`, next cursor in `next_key`) or by
    page number (`page_param`, stop at an empty page). A bearer token is read from the environment
    variable named by `token_env` (never stored in configuration).
    """

    def __init__(self, base_url: str, path: str, *, system: str, table: str, pagination: str = "cursor",
                 page_size: int = 500, rate_per_s: float = 10.0, burst: int = 1, max_retries: int = 6,
                 timeout_s: float = 10.0, records_key: str = "data", next_key: str = "next_cursor",
                 cursor_param: str = "cursor", page_param: str = "page", since_param: str = "updated_since",
                 until_param: str = "updated_before", limit_param: str = "limit", token_env: str | None = None,
                 backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0, max_pages: int = 100_000,
                 max_response_mb: float = 64, request_deadline_s: float = 120, max_retry_after_s: float = 600,
                 sleep: Callable[[float], None] = time.sleep, client: Any = None):
        if pagination not in ("cursor", "page"):
            raise ValueError("pagination must be 'cursor' or 'page'")
        self.base_url, self.path, self.system, self.table = base_url.rstrip("/"), path, system, table
        self.pagination, self.page_size, self.max_retries, self.timeout_s = pagination, page_size, max_retries, timeout_s
        self.records_key, self.next_key, self.cursor_param, self.page_param = records_key, next_key, cursor_param, page_param
        self.since_param, self.until_param, self.limit_param = since_param, until_param, limit_param
        self.token_env, self.backoff_base_s, self.backoff_cap_s = token_env, backoff_base_s, backoff_cap_s
        self.max_pages, self.max_response_bytes = max_pages, int(max_response_mb * (1 << 20))
        self.request_deadline_s, self.max_retry_after_s = request_deadline_s, max_retry_after_s
        self.bucket = TokenBucket(rate_per_s, burst, sleep=sleep)
        self._malformed: list[Malformed] = []
        self._seen: set[str] = set()
        self._escapes = False  # the last page's text holds an escaped UTF-16 surrogate
        self._sleep = sleep
        self._client = client
        self.stats = {"requests": 0, "retries": 0, "throttled": 0, "pages": 0}

    def __repr__(self) -> str:
        return f"HttpSource({self.system}.{self.table}, {without_secrets(self.base_url + self.path)})"

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            headers = {"Accept": "application/json"}
            if self.token_env:
                token = os.environ.get(self.token_env)
                if not token:
                    raise SourceError(f"{self.system}: environment variable {self.token_env} (API token) is not set")
                headers["Authorization"] = f"Bearer {token}"
            self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout_s)
        return self._client

    def _where(self, params: dict[str, Any]) -> str:
        """The request, named in errors and dead letters (the window, the cursor or page; never secrets)."""
        shown = {k: v for k, v in params.items() if k not in (self.since_param, self.until_param, self.limit_param)}
        return f"{self.path}?{'&'.join(f'{k}={v}' for k, v in shown.items())}".rstrip("?")

    def _body(self, params: dict[str, Any]) -> tuple[int, dict[str, str], bytes | None]:
        """(status, headers, body of a 200) of one request, streamed: a body over `max_response_mb` once
        decompressed, or one still arriving after `request_deadline_s`, is cut off."""
        import httpx

        limit = time.monotonic() + self.request_deadline_s
        if self.deadline is not None:
            limit = min(limit, self.deadline)
        with self._http().stream("GET", self.path, params=params) as resp:
            if resp.status_code != 200:
                return resp.status_code, dict(resp.headers), None
            data = bytearray()
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) > self.max_response_bytes:
                    raise SourceError(f"{self.system}.{self.table}: the answer to {self._where(params)} is larger than "
                                      f"{self.max_response_bytes >> 20} MiB (max_response_mb); not read")
                if time.monotonic() > limit:
                    raise httpx.ReadTimeout("the body was still arriving at the request's deadline")
            return 200, dict(resp.headers), bytes(data)

    def _get(self, params: dict[str, Any]) -> dict[str, Any]:
        """One page, with rate limiting and retries of transient failures."""
        import httpx

        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise SourceUnreachable(f"{self.system}.{self.table}: the load's deadline passed while reading "
                                        f"{self._where(params)}")
            self.bucket.acquire()
            self.stats["requests"] += 1
            try:
                status, headers, raw = self._body(params)
            except (httpx.TimeoutException, httpx.TransportError, httpx.DecodingError) as exc:  # slow, refused, dropped, broken gzip
                last = f"{type(exc).__name__}"
                self.stats["retries"] += 1
                self._sleep(backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s))
                continue
            if status == 200:
                assert raw is not None
                self._escapes = _ESCAPED_SURROGATE.search(raw) is not None
                try:
                    body = json.loads(raw)
                except (ValueError, RecursionError):  # not JSON (a proxy's error page), or nested past reading
                    last = "a body that is not JSON"
                    self.stats["retries"] += 1
                    self._sleep(backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s))
                    continue
                if not isinstance(body, dict):
                    raise SourceError(f"{self.system}.{self.table}: the answer to {self._where(params)} is a JSON "
                                      f"{type(body).__name__}, not an object with {self.records_key!r}")
                return body
            if status not in TRANSIENT_STATUS:
                raise SourceError(f"{self.system}.{self.table}: HTTP {status} from {self._where(params)} "
                                  "(not retried: not a transient status)")
            last = f"HTTP {status}"
            self.stats["retries"] += 1
            retry_after = {k.lower(): v for k, v in headers.items()}.get("retry-after")
            wait = parse_retry_after(retry_after) if status in (429, 503) else None
            if status == 429:
                self.stats["throttled"] += 1
            if wait is not None and wait > self.max_retry_after_s:
                raise SourceUnreachable(f"{self.system}.{self.table}: {self._where(params)} asks to wait {wait:,.0f} s"
                                        f" (Retry-After), more than max_retry_after_s ({self.max_retry_after_s:g} s);"
                                        " the next retry of the run tries again")
            self._sleep(wait if wait is not None else backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s))
        raise SourceUnreachable(f"{self.system}.{self.table}: gave up on {without_secrets(self.base_url + self.path)} after "
                                f"{self.max_retries + 1} attempts (last: {last})")

    def _pages(self, params: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
        """(request, records) of each page. A cursor met twice, a page the same as the one before or more
        than `max_pages` pages end the read with a `SourceError`: a load never pages forever."""
        cursor, page = None, 1
        cursors: set[str] = set()
        previous = None
        for n in range(self.max_pages + 1):
            if n == self.max_pages:
                raise SourceError(f"{self.system}.{self.table}: more than {self.max_pages:,} pages (max_pages); "
                                  "the API's pagination does not end")
            q = dict(params)
            if self.pagination == "cursor" and cursor is not None:
                q[self.cursor_param] = cursor
            if self.pagination == "page":
                q[self.page_param] = page
            body = self._get(q)
            records = body.get(self.records_key)
            if not isinstance(records, list):
                raise SourceError(f"{self.system}.{self.table}: the answer to {self._where(q)} has no list under "
                                  f"{self.records_key!r}")
            digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode(
                "utf-8", "surrogatepass")).digest() if records else None
            if digest is not None and digest == previous:
                raise SourceError(f"{self.system}.{self.table}: {self._where(q)} answered the same records as the "
                                  "page before; the API's pagination does not move on")
            previous = digest
            self.stats["pages"] += 1
            yield self._where(q), records
            if self.pagination == "cursor":
                nxt = body.get(self.next_key)
                if not nxt:
                    return
                cursor = str(nxt)
                if cursor in cursors:
                    raise SourceError(f"{self.system}.{self.table}: the API returned cursor {cursor[:40]!r} a second "
                                      "time; its pagination loops")
                cursors.add(cursor)
            else:
                if not records:
                    return
                page += 1

    def columns(self) -> list[str] | None:
        for _, records in self._pages({self.limit_param: 1}):
            first = next((r for r in records if isinstance(r, dict)), None)
            return sorted(first) if first else None  # an empty source says nothing about its columns
        return None

    def malformed(self) -> list[Malformed]:
        return list(self._malformed)

    def columns_seen(self) -> set[str] | None:
        return set(self._seen)

    def extract(self, columns: Sequence[str], token: str, low: datetime, low_inclusive: bool,
                high: datetime, chunk_rows: int) -> Iterator[pa.Table]:
        params = {self.since_param: low.isoformat(), self.until_param: high.isoformat(),
                  self.limit_param: self.page_size}
        schema = pa.schema([(c, pa.string()) for c in columns])
        self._malformed, self._seen = [], set()
        buf: list[dict[str, Any]] = []
        for request, records in self._pages(params):
            for i, rec in enumerate(records):
                # The API's window is advisory: keep exactly low <(=) token < high here.
                if isinstance(rec, dict) and outside(parse_token(rec.get(token)), low, low_inclusive, high):
                    continue
                why = ("a record that is not a JSON object" if not isinstance(rec, dict)
                       else "a string that is not valid Unicode (a lone surrogate)"
                       if self._escapes and has_surrogates(rec) else None)
                if why is not None:  # dead-lettered by the loader, located by request and position
                    raw = json.dumps(rec, default=str).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                    self._malformed.append(Malformed(request, i + 1, why, raw))
                    continue
                self._seen.update(rec)
                buf.append({c: as_text(rec.get(c)) for c in columns})
                if len(buf) >= chunk_rows:
                    yield pa.Table.from_pylist(buf, schema=schema)
                    buf = []
        if buf:
            yield pa.Table.from_pylist(buf, schema=schema)
