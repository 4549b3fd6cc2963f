"""Redaction: what a dead letter, a log line or an alert may carry instead of a PII value.

A PII value becomes `redacted:<16 hex>`: a keyed HMAC-SHA256, so equal values stay joinable (the same
address in two dead letters gives the same token) while the value itself cannot be read back or
guessed by hashing a dictionary without the key. The key comes from `MESHLINE_REDACTION_KEY`; the
built-in development key is for the embedded default only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

DEV_KEY = "meshline-development-redaction-key"
PREFIX = "redacted:"


def redaction_key() -> bytes:
    return os.environ.get("MESHLINE_REDACTION_KEY", DEV_KEY).encode()


def redact_value(value: Any, key: bytes | None = None) -> str | None:
    if value is None:
        return None
    digest = hmac.new(key or redaction_key(), str(value).encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:16]


def json_safe(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def redact_row(row: Mapping[str, Any], pii_columns: Iterable[str], key: bytes | None = None) -> dict[str, Any]:
    """A copy of the row with every PII column redacted and values made JSON-safe."""
    pii = set(pii_columns)
    k = key or redaction_key()
    return {c: (redact_value(v, k) if c in pii else json_safe(v)) for c, v in row.items()}


def redacted_json(row: Mapping[str, Any], pii_columns: Iterable[str], key: bytes | None = None) -> str:
    return json.dumps(redact_row(row, pii_columns, key), sort_keys=True, default=str)
