"""Reconciliation rules between two boundaries of a flow, declared in meshline.yaml, evaluated per
partition on DuckDB and Postgres.

    rules:
      handoff:                                  # the rule's name, unique in its flow
        kind: presence                          # presence | cardinality | orphans | agreement |
                                                # latest_state | aggregate_parity
        from: marketing_leads                   # boundary A (the rule's check sits on its asset)
        to: crm_leads                           # boundary B
        match: {lead_id: marketing_lead_id}     # A column -> B column; same types
        partition_by: mql_at                    # A's timestamp column whose day is the partition
        sla: 24h                                # s, m, h or d; measured from partition_by (or sla_from)
        where: [{column: campaign, op: "!=", value: test}]   # on A; structured, never SQL
        severity: critical                      # critical (an ERROR check that blocks) | error (an
                                                # ERROR check) | standard (a WARN check; the default)

What each kind finds, for the A rows of one partition (B rows for `orphans`):
- presence: an A row with no matching B row once the SLA has passed (with `b_at`, B's timestamp column:
  no matching B row stamped within the SLA of A's, so a late handoff fails as a missing one does);
- cardinality: an A row with more B rows than `at_most` (or other than `exactly`, once due);
- orphans: a B row with no matching A row (once due, when an SLA is given);
- agreement: a matched pair whose `fields` differ: exactly, within `tolerance`, or through `map`;
- latest_state: the newest A row per key (by `order_by`) whose `fields` B does not hold once due (with
  `b_at`, B's timestamp of its state: at once when B's state is newer than A's row and still differs);
- aggregate_parity: count, or sum of a column, on A and on B (`b_partition_by`) differing by more
  than `tolerance` (a fraction of A's figure).

"Due" is judged as of B's newest loaded change token (A's, for orphans): a side that is merely behind
never reads as a sync failure. Identifiers are checked against the contracts when meshline.yaml loads;
values reach SQL only as bound parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from assets.loading.ddl import raw_table
from assets.loading.redaction import redact_value
from assets.loading.warehouse import Warehouse, ident
from assets.loading.watermark import daily_window
from expectations.contract import Contract

KINDS = ("presence", "cardinality", "orphans", "agreement", "latest_state", "aggregate_parity")
OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "in": "IN", "not_in": "NOT IN",
       "is_null": "IS NULL", "not_null": "IS NOT NULL"}
SAMPLE = 5
SEVERITIES = ("critical", "error", "standard")
_SLA = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PY_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool}

# Keys each kind takes beside the common ones, and which of them it requires.
COMMON = {"kind": str, "from": str, "to": str, "match": dict, "partition_by": str, "where": list, "sla": str,
          "sla_from": str, "severity": str, "description": str}
EXTRA: dict[str, dict[str, Any]] = {
    "presence": {"b_at": str},
    "cardinality": {"at_most": int, "exactly": int},
    "orphans": {"b_partition_by": str, "b_where": list},
    "agreement": {"fields": list},
    "latest_state": {"fields": list, "order_by": str, "b_at": str},
    "aggregate_parity": {"aggregate": str, "column": str, "b_column": str, "b_partition_by": str,
                         "tolerance": (int, float)},
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "presence": ("match", "partition_by", "sla"), "cardinality": ("match", "partition_by"),
    "orphans": ("match", "b_partition_by"), "agreement": ("match", "partition_by", "fields"),
    "latest_state": ("match", "partition_by", "fields", "order_by"),
    "aggregate_parity": ("partition_by", "b_partition_by", "aggregate"),
}


class RuleError(ValueError):
    """A rule that cannot run; `where` is its key path in meshline.yaml."""

    def __init__(self, where: tuple[Any, ...], reason: str):
        super().__init__(reason)
        self.where, self.reason = where, reason


@dataclass(frozen=True)
class Filter:
    column: str
    op: str
    value: Any = None

    def sql(self, alias: str) -> tuple[str, list[Any]]:
        col = f"{alias}.{ident(self.column)}"
        if self.op in ("is_null", "not_null"):
            return f"{col} {OPS[self.op]}", []
        if self.op in ("in", "not_in"):
            return f"{col} {OPS[self.op]} ({', '.join('?' * len(self.value))})", list(self.value)
        return f"{col} {OPS[self.op]} ?", [self.value]


@dataclass(frozen=True)
class Field:
    a: str
    b: str
    tolerance: float | None = None
    mapping: Mapping[Any, Any] | None = None

    def agree(self, x: Any, y: Any) -> bool:
        if self.mapping is not None and x is not None:
            x = self.mapping.get(x, x)
        if x is None or y is None:
            return x is None and y is None
        if self.tolerance is not None:
            return abs(float(x) - float(y)) <= self.tolerance
        return bool(x == y)

    def words(self) -> str:
        how = f"within {self.tolerance:g}" if self.tolerance is not None else "mapped" if self.mapping else "equal"
        return f"{self.a}→{self.b} {how}"


@dataclass(frozen=True)
class Rule:
    flow: str
    name: str
    kind: str
    a: Contract
    b: Contract
    match: tuple[tuple[str, str], ...] = ()
    partition_by: str = ""
    sla: timedelta = timedelta(0)
    sla_from: str = ""
    where: tuple[Filter, ...] = ()
    b_where: tuple[Filter, ...] = ()
    severity: str = "standard"
    at_most: int | None = None
    exactly: int | None = None
    fields: tuple[Field, ...] = ()
    order_by: str = ""
    b_partition_by: str = ""
    b_at: str = ""
    aggregate: str = "count"
    column: str = ""
    b_column: str = ""
    tolerance: float = 0.0
    description: str = ""

    @property
    def critical(self) -> bool:
        return self.severity == "critical"

    @property
    def check_name(self) -> str:
        return f"rule_{self.name}"

    def words(self) -> str:
        """The rule in a sentence, for the check's description."""
        if self.description:
            return self.description
        a, b, hours = self.a.name, self.b.name, self.sla.total_seconds() / 3600
        sla = f" within {hours:g} h" if self.sla else ""
        on = ", ".join(f"{x}={y}" for x, y in self.match)
        return {
            "presence": f"every {a} row has a matching {b} row ({on}){sla}"
                        + (f" (by {b}.{self.b_at})" if self.b_at else ""),
            "cardinality": f"every {a} row has {'at most' if self.at_most is not None else 'exactly'} "
                           f"{self.at_most if self.at_most is not None else self.exactly} {b} row(s) ({on}){sla}",
            "orphans": f"every {b} row has a matching {a} row ({on}){sla}",
            "agreement": f"matched {a} and {b} rows ({on}) agree: {'; '.join(f.words() for f in self.fields)}",
            "latest_state": f"{b} holds the newest {a} state per key ({on}): "
                            f"{'; '.join(f.words() for f in self.fields)}{sla}",
            "aggregate_parity": f"{self.aggregate} of {a} and {b} per day agree within {self.tolerance:g}",
        }[self.kind]


