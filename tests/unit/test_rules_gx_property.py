"""The loader's Arrow rules and the compiled GX suite agree row by row on a fuzzed corpus of hostile
values (Unicode spaces, a final newline, NUL, NaN and infinities, out-of-range years, overflowing
integers), for every shipped contract and for a contract with a pattern on every kind of text.

The suite runs on the typed table, where a value that failed to cast is null: so a `type_mismatch` on a
column stands, on the GX side, for a not-null failure of that column when the column is required."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from expectations import load_contract
from expectations.contract import parse_contract
from expectations.registry import load_contracts
from expectations.rules import evaluate
from expectations.validation import validate_frame

HOSTILE_TEXT = ["ada@example.com", "a\u00a0b@example.com", "ada@example.com\n", "ada@exa\u2003mple.com",
                "a\u000bb@example.com", "a\x00b@example.com", "\u00e9l\u00e8ve@\u00e9cole.fr", "x@y.zz\u200b",
                "rep_1", "rep_1\n", "rep_\u0661", "USD", "USD\n", "usd", "EUR\u00a0", "", " ", "\t", "\U0001f600@x.io",
                "open", "won", "lost", "open\n"]
HOSTILE_NUMBER = ["1", "0", "-1", "1e309", "-1e309", "NaN", "nan", "inf", "-Infinity", "1.5", " 7 ", "1,5", "",
                  "99999999999999999999", "1e-320", "0x10", "\u0661"]
HOSTILE_INTEGER = ["1", "-0", "42", "9223372036854775807", "9223372036854775808", "-9223372036854775809", "1.0",
                   "1e3", " 7 ", "NaN", "", "\u0661", "0x10"]
HOSTILE_TIME = ["2026-01-01T00:00:00", " 2026-01-01T00:00:00 ", "2026-01-01 10:00:00", "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00+05:30", "9999-12-31T23:59:59", "294000-01-01T00:00:00", "0000-01-01T00:00:00",
                "2026-02-30T00:00:00", "2026-01-01T24:00:00", "", "NaN", "2026-01-01\n", "1e300"]
HOSTILE_DATE = ["2026-01-01", " 2026-01-01 ", "9999-12-31", "294000-01-01", "2026-02-30", "", "20260101"]
HOSTILE_BOOL = ["true", "false", "True", "1", "0", "yes", "", "NaN"]
BY_TYPE = {"string": HOSTILE_TEXT, "number": HOSTILE_NUMBER, "integer": HOSTILE_INTEGER, "timestamp": HOSTILE_TIME,
           "date": HOSTILE_DATE, "boolean": HOSTILE_BOOL}
NOT_NULL = ("null_key", "missing_required")


def _corpus(contract, rows: int, seed: int) -> pa.Table:
    """Fuzzed rows as a source hands them over: text, sometimes null."""
    rng = random.Random(seed)
    data = {}
    for col in contract.columns:
        pool = list(BY_TYPE[col.type]) + [str(v) for v in col.allowed_values or ()]
        data[col.name] = [None if rng.random() < 0.05 else rng.choice(pool) for _ in range(rows)]
    return pa.table({k: pa.array(v, pa.string()) for k, v in data.items()})


def _agree(contract, table: pa.Table) -> int:
    v = evaluate(table, contract)
    gx = validate_frame(v.table.to_pandas(), contract, row_level=True)
    reasons = iter(v.reasons.to_pylist())
    disagreements = []
    for i, ok in enumerate(v.valid.to_pylist()):
        engine = set() if ok else set(next(reasons).split(";"))
        mismatched = {label.split(":", 1)[1] for label in engine if label.startswith("type_mismatch:")}
        rules = {label for label in engine if not label.startswith("type_mismatch:")}
        suite = set(gx.row_reasons.get(i, []))
        # A cast failure is a null on the suite's side: that column's not-null rule, if it has one.
        suite_rules = {lbl for lbl in suite if not (lbl.split(":")[0] in NOT_NULL and lbl.split(":")[1] in mismatched)}
        if rules != suite_rules:
            disagreements.append((i, {c: table.column(c)[i].as_py() for c in table.column_names}, rules, suite_rules))
    assert not disagreements, disagreements[:5]
    return len(v.reasons)


@pytest.mark.parametrize("name", sorted(load_contracts()))
def test_rules_and_suite_agree_on_a_fuzzed_corpus(name):
    contract = load_contract(name)
    invalid = _agree(contract, _corpus(contract, 1500, seed=hash(name) % 1000))
    assert invalid > 0  # the corpus does reach the rules


def test_patterns_ranges_and_value_sets_agree_on_hostile_text():
    """Every rule kind at once, on the values where RE2 and Python's re, or Arrow and pandas, could read
    the same text differently."""
    contract = parse_contract({
        "contract": "fuzz", "version": "1.0.0", "boundary": {"flow": "f", "source_system": "s", "table": "t"}, "severity": "standard",
        "idempotency_key": "id", "change_token": "ts", "owners": {"contract": "a@b.c"},
        "columns": {
            "id": {"type": "integer", "required": True},
            "ts": {"type": "timestamp", "required": True},
            "email": {"type": "string", "pattern": "email"},
            "code": {"type": "string", "pattern": "currency_code", "required": True},
            "owner": {"type": "string", "pattern": r"^rep_\d+$"},
            "word": {"type": "string", "pattern": r"^\w+\s?$"},
            "stage": {"type": "string", "allowed_values": ["open", "won", "lost"]},
            "amount": {"type": "number", "min": 0, "max": 1e6, "required": True},
            "seats": {"type": "integer", "min": 1, "max": 10_000},
            "on": {"type": "date"},
            "flag": {"type": "boolean"},
        }})
    invalid = _agree(contract, _corpus(contract, 4000, seed=7))
    assert invalid > 1000


def test_unusable_values_are_type_mismatches_not_loaded_rows():
    """NaN, infinities, NUL and years beyond 9999 cast, but no warehouse or reader can hold them: each is a
    `type_mismatch` on its column, so a required ranged number never passes as NaN."""
    contract = parse_contract({
        "contract": "u", "version": "1.0.0", "boundary": {"flow": "f", "source_system": "s", "table": "t"}, "severity": "standard",
        "idempotency_key": "id", "change_token": "ts", "owners": {"contract": "a@b.c"},
        "columns": {"id": {"type": "integer", "required": True}, "ts": {"type": "timestamp", "required": True},
                    "amount": {"type": "number", "min": 0, "max": 10, "required": True},
                    "note": {"type": "string"}}})
    rows = [("1", "2026-01-01T00:00:00", "NaN", "ok"), ("2", "2026-01-01T00:00:00", "inf", "ok"),
            ("3", "2026-01-01T00:00:00", "5", "a\x00b"), ("4", "294000-01-01T00:00:00", "5", "ok"),
            ("5", " 2026-01-01T00:00:00 ", "5", "ok")]
    table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(("id", "ts", "amount", "note"))})
    v = evaluate(table, contract)
    assert v.valid.to_pylist() == [False, False, False, False, True]
    assert v.reasons.to_pylist() == ["type_mismatch:amount", "type_mismatch:amount", "type_mismatch:note",
                                     "type_mismatch:ts"]
    typed = pa.Table.from_pydict({"ts": pa.array([(294000 - 1970) * 365 * 86400 * 10**6]).cast(pa.timestamp("us")),
                                  "id": [9], "amount": [1.0], "note": ["x"]})  # as a DuckDB source hands it over
    assert evaluate(typed, contract).reasons.to_pylist() == ["type_mismatch:ts"]
