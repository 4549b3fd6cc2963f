"""Contract parsing (strict), compiling to GX suites, and the row engine's verdicts (reason codes)."""

import pyarrow as pa
import pytest
import yaml

from expectations import ContractError, load_contract, load_contracts
from expectations.contract import parse_contract
from expectations.rules import evaluate

CONTRACTS = sorted(load_contracts())


def _raw(name):
    return yaml.safe_load(load_contract(name).path.read_text())


def _vectors(contract):
    rows = list(contract.test_vectors.get("pass", []))
    expected = [[] for _ in rows]
    for vec in contract.test_vectors.get("fail", []):
        rows.append(vec["row"])
        expected.append(sorted(vec["reasons"]))
    table = pa.Table.from_pylist([{c: r.get(c) for c in contract.column_names} for r in rows])
    return table, expected


def test_both_lead_handoff_contracts_load():
    assert {"marketing_leads", "crm_leads"} <= set(CONTRACTS)
    m = load_contract("marketing_leads")
    assert m.idempotency_key == "lead_id" and m.change_token == "updated_at"
    assert set(m.pii_columns) == {"email", "first_name", "last_name"}
    assert load_contract("crm_leads").critical


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["columns"]["email"].update(patern="email"), "columns.email.patern: unknown key"),
        (lambda d: d.update(severty="critical"), "severty: unknown key"),
        (lambda d: d["columns"]["lead_id"].update(required="yes"), "columns.lead_id.required: expected a boolean"),
        (lambda d: d.update(idempotency_key="leadid"), "idempotency_key: names column 'leadid'"),
        (lambda d: d["columns"]["email"].update(type="text"), "columns.email.type: expected one of"),
        (lambda d: d["columns"]["mql_at"].update(min=0), "a range applies to integer and number"),
        (lambda d: d.pop("owners"), "owners: required key is missing"),
        (lambda d: d.update(version="1.0"), "expected MAJOR.MINOR.PATCH"),
        (lambda d: d["columns"]["email"].update(pattern="(unclosed"), "not a valid regular expression"),
        (lambda d: d["columns"]["email"].update(pattern="^(?!spam).+@x$"), "columns.email.pattern: uses what"),
        (lambda d: d["columns"]["email"].update(pattern=r"^(a)\1@x$"), "columns.email.pattern: uses what"),
        (lambda d: d["columns"]["company"].update(allowed_values=["acme", 7]),
         r"columns.company.allowed_values\[1\]: 7 is not of the column's type, string"),
        (lambda d: d["columns"]["lead_id"].update(allowed_values=[1, True]),
         r"columns.lead_id.allowed_values\[1\]: True is not of the column's type, integer"),
    ],
)
def test_contract_typos_and_wrong_types_fail_with_key_and_reason(mutate, message):
    data = _raw("marketing_leads")
    mutate(data)
    with pytest.raises(ContractError, match=message.replace("(", r"\(")) as exc:
        parse_contract(data, "marketing_leads.yml")
    assert str(exc.value).startswith("marketing_leads.yml: ")


@pytest.mark.parametrize("name", CONTRACTS)
def test_compiled_suite_has_an_expectation_per_rule_with_reason_codes(name):
    from expectations.compiler import compile_suite, suite_name

    contract = load_contract(name)
    suite = compile_suite(contract)
    assert suite.name == suite_name(contract) == f"{name}__v{contract.version.replace('.', '_')}"
    by_type = {}
    for exp in suite.expectations:
        by_type.setdefault(exp.expectation_type, set()).add(exp.column)
        assert exp.meta["reason_code"] and exp.meta["column"] == exp.column
    assert by_type["expect_column_to_exist"] == set(contract.column_names)
    required = {c.name for c in contract.columns if c.required or c.name == contract.idempotency_key}
    assert by_type["expect_column_values_to_not_be_null"] == required
    assert by_type.get("expect_column_values_to_match_regex", set()) == {c.name for c in contract.columns if c.pattern}
    assert by_type.get("expect_column_values_to_be_in_set", set()) == {
        c.name for c in contract.columns if c.allowed_values}


@pytest.mark.parametrize("name", CONTRACTS)
def test_compiled_suites_judge_row_by_row(name):
    """A backfill validates a range of partitions as one batch and takes its pass for each partition
    (assets.flows.boundary): sound only while no expectation judges an aggregate of rows."""
    from expectations.compiler import ROW_WISE, compile_suite

    kinds = {type(exp).__name__ for exp in compile_suite(load_contract(name)).expectations}
    assert kinds and kinds <= ROW_WISE, kinds - ROW_WISE


@pytest.mark.parametrize("name", CONTRACTS)
def test_test_vectors_get_exactly_their_reason_codes(name):
    contract = load_contract(name)
    table, expected = _vectors(contract)
    assert any(expected) and not all(expected), "each contract has passing and failing vectors"
    v = evaluate(table, contract)
    got = []
    reasons = iter(v.reasons.to_pylist())
    for ok in v.valid.to_pylist():
        got.append([] if ok else sorted(next(reasons).split(";")))
    assert got == expected


