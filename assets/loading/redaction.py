"""Redaction: what a dead letter, a log line or an alert may carry instead of a PII value.

A PII value becomes `redacted:<16 hex>`: a keyed HMAC-SHA256, so equal values stay joinable (the same
address in two dead letters gives the same token) while the value itself cannot be read back or
guessed by hashing a dictionary without the key. The key is the warehouse's (`Warehouse.redaction_key`,
from MESHLINE_REDACTION_KEY); the built-in development key is for the embedded default only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

DEV_KEY = "meshline-development-redaction-key"
PREFIX = "redacted:"


def redact_value(value: Any, key: bytes = DEV_KEY.encode()) -> str | None:
    if value is None:
        return None
    digest = hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:16]


def json_safe(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def redact_row(row: Mapping[str, Any], pii_columns: Iterable[str], key: bytes = DEV_KEY.encode()) -> dict[str, Any]:
    """A copy of the row with every PII column redacted and values made JSON-safe."""
    pii = set(pii_columns)
    return {c: (redact_value(v, key) if c in pii else json_safe(v)) for c, v in row.items()}


_SECRET_PARAM = ("key", "token", "secret", "password", "signature", "sig")


def without_secrets(url: str) -> str:
    """A URL fit for an error, a log line or run metadata: the password in its user part and the values
    of query parameters that name a key, token, secret or signature are masked."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username}:***@{netloc.rsplit('@', 1)[1]}"
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        masked = [(k, "***" if any(s in k.lower() for s in _SECRET_PARAM) else v) for k, v in pairs]
        if netloc == parts.netloc and masked == pairs:
            return url  # nothing to hide: as given (urlunsplit would rewrite duckdb:////path)
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(masked, safe="*")))
    except ValueError:  # not a URL one can take apart: say nothing of it
        return "<a URL that could not be read>"