@dataclass
class Findings:
    """What one rule found for one partition: counts and a few sample keys (redacted when the key is PII)."""

    rule: str
    kind: str
    partition_key: str
    checked: int = 0
    failing: int = 0
    pending: int = 0
    as_of: datetime | None = None
    sample: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    # Every failing and pending key, as the warehouse holds it: stored only through `stored_key`.
    failing_keys: list[Any] = field(default_factory=list)
    pending_keys: list[Any] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failing == 0


def parse_sla(text: Any) -> timedelta:
    m = _SLA.fullmatch(str(text))
    if not m:
        raise ValueError(f"expected a duration such as 30m, 24h or 2d, got {text!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def parse_rule(flow: str, name: str, spec: Any, contracts: Mapping[str, Contract],
               where: tuple[Any, ...] = ()) -> Rule:
    """A rule from its meshline.yaml mapping; `contracts` maps the flow's boundary names to their
    contracts. Raises `RuleError` naming the key and the reason."""
    def fail(key: tuple[Any, ...] | str, reason: str) -> RuleError:
        return RuleError(where + ((key,) if isinstance(key, str) else key), reason)

    if not isinstance(spec, dict):
        raise fail((), f"expected a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise fail("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    allowed = {**COMMON, **EXTRA[kind]}
    for k, v in spec.items():
        if k not in allowed:
            raise fail(k, f"unknown key for a {kind} rule (allowed: {', '.join(sorted(allowed))})")
        want = allowed[k]
        if (isinstance(v, bool) and want is not bool) or not isinstance(v, want):
            names = want if isinstance(want, tuple) else (want,)
            raise fail(k, f"expected {' or '.join(t.__name__ for t in names)}, got {type(v).__name__}")
    for k in ("from", "to", *REQUIRED[kind]):
        if k not in spec:
            raise fail(k, f"required for a {kind} rule")
    a, b = (_boundary(spec[k], contracts, fail, k) for k in ("from", "to"))

    def col(contract: Contract, key: tuple[Any, ...] | str, name: Any, types: tuple[str, ...] = ()) -> str:
        if not isinstance(name, str) or name not in contract.column_names:
            raise fail(key, f"contract {contract.name} has no column {name!r}")
        if types and contract.column(name).type not in types:
            raise fail(key, f"{contract.name}.{name} is a {contract.column(name).type}, expected {' or '.join(types)}")
        return name

    match = []
    for x, y in (spec.get("match") or {}).items():
        col(a, ("match", x), x)
        col(b, ("match", x), y)
        ta, tb = a.column(x).type, b.column(y).type
        if ta != tb and {ta, tb} != {"integer", "number"}:
            raise fail(("match", x), f"{a.name}.{x} is a {ta} but {b.name}.{y} is a {tb}: keys must have one type")
        match.append((x, y))
    if "match" in spec and not match:
        raise fail("match", "name at least one pair of columns")
    times = ("timestamp", "date")
    partition_by = col(a, "partition_by", spec["partition_by"], times) if "partition_by" in spec else ""
    b_partition_by = col(b, "b_partition_by", spec["b_partition_by"], times) if "b_partition_by" in spec else ""
    sla = timedelta(0)
    if "sla" in spec:
        try:
            sla = parse_sla(spec["sla"])
        except ValueError as exc:
            raise fail("sla", str(exc)) from None
    sla_side = b if kind == "orphans" else a
    sla_from = col(sla_side, "sla_from", spec.get("sla_from") or (b_partition_by if kind == "orphans" else partition_by),
                   times)
    severity = spec.get("severity", "standard")
    if severity not in SEVERITIES:
        raise fail("severity", f"expected one of {', '.join(SEVERITIES)}, got {severity!r}")
    rule = Rule(flow=flow, name=name, kind=kind, a=a, b=b, match=tuple(match), partition_by=partition_by, sla=sla,
                sla_from=sla_from, where=_filters(spec.get("where") or [], a, fail, "where"),
                b_where=_filters(spec.get("b_where") or [], b, fail, "b_where"), severity=severity,
                b_partition_by=b_partition_by, description=spec.get("description", ""))
    if "b_at" in spec:
        rule = replace(rule, b_at=col(b, "b_at", spec["b_at"], times))
    if kind == "cardinality":
        if ("at_most" in spec) == ("exactly" in spec):
            raise fail("at_most", "a cardinality rule takes one of at_most or exactly")
        n: int = spec["at_most"] if "at_most" in spec else spec["exactly"]
        if n < 0:
            raise fail("at_most" if "at_most" in spec else "exactly", f"expected 0 or more, got {n}")
        rule = replace(rule, at_most=spec.get("at_most"), exactly=spec.get("exactly"))
    if kind in ("agreement", "latest_state"):
        rule = replace(rule, fields=_fields(spec["fields"], a, b, fail, col))
    if kind == "latest_state":
        rule = replace(rule, order_by=col(a, "order_by", spec["order_by"], (*times, "integer")))
    if kind == "aggregate_parity":
        agg = spec["aggregate"]
        if agg not in ("count", "sum"):
            raise fail("aggregate", f"expected count or sum, got {agg!r}")
        column = b_column = ""
        if agg == "sum":
            if "column" not in spec:
                raise fail("column", "a sum names the column of A it adds up")
            column = col(a, "column", spec["column"], ("integer", "number"))
            b_column = col(b, "b_column", spec.get("b_column", column), ("integer", "number"))
        tol = float(spec.get("tolerance", 0))
        if not 0 <= tol <= 1:
            raise fail("tolerance", f"expected a fraction 0 to 1, got {spec['tolerance']!r}")
        rule = replace(rule, aggregate=agg, column=column, b_column=b_column, tolerance=tol)
    return rule


def _boundary(name: Any, contracts: Mapping[str, Contract], fail: Callable[..., RuleError], key: str) -> Contract:
    if name not in contracts:
        raise fail(key, f"no boundary {name!r} in this flow (it has {', '.join(sorted(contracts))})")
    return contracts[name]


def _filters(items: list[Any], contract: Contract, fail: Callable[..., RuleError], key: str) -> tuple[Filter, ...]:
    out = []
    for i, item in enumerate(items):
        at = (key, i)
        if not isinstance(item, dict) or set(item) - {"column", "op", "value"} or "column" not in item or "op" not in item:
            raise fail(at, "a filter is {column: NAME, op: OPERATOR, value: VALUE}")
        name, op = item["column"], item["op"]
        if name not in contract.column_names:
            raise fail(at + ("column",), f"contract {contract.name} has no column {name!r}")
        if op not in OPS:
            raise fail(at + ("op",), f"expected one of {', '.join(OPS)}, got {op!r}")
        value = item.get("value")
        ctype = contract.column(name).type
        if op in ("is_null", "not_null"):
            if "value" in item:
                raise fail(at + ("value",), f"{op} takes no value")
        else:
            if op in ("in", "not_in") and (not isinstance(value, list) or not value):
                raise fail(at + ("value",), f"{op} takes a non-empty list")
            if op not in ("in", "not_in") and isinstance(value, list | dict):
                raise fail(at + ("value",), f"{op} takes one value (a list goes with in or not_in)")
            values: list[Any] = list(value) if isinstance(value, list) else [value]
            want = _PY_TYPES.get(ctype, str)
            for v in values:
                if isinstance(v, bool) != (ctype == "boolean") or not isinstance(v, want):
                    raise fail(at + ("value",), f"{v!r} is not a {ctype} value ({contract.name}.{name})")
        out.append(Filter(name, op, tuple(value) if isinstance(value, list) else value))
    return tuple(out)


def _fields(items: list[Any], a: Contract, b: Contract, fail: Callable[..., RuleError],
            col: Callable[..., str]) -> tuple[Field, ...]:
    if not items:
        raise fail("fields", "name at least one field to compare")
    out = []
    for i, item in enumerate(items):
        at = ("fields", i)
        if not isinstance(item, dict) or "from" not in item or set(item) - {"from", "to", "tolerance", "map"}:
            raise fail(at, "a field is {from: A_COLUMN, to: B_COLUMN, tolerance: NUMBER or map: {A: B}}")
        x = col(a, at + ("from",), item["from"])
        y = col(b, at + ("to",), item.get("to", x))
        tol, mapping = item.get("tolerance"), item.get("map")
        if tol is not None:
            if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 <= tol < float("inf"):
                raise fail(at + ("tolerance",), f"expected a number 0 or more, got {tol!r}")
            if "number" not in (a.column(x).type, "integer") or b.column(y).type not in ("number", "integer"):
                raise fail(at + ("tolerance",), "a tolerance compares number or integer columns")
        if mapping is not None and not isinstance(mapping, dict):
            raise fail(at + ("map",), "expected a mapping of A values to B values")
        out.append(Field(x, y, None if tol is None else float(tol), mapping))
    return tuple(out)


# --- evaluation --------------------------------------------------------------------------------------


def _on(rule: Rule, a: str = "a", b: str = "b") -> str:
    return " AND ".join(f"{b}.{ident(y)} = {a}.{ident(x)}" for x, y in rule.match)


def _where(filters: tuple[Filter, ...], alias: str) -> tuple[str, list[Any]]:
    parts, params = [], []
    for f in filters:
        sql, p = f.sql(alias)
        parts.append(sql)
        params += p
    return "".join(f" AND {p}" for p in parts), params


def stored_key(value: Any, contract: Contract, key: bytes) -> str:
    """A key as findings hold it: redacted when the contract marks its key column as PII."""
    return str(redact_value(value, key) if contract.idempotency_key in contract.pii_columns else value)


def _sample(keys: list[Any], contract: Contract, key: bytes) -> list[str]:
    return [stored_key(k, contract, key) for k in keys[:SAMPLE]]


def evaluate(wh: Warehouse, rule: Rule, partition_key: str) -> Findings:
    """The rule over one partition. Both raw tables must exist (the check says so otherwise)."""
    window = daily_window(partition_key)
    out = Findings(rule.name, rule.kind, partition_key)
    ta, tb = raw_table(rule.a), raw_table(rule.b)
    judge = rule.a if rule.kind == "orphans" else rule.b
    with wh.session() as s:
        as_of = s.scalar(f"SELECT max({ident(judge.change_token)}) FROM {raw_table(judge)}")
        out.as_of = as_of
        cutoff = (as_of - rule.sla) if as_of is not None else datetime(1900, 1, 1)
        if rule.kind == "aggregate_parity":
            return _parity(s, rule, out, ta, tb, window.start, window.end)
        if rule.kind == "orphans":
            cond, params = _where(rule.b_where, "b")
            rows = s.query(
                f"SELECT b.{ident(rule.b.idempotency_key)}, b.{ident(rule.sla_from)} <= ? AS due FROM {tb} b"
                f" WHERE b.{ident(rule.b_partition_by)} >= ? AND b.{ident(rule.b_partition_by)} < ?{cond}"
                f" AND NOT EXISTS (SELECT 1 FROM {ta} a WHERE {_on(rule)}) ORDER BY 1",
                [cutoff, window.start, window.end, *params])
            out.checked = s.scalar(f"SELECT count(*) FROM {tb} b WHERE b.{ident(rule.b_partition_by)} >= ?"
                                   f" AND b.{ident(rule.b_partition_by)} < ?{cond}", [window.start, window.end, *params])
            failing = [k for k, due in rows if due]
            out.failing_keys, out.pending_keys = failing, [k for k, due in rows if not due]
            out.failing, out.pending = len(failing), len(rows) - len(failing)
            out.sample = _sample(failing, rule.b, wh.redaction_key)
            return out
        cond, params = _where(rule.where, "a")
        base_params = [window.start, window.end, *params]
        key = f"a.{ident(rule.a.idempotency_key)}"
        pending: list[Any] = []
        if rule.kind in ("presence", "cardinality"):
            in_time, in_time_params = "", []
            if rule.b_at:
                in_time, in_time_params = f" AND b.{ident(rule.b_at)} <= a.{ident(rule.sla_from)} + ?", [rule.sla]
            # A join counted per key, not a count per row: Postgres runs a correlated count as a scan of
            # B for every row of A (DuckDB decorrelates it either way). A's key is unique in raw.
            rows = s.query(
                f"SELECT {key}, count(b.{ident(rule.b.idempotency_key)}) AS n, a.{ident(rule.sla_from)} <= ? AS due"
                f" FROM {ta} a LEFT JOIN {tb} b ON {_on(rule)}{in_time}"
                f" WHERE a.{ident(rule.partition_by)} >= ? AND a.{ident(rule.partition_by)} < ?{cond}"
                f" GROUP BY {key}, a.{ident(rule.sla_from)} ORDER BY 1",
                [cutoff, *in_time_params, *base_params])
            out.checked = len(rows)
            if rule.kind == "presence":
                failing = [k for k, n, due in rows if n == 0 and due]
                pending = [k for k, n, due in rows if n == 0 and not due]
            elif rule.at_most is not None:
                failing = [k for k, n, _ in rows if n > rule.at_most]
            else:
                failing = [k for k, n, due in rows if n > rule.exactly or (n < rule.exactly and due)]  # type: ignore[operator]
                pending = [k for k, n, due in rows if n < rule.exactly and not due]  # type: ignore[operator]
        elif rule.kind == "agreement":
            fa = ", ".join(f"a.{ident(f.a)}" for f in rule.fields)
            fb = ", ".join(f"b.{ident(f.b)}" for f in rule.fields)
            rows = s.query(f"SELECT {key}, {fa}, {fb} FROM {ta} a JOIN {tb} b ON {_on(rule)}"
                           f" WHERE a.{ident(rule.partition_by)} >= ? AND a.{ident(rule.partition_by)} < ?{cond}"
                           " ORDER BY 1", base_params)
            n = len(rule.fields)
            out.checked = len(rows)
            failing = [r[0] for r in rows if not all(f.agree(r[1 + i], r[1 + n + i]) for i, f in enumerate(rule.fields))]
        else:  # latest_state
            fa = ", ".join(f"l.{ident(f.a)}" for f in rule.fields)
            fb = ", ".join(f"b.{ident(f.b)}" for f in rule.fields)
            keys_a = ", ".join(f"a.{ident(x)}" for x, _ in rule.match)
            keys_b = ", ".join(f"b.{ident(y)}" for _, y in rule.match)
            # The newest A row per key over all of A (a key's older state is superseded, whatever its
            # day), judged on the partition its newest row falls in; B's state is B's newest row per key.
            latest = (f"SELECT a.*, row_number() OVER (PARTITION BY {keys_a} ORDER BY a.{ident(rule.order_by)} DESC,"
                      f" {key} DESC) AS _rn FROM {ta} a WHERE 1 = 1{cond}")
            held = (f"SELECT b.*, row_number() OVER (PARTITION BY {keys_b} ORDER BY b.{ident(rule.b.change_token)}"
                    f" DESC, b.{ident(rule.b.idempotency_key)} DESC) AS _rn FROM {tb} b")
            pb = f"l.{ident(rule.partition_by)}"
            since = (f"coalesce(b.{ident(rule.b_at)} >= l.{ident(rule.order_by)}, false)" if rule.b_at
                     else "false")
            rows = s.query(f"SELECT l.{ident(rule.a.idempotency_key)}, l.{ident(rule.sla_from)} <= ? OR {since} AS due,"
                           f" (b.{ident(rule.b.idempotency_key)} IS NOT NULL) AS found, {fa}, {fb}"
                           f" FROM ({latest}) l LEFT JOIN ({held}) b ON {_on(rule, 'l')} AND b._rn = 1"
                           f" WHERE l._rn = 1 AND {pb} >= ? AND {pb} < ? ORDER BY 1",
                           [cutoff, *params, window.start, window.end])
            n = len(rule.fields)
            out.checked = len(rows)
            stale = [(r[0], r[1]) for r in rows
                     if not r[2] or not all(f.agree(r[3 + i], r[3 + n + i]) for i, f in enumerate(rule.fields))]
            failing = [k for k, due in stale if due]
            pending = [k for k, due in stale if not due]
    out.failing, out.pending = len(failing), len(pending)
    out.failing_keys, out.pending_keys = failing, pending
    out.sample = _sample(failing, rule.a, wh.redaction_key)
    return out


def _parity(s: Any, rule: Rule, out: Findings, ta: str, tb: str, start: datetime, end: datetime) -> Findings:
    cond_a, pa_ = _where(rule.where, "a")
    cond_b, pb_ = _where(rule.b_where, "b")
    fa = "count(*)" if rule.aggregate == "count" else f"coalesce(sum(a.{ident(rule.column)}), 0)"
    fb = "count(*)" if rule.aggregate == "count" else f"coalesce(sum(b.{ident(rule.b_column)}), 0)"
    va = float(s.scalar(f"SELECT {fa} FROM {ta} a WHERE a.{ident(rule.partition_by)} >= ?"
                        f" AND a.{ident(rule.partition_by)} < ?{cond_a}", [start, end, *pa_]) or 0)
    vb = float(s.scalar(f"SELECT {fb} FROM {tb} b WHERE b.{ident(rule.b_partition_by)} >= ?"
                        f" AND b.{ident(rule.b_partition_by)} < ?{cond_b}", [start, end, *pb_]) or 0)
    out.checked = 1
    out.failing = int(abs(va - vb) > rule.tolerance * abs(va) + 1e-9)
    out.detail = {"a": va, "b": vb}
    return out
