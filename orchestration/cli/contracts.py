"""`meshline contracts list | show NAME[@VERSION] | test [NAME] | diff OLD NEW | compile [NAME] [--out DIR]
| publish | docs`.

OLD and NEW are `name@version` or paths to contract files. Everything here validates contracts but
loads no data; `test` and `compile` import Great Expectations (seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from assets.catalog import build_docs, publish
from expectations.contract import Contract
from expectations.reasons import ContractError
from expectations.registry import Registry


def _rules(c) -> str:
    parts = [c.type]
    if c.required:
        parts.append("required")
    if c.pattern:
        parts.append(f"pattern={c.pattern}")
    if c.allowed_values:
        parts.append("in {" + ", ".join(map(str, c.allowed_values)) + "}")
    if c.min is not None or c.max is not None:
        parts.append(f"range [{c.min}, {c.max}]")
    if c.pii:
        parts.append("PII")
    return ", ".join(parts)


def cmd_list(reg: Registry, _args) -> int:
    pins = reg.pins()
    print(f"{'contract':<20} {'pinned':<8} {'versions':<20} {'severity':<9} {'owner':<32} deprecated")
    for name in reg.names():
        c = reg.get(name)
        dep = str(c.deprecated_after) + (" (PAST)" if c.deprecated_on(date.today()) else "") if c.deprecated_after else "-"
        print(f"{name:<20} {pins.get(name, '-'):<8} {', '.join(reg.versions(name)):<20} {c.severity:<9} "
              f"{c.owners.get('contract', '-'):<32} {dep}")
    return 0


def cmd_show(reg: Registry, args) -> int:
    c = reg.resolve(args.ref)
    print(f"{c.ref}  ({c.severity}; boundary {c.boundary_flow}: {c.source_system}.{c.source_table})")
    if c.description:
        print(f"  {c.description}")
    print(f"  idempotency key {c.idempotency_key}, change token {c.change_token}, locator {c.locator or '-'}")
    print("  owners: " + ", ".join(f"{k} {v}" for k, v in c.owners.items()))
    if c.slos:
        print("  SLOs: " + ", ".join(f"{k} {v:g}" for k, v in c.slos.items()))
    if c.deprecated_after:
        print(f"  deprecated after {c.deprecated_after}")
    print("  columns:")
    for col in c.columns:
        print(f"    {col.name:<22} {_rules(col)}")
    n_pass, n_fail = len(c.test_vectors.get("pass", [])), len(c.test_vectors.get("fail", []))
    print(f"  test vectors: {n_pass} must pass, {n_fail} must fail")
    return 0


def run_vectors(contract: Contract) -> list[str]:
    """Run a contract's test vectors through the row engine and the compiled GX suite. Returns mismatches."""
    import pyarrow as pa

    from expectations.rules import evaluate
    from expectations.validation import validate_frame

    rows: list[dict[str, object]] = []
    expected: list[list[str]] = []
    for row in contract.test_vectors.get("pass", []):
        rows.append(row)
        expected.append([])
    for vec in contract.test_vectors.get("fail", []):
        rows.append(vec["row"])
        expected.append(sorted(vec["reasons"]))
    if not rows:
        return [f"{contract.ref}: no test vectors"]
    if not any(expected) or all(expected):
        return [f"{contract.ref}: needs at least one passing and one failing vector"]
    # Vectors arrive as text, as a CSV or API source would deliver them; the engine casts them.
    table = pa.Table.from_pylist([{c: None if r.get(c) is None else str(r[c]) for c in contract.column_names}
                                  for r in rows], schema=pa.schema([(c, pa.string()) for c in contract.column_names]))
    verdicts = evaluate(table, contract)
    reasons = iter(verdicts.reasons.to_pylist())
    engine = [[] if ok else sorted(next(reasons).split(";")) for ok in verdicts.valid.to_pylist()]
    gx = validate_frame(verdicts.table.to_pandas(), contract, row_level=True)
    problems = []
    for i, (want, got) in enumerate(zip(expected, engine, strict=True)):
        label = f"{contract.ref} vector {'pass' if not want else 'fail'} #{i}"
        if got != want:
            problems.append(f"{label}: expected {want or 'no reasons'}, rules gave {got or 'no reasons'}")
        # GX sees typed values: a value that failed to cast is a null there. It must flag exactly the
        # rows the engine flags, except a row whose only problem is a cast failure in an optional column.
        cast_only_optional = bool(got) and all(
            r.startswith("type_mismatch:") and not contract.column(r.split(":")[1]).required
            and r.split(":")[1] != contract.idempotency_key for r in got)
        gx_flagged = i in gx.row_reasons
        if gx_flagged != (bool(got) and not cast_only_optional):
            problems.append(f"{label}: GX suite {'flagged' if gx_flagged else 'passed'} it, rules "
                            f"{'flagged' if got else 'passed'} it")
    return problems


