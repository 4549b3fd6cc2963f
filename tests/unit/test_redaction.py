import json
from datetime import datetime

from assets.loading.redaction import PREFIX, redact_row, redact_value, redacted_json


def test_redacted_value_hides_the_value_and_is_stable():
    a = redact_value("ada.lovelace@example.com")
    assert a.startswith(PREFIX) and "ada" not in a and "example" not in a
    assert a == redact_value("ada.lovelace@example.com")
    assert a != redact_value("grace.hopper@example.com")
    assert redact_value(None) is None


def test_redaction_depends_on_the_key(monkeypatch):
    a = redact_value("x@example.com")
    monkeypatch.setenv("MESHLINE_REDACTION_KEY", "another-key")
    assert redact_value("x@example.com") != a


def test_only_pii_columns_are_redacted_and_values_become_json_safe():
    row = {"lead_id": 7, "email": "a@b.example", "company": "acme", "mql_at": datetime(2026, 1, 1, 10)}
    out = redact_row(row, ["email"])
    assert out["lead_id"] == 7 and out["company"] == "acme" and out["mql_at"] == "2026-01-01T10:00:00"
    assert out["email"].startswith(PREFIX)
    text = redacted_json(row, ["email"])
    assert "a@b.example" not in text and json.loads(text)["lead_id"] == 7
