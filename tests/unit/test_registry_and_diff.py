"""The contract registry (versions side by side, pins), contract diff classes, and `meshline contracts`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from expectations.contract import CONTRACTS_DIR
from expectations.diff import BREAKING, COMPATIBLE, check_bump, diff
from expectations.reasons import ContractError
from expectations.registry import Registry
from orchestration.cli.contracts import main as contracts

BASE = yaml.safe_load((CONTRACTS_DIR / "crm_leads" / "1.0.0.yml").read_text())


def _registry(tmp_path: Path, versions: dict[str, dict], pins: dict | None = None) -> Registry:
    root = tmp_path / "contracts"
    (root / "crm_leads").mkdir(parents=True)
    for version, data in versions.items():
        (root / "crm_leads" / f"{version}.yml").write_text(yaml.safe_dump({**data, "version": version}))
    if pins is not None:
        (root / "pins.yml").write_text(yaml.safe_dump(pins))
    return Registry(root)


def _variant(mutate) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    mutate(data)
    return data


def _cols(d):
    return d["columns"]


def _drop(d, column):
    _cols(d).pop(column)
    for vec in d["test_vectors"]["pass"]:
        vec.pop(column, None)
    for vec in d["test_vectors"]["fail"]:
        vec["row"].pop(column, None)


CASES = [
    # (mutation, expected (kind, what) pairs)
    (lambda d: _drop(d, "owner"), {(BREAKING, "column removed")}),
    (lambda d: _cols(d)["marketing_lead_id"].update(type="string"), {(COMPATIBLE, "type widened")}),
    (lambda d: _cols(d)["owner"].update(type="integer"), {(BREAKING, "type narrowed")}),
    (lambda d: _cols(d).update(region={"type": "string", "required": True}), {(BREAKING, "required column added")}),
    (lambda d: _cols(d).update(region={"type": "string"}), {(COMPATIBLE, "optional column added")}),
    (lambda d: _cols(d)["owner"].update(required=True), {(BREAKING, "column made required")}),
    (lambda d: _cols(d)["status"]["allowed_values"].remove("working"), {(BREAKING, "allowed value removed")}),
    (lambda d: _cols(d)["status"]["allowed_values"].append("nurture"), {(COMPATIBLE, "allowed value added")}),
    (lambda d: _cols(d)["row_id"].update(min=10), {(BREAKING, "range narrowed")}),
    (lambda d: d.update(idempotency_key="row_id"), {(BREAKING, "idempotency key changed")}),
    (lambda d: d.update(change_token="created_at"), {(BREAKING, "change token changed")}),
    (lambda d: _cols(d)["owner"].update(pattern="^rep_[0-9]+$"), {(BREAKING, "pattern added")}),
]


@pytest.mark.parametrize("mutate, expected", CASES)
def test_each_change_is_classified(tmp_path, mutate, expected):
    reg = _registry(tmp_path, {"1.0.0": BASE, "1.1.0": _variant(mutate)})
    changes = diff(reg.get("crm_leads", "1.0.0"), reg.get("crm_leads", "1.1.0"))
    got = {(c.kind, c.what) for c in changes if c.kind != "info"}
    assert got == expected


def test_range_widened_and_narrowed_by_bound(tmp_path):
    ranged = _variant(lambda d: _cols(d)["row_id"].update(min=0, max=100))
    wider = _variant(lambda d: _cols(d)["row_id"].update(min=-5, max=1000))
    reg = _registry(tmp_path, {"1.0.0": ranged, "1.1.0": wider})
    assert {(c.kind, c.what) for c in diff(reg.get("crm_leads", "1.0.0"), reg.get("crm_leads", "1.1.0"))} == {
        (COMPATIBLE, "range widened")}
    assert {(c.kind, c.what) for c in diff(reg.get("crm_leads", "1.1.0"), reg.get("crm_leads", "1.0.0"))} == {
        (BREAKING, "range narrowed")}


def test_breaking_change_needs_a_major_bump_and_cli_exits_non_zero(tmp_path, capsys):
    broken = _variant(lambda d: _drop(d, "owner"))
    reg = _registry(tmp_path, {"1.0.0": BASE, "1.1.0": broken, "2.0.0": broken})
    old, minor, major = (reg.get("crm_leads", v) for v in ("1.0.0", "1.1.0", "2.0.0"))
    assert "major version bump" in check_bump(old, minor, diff(old, minor))
    assert check_bump(old, major, diff(old, major)) is None
    root = ["--root", str(reg.root)]
    assert contracts([*root, "diff", "crm_leads@1.0.0", "crm_leads@1.1.0"]) == 1
    out = capsys.readouterr()
    assert "BREAKING    column removed: owner" in out.out and "major version bump" in out.err
    assert contracts([*root, "diff", "crm_leads@1.0.0", "crm_leads@2.0.0"]) == 0
    compatible = _variant(lambda d: _cols(d).update(region={"type": "string"}))
    (reg.root / "crm_leads" / "1.2.0.yml").write_text(yaml.safe_dump({**compatible, "version": "1.2.0"}))
    assert contracts([*root, "diff", "crm_leads@1.0.0", "crm_leads@1.2.0"]) == 0


def test_versions_live_side_by_side_and_boundaries_get_the_pinned_one(tmp_path):
    reg = _registry(tmp_path, {"1.0.0": BASE, "1.9.0": BASE, "1.10.0": BASE}, pins={"crm_leads": "1.9.0"})
    assert reg.versions("crm_leads") == ["1.0.0", "1.9.0", "1.10.0"]  # semver order, not text order
    assert reg.get("crm_leads").version == "1.9.0"
    assert reg.resolve("crm_leads@1.10.0").version == "1.10.0"
    (reg.root / "pins.yml").write_text("crm_leads: 3.0.0\n")
    with pytest.raises(ContractError, match="pinned version 3.0.0 does not exist"):
        reg.get("crm_leads")
    (reg.root / "pins.yml").unlink()
    assert reg.get("crm_leads").version == "1.10.0"  # unpinned: newest


def test_a_file_whose_content_disagrees_with_its_place_is_refused(tmp_path):
    reg = _registry(tmp_path, {"1.0.0": BASE})
    shutil.copy(reg.path("crm_leads", "1.0.0"), reg.root / "crm_leads" / "1.1.0.yml")
    with pytest.raises(ContractError, match="file says crm_leads@1.0.0; its place says crm_leads@1.1.0"):
        reg.get("crm_leads", "1.1.0")


def test_the_project_registry_pins_every_boundary_and_keeps_older_versions():
    reg = Registry()
    assert reg.pins() == {"marketing_leads": "1.0.0", "crm_leads": "1.0.0", "crm_opportunities": "1.0.0",
                          "billing_invoices": "1.0.0", "product_plan_events": "1.0.0",
                          "billing_subscriptions": "1.0.0"}
    assert reg.versions("crm_leads") == ["1.0.0", "1.1.0"]


def test_contracts_test_passes_every_vector_of_every_contract(capsys):
    """`make test` runs `meshline contracts test` over every version of every contract."""
    assert contracts(["test"]) == 0
    out = capsys.readouterr().out
    for c in Registry().all_versions():
        assert f"ok    {c.ref}" in out


def test_contracts_test_fails_loudly_on_a_wrong_vector(tmp_path, capsys):
    wrong = _variant(lambda d: d["test_vectors"]["fail"][0].update(reasons=["invalid_format:status"]))
    reg = _registry(tmp_path, {"1.0.0": wrong})
    assert contracts(["--root", str(reg.root), "test"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  crm_leads@1.0.0" in out and "expected ['invalid_format:status']" in out


def test_contracts_list_show_compile(tmp_path, capsys):
    assert contracts(["list"]) == 0
    out = capsys.readouterr().out
    assert "crm_leads" in out and "1.0.0, 1.1.0" in out and "2027-06-30" in out
    assert contracts(["show", "marketing_leads"]) == 0
    out = capsys.readouterr().out
    assert "email" in out and "pattern=email" in out and "PII" in out
    assert contracts(["compile", "--out", str(tmp_path / "suites")]) == 0
    assert sorted(p.name for p in (tmp_path / "suites").iterdir()) == [
        "billing_invoices__v1_0_0.json", "billing_subscriptions__v1_0_0.json", "crm_leads__v1_0_0.json",
        "crm_opportunities__v1_0_0.json", "marketing_leads__v1_0_0.json", "product_plan_events__v1_0_0.json"]
    assert contracts(["show", "nope"]) == 2
    assert "no contract named 'nope'" in capsys.readouterr().err