@pytest.mark.parametrize("name", CONTRACTS)
def test_gx_suite_and_row_engine_agree_on_every_vector(name):
    """The loader's vectorized verdicts and the compiled GX suite flag the same rows for the same rules.
    (A value that fails to cast is null in the typed table: GX sees it as a null, the engine as
    type_mismatch on the same column.)"""
    from expectations.validation import validate_frame

    contract = load_contract(name)
    table, _ = _vectors(contract)
    v = evaluate(table, contract)
    gx = validate_frame(v.table.to_pandas(), contract, row_level=True)
    engine = {}
    reasons = iter(v.reasons.to_pylist())
    for i, ok in enumerate(v.valid.to_pylist()):
        if not ok:
            engine[i] = sorted(next(reasons).split(";"))
    assert set(gx.row_reasons) == set(engine)
    for i, labels in engine.items():
        cols_engine = sorted(label.split(":")[1] for label in labels)
        cols_gx = sorted(label.split(":")[1] for label in gx.row_reasons[i])
        assert cols_engine == cols_gx
        for label in labels:
            if not label.startswith("type_mismatch"):
                assert label in gx.row_reasons[i]


def test_reason_codes_for_each_rule_kind():
    data = _raw("crm_leads")
    data["columns"]["amount"] = {"type": "number", "min": 0, "max": 100}
    data["columns"]["owner"]["pattern"] = "^rep_[0-9]+$"
    contract = parse_contract(data, "t.yml")
    rows = [
        {"row_id": 1, "crm_lead_id": 1, "status": "open", "created_at": "2026-01-01 00:00:00",
         "updated_at": "2026-01-01 00:00:00", "amount": 5.0, "owner": "rep_1"},
        {"row_id": 2, "crm_lead_id": 2, "status": "open", "created_at": "2026-01-01 00:00:00",
         "updated_at": "2026-01-01 00:00:00", "amount": -1.0, "owner": "rep_1"},
        {"row_id": 3, "crm_lead_id": 3, "status": None, "created_at": "2026-01-01 00:00:00",
         "updated_at": "2026-01-01 00:00:00", "amount": 101.0, "owner": "bob"},
        {"row_id": "x", "crm_lead_id": None, "status": "gone", "created_at": "2026-01-01 00:00:00",
         "updated_at": "2026-01-01 00:00:00", "amount": None, "owner": None},
    ]
    table = pa.Table.from_pylist([{c: None if r.get(c) is None else str(r[c]) for c in contract.column_names}
                                  for r in rows],
                                 schema=pa.schema([(c, pa.string()) for c in contract.column_names]))
    v = evaluate(table, contract)
    assert v.valid.to_pylist() == [True, False, False, False]
    assert [sorted(r.split(";")) for r in v.reasons.to_pylist()] == [
        ["out_of_range:amount"],
        ["invalid_format:owner", "missing_required:status", "out_of_range:amount"],
        ["null_key:crm_lead_id", "type_mismatch:row_id", "unknown_value:status"],
    ]
    assert v.reason_counts == {"out_of_range": 2, "invalid_format": 1, "missing_required": 1, "null_key": 1,
                               "type_mismatch": 1, "unknown_value": 1}


@pytest.mark.parametrize(
    "edit, message",
    [
        (("  email: {type: string, required: true, pattern: email, pii: true}",
          "  email: {type: string, required: true, patern: email, pii: true}"), r":\d+: columns.email.patern: unknown key"),
        (("severity: standard", "severity: standard\nseverity: critical"), r":\d+: severity: duplicated key"),
        (("  company: {type: string}", "  company: {type: string}\n  company: {type: integer}"),
         r":\d+: columns.company: duplicated key"),
        (("severity: standard", "severity: standard\ndeprecated_after: soon"), r":\d+: deprecated_after: expected a date"),
    ],
)
def test_errors_name_file_and_line(tmp_path, edit, message):
    from expectations.contract import parse_contract_file

    text = load_contract("marketing_leads").path.read_text()
    assert edit[0] in text
    bad = tmp_path / "1.0.0.yml"
    bad.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ContractError, match=message) as exc:
        parse_contract_file(bad)
    line = int(str(exc.value).split(":")[1])
    offending = bad.read_text().splitlines()[line - 1]
    key = str(exc.value).split(": ")[1].split(".")[-1]
    assert key in offending, f"line {line} is {offending!r}"


def test_deprecation_date_is_read():
    from datetime import date

    data = _raw("marketing_leads")
    data["deprecated_after"] = date(2026, 6, 30)
    c = parse_contract(data, "x.yml")
    assert not c.deprecated_on(date(2026, 6, 30)) and c.deprecated_on(date(2026, 7, 1))
