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
import threading
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
    deadline_s: float = 20.0  # all attempts of one page: the tick that pages must end within Dagster's sensor timeout
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
        deadline = time.monotonic() + self.deadline_s
        last = ""
        for attempt in range(self.max_retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotifyError(f"the {self.kind} webhook did not take the page within its {self.deadline_s:g} s "
                                  f"deadline (last: {last or 'no answer'})")
            status = _post(self.url, body, min(self.timeout_s, left), left)
            if isinstance(status, int):
                if status < 300:
                    return
                if status not in TRANSIENT_STATUS:
                    raise NotifyError(f"the {self.kind} webhook answered HTTP {status} (not retried)")
                last = f"HTTP {status}"
            else:
                last = status
            if attempt < self.max_retries:
                self.sleep(min(backoff_delay(attempt, self.backoff_base_s), max(0.0, deadline - time.monotonic())))
        raise NotifyError(f"the {self.kind} webhook failed {self.max_retries + 1} times (last: {last})")


def _post(url: str, body: dict[str, Any], timeout_s: float, within_s: float) -> int | str:
    """The status of one POST, or why there is none. Only the status is read (a broken or trickling body
    after it changes nothing: the page was taken), and the whole exchange ends within `within_s`: it runs
    in a daemon thread that is abandoned, its connection closed, when the time is up."""
    import httpx

    out: list[int | str] = []
    client = httpx.Client(timeout=timeout_s)

    def run() -> None:
        try:
            with client.stream("POST", url, json=body) as resp:
                out.append(resp.status_code)
        except Exception as exc:  # any transport failure is a failed attempt, named by its type
            out.append(type(exc).__name__)

    worker = threading.Thread(target=run, name="meshline-page", daemon=True)
    worker.start()
    worker.join(within_s)
    if worker.is_alive():
        client.close()
        return "no answer within the deadline"
    client.close()
    return out[0] if out else "no answer"
