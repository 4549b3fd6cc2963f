"""Contracts: one YAML file per boundary and version (contracts/<name>/<version>.yml), parsed strictly.

A contract names its columns and their rules, the idempotency key, the change-token column, the PII
columns, owners, severity, SLOs, an optional deprecation date and test vectors. An unknown key, a
duplicated key, a wrong type or a rule on a column that does not exist is a `ContractError` naming the
file, the line, the key and the reason: a typo must never silently turn a failing rule into no rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from expectations.reasons import ContractError

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"

TYPES = ("integer", "number", "string", "timestamp", "date", "boolean")
SEVERITIES = ("critical", "standard")
# Named patterns, so that a contract says `pattern: email` rather than repeating a regex. The regexes
# are in the subset that both Python's `re` (Great Expectations) and RE2 (Arrow) read the same way.
NAMED_PATTERNS = {
    "email": r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$",
    "currency_code": r"^[A-Z]{3}$",
}

_TOP_KEYS = {
    "contract": str, "version": str, "description": str, "boundary": dict, "severity": str,
    "idempotency_key": str, "change_token": str, "locator": str, "owners": dict, "slos": dict,
    "columns": dict, "test_vectors": dict, "deprecated_after": date, "ignored_columns": list, "runbook": str,
}
_REQUIRED_TOP = ("contract", "version", "boundary", "severity", "idempotency_key", "change_token",
                 "owners", "columns")
_BOUNDARY_KEYS = {"flow": str, "source_system": str, "table": str}
_OWNER_KEYS = {"contract": str, "execution": str, "business": str}
_SLO_KEYS = {
    "freshness_hours": (int, float),
    "dead_letter_rate_max": (int, float),  # also the paging threshold on the rate
    "dead_letter_count_max": (int, float),  # page when a window holds more open dead letters than this
    "dead_letter_growth_max": (int, float),  # page when a window holds this many times the previous one's
    "resolve_hours": (int, float),  # incident SLO: escalate when open longer (default P1 4 h, P2 24 h)
}
_COLUMN_KEYS = {
    "type": str, "required": bool, "pattern": str, "allowed_values": list, "min": (int, float),
    "max": (int, float), "pii": bool, "description": str,
}
_VECTOR_KEYS = {"pass": list, "fail": list}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False
    pattern: str | None = None
    allowed_values: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    pii: bool = False
    description: str = ""

    @property
    def regex(self) -> str | None:
        if self.pattern is None:
            return None
        return NAMED_PATTERNS.get(self.pattern, self.pattern)


@dataclass(frozen=True)
class Contract:
    name: str
    version: str
    boundary_flow: str
    source_system: str
    source_table: str
    severity: str
    idempotency_key: str
    change_token: str
    columns: tuple[Column, ...]
    owners: dict[str, str]
    slos: dict[str, float] = field(default_factory=dict)
    locator: str | None = None
    description: str = ""
    test_vectors: dict[str, list[Any]] = field(default_factory=dict)
    deprecated_after: date | None = None
    ignored_columns: tuple[str, ...] = ()  # source columns known and deliberately not loaded
    path: Path | None = None
    runbook: str | None = None  # where the on-call owner starts when paged

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def deprecated_on(self, day: date) -> bool:
        return self.deprecated_after is not None and day > self.deprecated_after

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def pii_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.pii]

    @property
    def critical(self) -> bool:
        return self.severity == "critical"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def needed(self, column: str) -> bool:
        """A column without which a row cannot be loaded: required, the key, the token or the locator."""
        if column in (self.idempotency_key, self.change_token, self.locator):
            return True
        return any(c.name == column and c.required for c in self.columns)

    @property
    def source_columns(self) -> list[str]:
        """Columns read from the source: the contract's columns plus the locator, if any."""
        cols = self.column_names
        return cols + [self.locator] if self.locator and self.locator not in cols else cols


# The line of each key of the file being parsed, so errors can name it (set by load_contract).
_LINES: dict[tuple[Any, ...], int] = {}


