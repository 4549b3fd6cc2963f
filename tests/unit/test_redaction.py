import json
from datetime import datetime

from assets.loading.redaction import PREFIX, redact_row, redact_value


def test_redacted_value_hides_the_value_and_is_stable():
    a = redact_value("ada.lovelace@example.com")
    assert a.startswith(PREFIX) and "ada" not in a and "example" not in a
    assert a == redact_value("ada.lovelace@example.com")
    assert a != redact_value("grace.hopper@example.com")
    assert redact_value(None) is None


def test_redaction_depends_on_the_key():
    a = redact_value("x@example.com")
    assert redact_value("x@example.com", b"another-key") != a


def test_only_pii_columns_are_redacted_and_values_become_json_safe():
    row = {"lead_id": 7, "email": "a@b.example", "company": "acme", "mql_at": datetime(2026, 1, 1, 10)}
    out = redact_row(row, ["email"])
    assert out["lead_id"] == 7 and out["company"] == "acme" and out["mql_at"] == "2026-01-01T10:00:00"
    assert out["email"].startswith(PREFIX)
    assert "a@b.example" not in json.dumps(out)


def test_column_wise_dead_letters_keep_the_row_by_row_payload_locator_and_id():
    """The loader builds dead letters column by column for speed; their text, and so their ids (which make
    a re-run find the dead letters an earlier version wrote), must equal the row-by-row form."""
    import hashlib
    import hmac

    import pyarrow as pa

    from assets.loading.loader import _dead_letters
    from expectations import load_contract
    from expectations.rules import evaluate

    contract = load_contract("marketing_leads")
    raw = pa.table({
        "row_id": ["10", "11", "11", "12"], "lead_id": ["1", "2", "2", None],
        "email": ["a@b.example", "not-an-email", "not-an-email", "c@d.example"],
        "first_name": ["Ada", None, None, "Cy"], "last_name": ["L", "M", "M", None],
        "company": ["acme", None, None, "x"], "campaign": ["web", "web", "web", "ads"],
        "mql_at": ["2026-01-01T10:00:00", "2026-01-01T11:00:00", "2026-01-01T11:00:00", "2026-01-01T12:00:00"],
        "updated_at": ["2026-01-01T10:00:00", "bad", "bad", "2026-01-01T12:00:00"]})
    v = evaluate(raw, contract)
    invalid = pa.compute.invert(v.valid)
    key = b"k"
    at = datetime(2026, 1, 2)
    got = _dead_letters(raw.filter(invalid), v.table.filter(invalid), v.reasons, contract, flow="f", asset="a",
                        partition_key="p", run_id="r", seen_at=at, key=key).to_pylist()
    expected = {}
    for row, typed, why in zip(raw.filter(invalid).to_pylist(), v.table.filter(invalid).to_pylist(),
                               v.reasons.to_pylist(), strict=True):
        payload = json.dumps(redact_row(row, contract.pii_columns, key), sort_keys=True, default=str)
        k, tok = typed[contract.idempotency_key], typed[contract.change_token]
        loc = row.get(contract.locator)
        locator = json.dumps({"system": contract.source_system, "table": contract.source_table,
                              "key": None if k is None else str(k),
                              "change_token": None if tok is None else tok.isoformat(),
                              contract.locator: None if loc is None else str(loc)}, sort_keys=True)
        dl_id = hmac.new(key, f"a|{locator}|{why}|{payload}".encode(), hashlib.sha256).hexdigest()[:32]
        expected.setdefault(dl_id, (payload, locator, why))
    assert len(got) == len(expected) == 2  # rows 11 and 12; row 11 twice is one dead letter
    for dl in got:
        assert (dl["payload"], dl["locator"], dl["reasons"]) == expected[dl["dead_letter_id"]]
        assert "a@b.example" not in dl["payload"] and "Cy" not in dl["payload"]
        assert dl["first_seen_at"] == at and dl["status"] == "open" and dl["partition_key"] == "p"


def test_urls_lose_their_secrets_before_they_reach_an_error_or_a_log():
    from assets.loading.redaction import without_secrets

    assert without_secrets("https://svc:s3cr3t@billing.example/v1?since=1&api_key=abc&sig=zz") == (
        "https://svc:***@billing.example/v1?since=1&api_key=***&sig=***")
    assert without_secrets("postgresql+psycopg2://u:pw@db:5432/wh") == "postgresql+psycopg2://u:***@db:5432/wh"
    assert without_secrets("duckdb:////tmp/w.duckdb") == "duckdb:////tmp/w.duckdb"
    assert without_secrets("http://[::1") == "<a URL that could not be read>"
