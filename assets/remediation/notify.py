"""Notifiers: where pages go. With no webhook URL (MESHLINE_ALERT_WEBHOOK_URL, a secret) pages are
written to the log (`meshline.alerts` logger); with one, they are posted as Slack's `{"text": ...}` or
as the whole page in JSON (meshline.yaml's `alerts.format`).

Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential backoff and
jitter; any other answer is not. A page never carries raw PII: it is built from counts, reason codes,
owners and HMAC-redacted sample keys only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assets.sources.http import TRANSIENT_STATUS, backoff_delay

log = logging.getLogger("meshline.alerts")


class NotifyError(Exception):
    """A page could not be delivered."""


@dataclass
class Notifier:
    kind: str = "log"  # log | slack | json
    url: str | None = None
    max_retries: int = 3
    backoff_base_s: float = 0.5
    timeout_s: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    @property
    def name(self) -> str:
        return self.kind

    def send(self, page: dict[str, Any]) -> None:
        if self.kind == "log":
            log.warning("PAGE %s", json.dumps(page, sort_keys=True, default=str))
            return
        body = {"text": page["text"]} if self.kind == "slack" else page
        if self.url is None:
            raise NotifyError(f"a {self.kind} notifier needs a webhook URL")
        import httpx

        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                resp = httpx.post(self.url, json=body, timeout=self.timeout_s)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = type(exc).__name__
            else:
                if resp.status_code < 300:
                    return
                if resp.status_code not in TRANSIENT_STATUS:
                    raise NotifyError(f"the {self.kind} webhook answered HTTP {resp.status_code} (not retried)")
                last = f"HTTP {resp.status_code}"
            if attempt < self.max_retries:
                self.sleep(backoff_delay(attempt, self.backoff_base_s))
        raise NotifyError(f"the {self.kind} webhook failed {self.max_retries + 1} times (last: {last})")