def _key_path(key: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for part in key.split("."):
        m = re.fullmatch(r"(.*?)((?:\[\d+\])*)", part)
        assert m is not None  # the pattern matches any text
        if m.group(1):
            out.append(m.group(1))
        out += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    return tuple(out)


def _fail(path: Path | str, key: str, reason: str) -> ContractError:
    where = _key_path(key)
    while where and where not in _LINES:
        where = where[:-1]
    line = _LINES.get(where)
    return ContractError(f"{path}{f':{line}' if line else ''}: {key}: {reason}")


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: parsing ~10× faster


def parse_yaml(text: str) -> tuple[yaml.Node | None, object]:
    """The document's node tree (it knows every key's line) and its data (as `yaml.safe_load`), from one
    parse. Contracts and the configuration are read by every process that loads the definitions."""
    loader = _LOADER(text)
    try:
        # An alias repeats a node by reference; nested, a few hundred bytes expand to gigabytes when the
        # document is built. Neither contracts nor the configuration need one.
        for token in yaml.scan(text, Loader=_LOADER) if "&" in text or "*" in text else ():
            if isinstance(token, yaml.AliasToken | yaml.AnchorToken):
                raise yaml.YAMLError(f"line {token.start_mark.line + 1}: anchors and aliases (&, *) are not "
                                     "supported")
        node = loader.get_single_node()
        return node, None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def key_lines(node: yaml.Node | None, path: Path | str,
                 error: type[Exception] = ContractError) -> dict[tuple[Any, ...], int]:
    """Line of every mapping key and sequence item; a key given twice in one mapping is an error (PyYAML
    would silently keep the last one)."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, where: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, Any] = {}
            for k, v in node.value:
                here = where + (k.value,)
                if k.value in seen:
                    dotted = ".".join(str(x) for x in here)
                    raise error(f"{path}:{k.start_mark.line + 1}: {dotted}: duplicated key "
                                        f"(first at line {seen[k.value]})")
                seen[k.value] = k.start_mark.line + 1
                lines[here] = k.start_mark.line + 1
                walk(v, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[where + (i,)] = v.start_mark.line + 1
                walk(v, where + (i,))

    if node is not None:
        walk(node, ())
    return lines


def _check_keys(path: Path | str, prefix: str, data: Any, allowed: dict[str, Any]) -> None:
    if not isinstance(data, dict):
        raise _fail(path, prefix, f"expected a mapping, got {type(data).__name__}")
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in allowed:
            raise _fail(path, where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        want = allowed[key]
        if want is date and not isinstance(value, date):
            raise _fail(path, where, f"expected a date (YYYY-MM-DD), got {value!r}")
        # YAML reads 1.0 as float and 1 as int; a bool is an int in Python, so exclude it explicitly.
        if isinstance(value, bool) and want is not bool and bool not in (want if isinstance(want, tuple) else (want,)):
            raise _fail(path, where, f"expected {_type_name(want)}, got a boolean")
        if not isinstance(value, want):
            raise _fail(path, where, f"expected {_type_name(want)}, got {type(value).__name__}")


def _type_name(want: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
             dict: "a mapping", date: "a date"}
    if isinstance(want, tuple):
        return " or ".join(sorted({names[w] for w in want}))
    return names[want]


# Python types an allowed value of each column type may have (dates and timestamps take no value lists).
_VALUE_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool}


def _re2_refuses(regex: str) -> str | None:
    """Why Arrow's RE2 engine cannot compile `regex`, or None when it can."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.match_substring_regex(pa.array([""]), regex)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # how RE2 refuses a construct
        return str(exc).splitlines()[0][:200]
    return None


def parse_contract(data: Any, path: Path | str = "<contract>") -> Contract:
    _check_keys(path, "", data, _TOP_KEYS)
    for key in _REQUIRED_TOP:
        if key not in data:
            raise _fail(path, key, "required key is missing")
    if not re.fullmatch(r"\d+\.\d+\.\d+", data["version"]):
        raise _fail(path, "version", f"expected MAJOR.MINOR.PATCH, got {data['version']!r}")
    if data["severity"] not in SEVERITIES:
        raise _fail(path, "severity", f"expected one of {', '.join(SEVERITIES)}, got {data['severity']!r}")
    _check_keys(path, "boundary", data["boundary"], _BOUNDARY_KEYS)
    for key in _BOUNDARY_KEYS:
        if key not in data["boundary"]:
            raise _fail(path, f"boundary.{key}", "required key is missing")
    _check_keys(path, "owners", data["owners"], _OWNER_KEYS)
    if "contract" not in data["owners"]:
        raise _fail(path, "owners.contract", "every contract names its owner")
    slos = data.get("slos", {})
    _check_keys(path, "slos", slos, _SLO_KEYS)

    columns: list[Column] = []
    if not data["columns"]:
        raise _fail(path, "columns", "a contract has at least one column")
    for name, spec in data["columns"].items():
        where = f"columns.{name}"
        _check_keys(path, where, spec, _COLUMN_KEYS)
        if spec.get("type") not in TYPES:
            raise _fail(path, f"{where}.type", f"expected one of {', '.join(TYPES)}, got {spec.get('type')!r}")
        pattern = spec.get("pattern")
        if pattern is not None:
            if spec["type"] != "string":
                raise _fail(path, f"{where}.pattern", "a pattern applies to string columns only")
            regex = NAMED_PATTERNS.get(pattern, pattern)
            try:
                re.compile(regex)
            except re.error as exc:
                raise _fail(path, f"{where}.pattern", f"not a valid regular expression: {exc}") from exc
            why = _re2_refuses(regex)
            if why:
                raise _fail(path, f"{where}.pattern", "uses what the loader's regex engine (RE2) cannot run"
                            f" (lookaround, backreferences, possessive quantifiers): {why}")
        if ("min" in spec or "max" in spec) and spec["type"] not in ("integer", "number"):
            raise _fail(path, f"{where}.min/max", "a range applies to integer and number columns only")
        if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
            raise _fail(path, f"{where}.min", f"min {spec['min']} is above max {spec['max']}")
        allowed = spec.get("allowed_values")
        if allowed is not None and not allowed:
            raise _fail(path, f"{where}.allowed_values", "an empty list would reject every row")
        want = _VALUE_TYPES.get(spec["type"])
        for i, value in enumerate(allowed or ()):
            if want is None or isinstance(value, bool) != (spec["type"] == "boolean") or not isinstance(value, want):
                raise _fail(path, f"{where}.allowed_values[{i}]",
                            f"{value!r} is not of the column's type, {spec['type']}")
        columns.append(Column(
            name=name, type=spec["type"], required=spec.get("required", False), pattern=pattern,
            allowed_values=tuple(allowed) if allowed is not None else None,
            min=spec.get("min"), max=spec.get("max"), pii=spec.get("pii", False),
            description=spec.get("description", ""),
        ))
    names = {c.name for c in columns}
    for key in ("idempotency_key", "change_token", "locator"):
        if key in data and data[key] not in names:
            raise _fail(path, key, f"names column {data[key]!r}, which the contract does not declare")
    token = next(c for c in columns if c.name == data["change_token"])
    if token.type not in ("timestamp", "integer"):
        raise _fail(path, "change_token", "the change token must be a timestamp or an integer column")

    vectors = data.get("test_vectors", {})
    _check_keys(path, "test_vectors", vectors, _VECTOR_KEYS)
    for kind in ("pass", "fail"):
        for i, vec in enumerate(vectors.get(kind, [])):
            row = vec.get("row") if kind == "fail" else vec
            if not isinstance(row, dict):
                raise _fail(path, f"test_vectors.{kind}[{i}]", "expected a row mapping")
            unknown = set(row) - names
            if unknown:
                raise _fail(path, f"test_vectors.{kind}[{i}]", f"unknown columns {sorted(unknown)}")

    return Contract(
        name=data["contract"], version=data["version"], description=data.get("description", ""),
        boundary_flow=data["boundary"]["flow"], source_system=data["boundary"]["source_system"],
        source_table=data["boundary"]["table"], severity=data["severity"],
        idempotency_key=data["idempotency_key"], change_token=data["change_token"],
        locator=data.get("locator"), columns=tuple(columns), owners=dict(data["owners"]),
        slos={k: float(v) for k, v in slos.items()}, test_vectors=vectors,
        deprecated_after=data.get("deprecated_after"),
        ignored_columns=tuple(str(c) for c in data.get("ignored_columns", [])), path=Path(path),
        runbook=data.get("runbook"),
    )


def parse_contract_file(path: Path) -> Contract:
    """Parse one contract file strictly; errors name the file and the line."""
    global _LINES
    if not path.exists():
        raise ContractError(f"{path}: no such contract file")
    text = path.read_text()
    try:
        node, data = parse_yaml(text)
        lines = key_lines(node, path)
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from exc
    _LINES = lines
    try:
        return parse_contract(data, path)
    finally:
        _LINES = {}