def cmd_test(reg: Registry, args) -> int:
    reg.pins()  # a pin naming a contract or version that does not exist fails the test run
    contracts = [reg.resolve(args.ref)] if args.ref else reg.all_versions()
    failed = 0
    for c in contracts:
        problems = run_vectors(c)
        n = len(c.test_vectors.get("pass", [])) + len(c.test_vectors.get("fail", []))
        if problems:
            failed += 1
            print(f"FAIL  {c.ref}")
            for p in problems:
                print(f"      {p}")
        else:
            print(f"ok    {c.ref}  ({n} vectors)")
    print(f"{len(contracts) - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_diff(reg: Registry, args) -> int:
    from expectations.diff import breaking, check_bump, diff

    old, new = reg.resolve(args.old), reg.resolve(args.new)
    changes = diff(old, new)
    print(f"{old.ref} → {new.ref}: {len(changes)} change(s), {len(breaking(changes))} breaking")
    for ch in changes:
        print(f"  {ch}")
    problem = check_bump(old, new, changes)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


def cmd_compile(reg: Registry, args) -> int:
    from expectations.compiler import compile_suite, suite_name

    contracts = [reg.resolve(args.ref)] if args.ref else [reg.get(n) for n in reg.names()]
    for c in contracts:
        suite = compile_suite(c)
        text = json.dumps(suite.to_json_dict(), indent=2, sort_keys=True, default=str)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / f"{suite_name(c)}.json"
            path.write_text(text)
            print(f"{c.ref}: {len(suite.expectations)} expectations → {path}")
        else:
            print(text)
    return 0


def cmd_publish(reg: Registry, args) -> int:
    from assets.settings import Settings

    n = publish(reg, Settings.from_env().warehouse_url)
    print(f"{n} contract version(s) written to meshline.contracts")
    return 0


def cmd_docs(reg: Registry, args) -> int:
    from assets.settings import Settings

    print(build_docs(reg, Settings.from_env().home))
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="meshline contracts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=None, help="contracts folder (default: the project's)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every contract, its versions and pin")
    s = sub.add_parser("show", help="one contract's columns, rules, owners and SLOs")
    s.add_argument("ref", help="name, name@version or a file")
    s = sub.add_parser("test", help="run test vectors through the compiled GX suite (all versions by default)")
    s.add_argument("ref", nargs="?")
    s = sub.add_parser("diff", help="classify the changes between two versions; non-zero on an unbumped break")
    s.add_argument("old")
    s.add_argument("new")
    s = sub.add_parser("compile", help="the GX suite(s) as JSON")
    s.add_argument("ref", nargs="?")
    s.add_argument("--out", type=Path, help="write one JSON file per suite here instead of printing")
    sub.add_parser("publish", help="write the registry (owners, severities, SLOs) to meshline.contracts")
    sub.add_parser("docs", help="build the Great Expectations Data Docs site under MESHLINE_HOME")
    args = p.parse_args(argv)
    reg = Registry(args.root) if args.root else Registry()
    try:
        return {"list": cmd_list, "show": cmd_show, "test": cmd_test, "diff": cmd_diff,
                "compile": cmd_compile, "publish": cmd_publish, "docs": cmd_docs}[args.cmd](reg, args)
    except ContractError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
