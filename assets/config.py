"""meshline.yaml: flows, their boundaries and where each boundary's source lives.

    version: 1
    flows:
      lead_handoff:
        boundaries:
          crm_leads:
            contract: crm_leads            # a contract name; its pinned version unless contract_version
            lookback_hours: 6
            source:
              kind: sql                    # sql | http | files
              url: ${MESHLINE_SOURCE_CRM_URL:-sandbox}
              table: crm_leads

Beside `flows:`, optional blocks hold what a team rarely changes (`partitions`, `warehouse`, `alerts`,
`remediation`, `retention`; see the shipped meshline.yaml for each key and its default).

`${VAR}` and `${VAR:-default}` are replaced from the environment (secrets never live in the file);
`url: sandbox` means the simulated system under MESHLINE_HOME. An invalid file fails when definitions
load, with the file, the line, the key and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from expectations.contract import key_lines, parse_yaml
from expectations.reasons import MeshlineError

if TYPE_CHECKING:
    from assets.flows.rules import Rule


class ConfigError(MeshlineError):
    """meshline.yaml is invalid; the message names the file, the line, the key and the reason."""


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SOURCE_KEYS: dict[str, dict[str, Any]] = {
    "sql": {"kind": str, "url": str, "table": str, "query": str, "max_value_mb": (int, float)},
    "http": {"kind": str, "base_url": str, "path": str, "pagination": str, "page_size": int, "rate_per_s": (int, float),
             "burst": int, "max_retries": int, "timeout_s": (int, float), "records_key": str, "next_key": str,
             "cursor_param": str, "page_param": str, "since_param": str, "until_param": str, "limit_param": str,
             "token_env": str, "max_pages": int, "max_response_mb": (int, float), "request_deadline_s": (int, float),
             "max_retry_after_s": (int, float)},
    "files": {"kind": str, "folder": str, "pattern": str},
}
REQUIRED_SOURCE = {"sql": ("url",), "http": ("base_url", "path"), "files": ("folder",)}
OPERATION_KEYS: dict[str, dict[str, Any]] = {
    "partitions": {"start_date": str, "backfill_partitions_per_run": int},
    "warehouse": {"duckdb_memory_limit": str, "connect_attempts": int},
    "alerts": {"format": str},
    "remediation": {"compensation": bool, "sensor_interval_s": int},
    "retention": {"synthetic_days": int, "audit_days": int, "operational_days": int},
    "executor": {"kind": str, "max_concurrent": int},
}
EXECUTORS = ("in_process", "multiprocess", "celery")
AUDIT_RETENTION_DAYS = (90, 365)  # the range the audit log's retention may be set in
BOUNDARY_KEYS = {"contract": str, "contract_version": str, "lookback_hours": (int, float),
                 "volume_tolerance": (int, float), "deadline_minutes": (int, float), "source": dict}


@dataclass(frozen=True)
class Boundary:
    flow: str
    name: str
    contract: str
    contract_version: str | None
    lookback_hours: float
    source: dict[str, Any]
    volume_tolerance: float = 0.5
    deadline_minutes: float = 60.0  # a load still running then is stopped and rolled back
    # Source keys written as `${VAR}` references: the Dagster resource keeps the reference, not the value,
    # so a password in a source URL never reaches Dagster's configuration API.
    source_refs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WarehouseOptions:
    duckdb_memory_limit: str = "128MB"  # past it, DuckDB spills a merge to disk
    connect_attempts: int = 12  # while the DuckDB file is locked or Postgres refuses connections


@dataclass(frozen=True)
class Operations:
    """The blocks of meshline.yaml beside `flows:`, each optional."""

    start_date: str = "2026-01-01"  # the first daily partition
    backfill_partitions_per_run: int = 0  # 0: a backfill is one run over its range; N: runs of up to N days
    warehouse: WarehouseOptions = WarehouseOptions()
    alert_format: str = "slack"  # slack | json, when MESHLINE_ALERT_WEBHOOK_URL is set
    compensation: bool = True  # the compensating-backfill sensor ships running
    sensor_interval_s: int = 30
    synthetic_retention_days: int = 90
    audit_retention_days: int = 365
    operational_retention_days: int = 90  # check results, load log, alerts, resolved records, hygiene runs
    executor: str = "in_process"  # in_process (the run's own process) | multiprocess | celery (Celery workers)
    max_concurrent: int = 0  # steps of one run at once, multiprocess only (0: one per CPU)


@dataclass(frozen=True)
class Config:
    path: Path
    boundaries: dict[str, Boundary] = field(default_factory=dict)
    operations: Operations = Operations()
    rules: dict[str, list[Rule]] = field(default_factory=dict)  # flow -> its declared reconciliation rules
    descriptions: dict[str, str] = field(default_factory=dict)  # flow -> what it is, for its asset group

    @property
    def flows(self) -> list[str]:
        return sorted({b.flow for b in self.boundaries.values()})

    @property
    def warehouse(self) -> WarehouseOptions:
        return self.operations.warehouse

    def flow_boundaries(self, flow: str) -> list[Boundary]:
        return [b for b in self.boundaries.values() if b.flow == flow]


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """meshline.yaml, checked; `${VAR}` expanded from `env` (the settings' captured environment)."""
    env = dict(env or {})
    if not path.exists():
        raise ConfigError(f"{path}: no such configuration file")
    text = path.read_text()
    try:
        node, data = parse_yaml(text)
        lines = key_lines(node, path, ConfigError)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc

    def fail(where: tuple[Any, ...], reason: str) -> ConfigError:
        probe = where
        while probe and probe not in lines:
            probe = probe[:-1]
        line = f":{lines[probe]}" if probe in lines else ""
        return ConfigError(f"{path}{line}: {'.'.join(map(str, where)) or '(top)'}: {reason}")

    def expand(value: Any, where: tuple[Any, ...]) -> Any:
        try:
            return expand_env(value, env)
        except ConfigError as exc:
            raise fail(where, str(exc)) from None

    def check(obj: Any, allowed: dict[str, Any], where: tuple[Any, ...]) -> None:
        if not isinstance(obj, dict):
            raise fail(where, f"expected a mapping, got {type(obj).__name__}")
        for k, v in obj.items():
            if k not in allowed:
                raise fail(where + (k,), f"unknown key (allowed: {', '.join(sorted(allowed))})")
            want = allowed[k]
            if (isinstance(v, bool) and want is not bool) or not isinstance(v, want):
                names = want if isinstance(want, tuple) else (want,)
                raise fail(where + (k,), f"expected {' or '.join(t.__name__ for t in names)}, got {type(v).__name__}")

    check(data, {"version": int, "flows": dict, **dict.fromkeys(OPERATION_KEYS, dict)}, ())
    assert isinstance(data, dict)  # check() refused anything else
    if data.get("version") != 1:
        raise fail(("version",), "expected version: 1")
    operations = _operations(data, check, fail)
    boundaries: dict[str, Boundary] = {}
    flow_specs: dict[str, dict[str, Any]] = {}
    for flow, fdata in (data.get("flows") or {}).items():
        check(fdata, {"boundaries": dict, "rules": dict, "description": str}, ("flows", flow))
        if not _IDENT.fullmatch(str(flow)):
            raise fail(("flows", flow), "a flow's name is a plain name (letters, digits, _)")
        flow_specs[flow] = fdata
        for name, b in (fdata.get("boundaries") or {}).items():
            where = ("flows", flow, "boundaries", name)
            check(b, BOUNDARY_KEYS, where)
            if "source" not in b:
                raise fail(where, "a boundary needs a source")
            src = {k: expand(v, where + ("source", k)) for k, v in b["source"].items()}
            kind = src.get("kind")
            if kind not in SOURCE_KEYS:
                raise fail(where + ("source", "kind"), f"expected one of {', '.join(SOURCE_KEYS)}, got {kind!r}")
            check(src, dict(SOURCE_KEYS[kind]), where + ("source",))
            for req in REQUIRED_SOURCE[kind]:
                if not src.get(req):
                    raise fail(where + ("source", req), f"required for a {kind} source")
            if kind == "sql" and bool(src.get("table")) == bool(src.get("query")):
                raise fail(where + ("source",), "a sql source needs either a table or a query (not both)")
            _check_values(b, src, where, fail)
            if name in boundaries:
                raise fail(where, f"boundary {name!r} is declared twice")
            boundaries[name] = Boundary(flow=flow, name=name, contract=b.get("contract", name),
                                        contract_version=b.get("contract_version"),
                                        lookback_hours=float(b.get("lookback_hours", 6)), source=src,
                                        volume_tolerance=float(b.get("volume_tolerance", 0.5)),
                                        deadline_minutes=float(b.get("deadline_minutes", 60)),
                                        source_refs={k: v for k, v in b["source"].items()
                                                     if isinstance(v, str) and _ENV.search(v)})
    config = Config(path=path, boundaries=boundaries, operations=operations,
                    descriptions={f: d["description"] for f, d in flow_specs.items() if "description" in d})
    _check_contracts(config, fail)
    for flow, fdata in flow_specs.items():
        config.rules[flow] = _rules(config, flow, fdata.get("rules") or {}, fail)
    return config


def _rules(config: Config, flow: str, specs: dict[str, Any], fail: Callable[..., ConfigError]) -> list[Rule]:
    """A flow's reconciliation rules, checked against its boundaries' contracts."""
    from assets.flows.rules import RuleError, parse_rule
    from expectations.registry import Registry

    reg = Registry()
    contracts = {b.name: reg.get(b.contract, b.contract_version) for b in config.flow_boundaries(flow)}
    out = []
    for name, spec in specs.items():
        where = ("flows", flow, "rules", name)
        if not _IDENT.fullmatch(str(name)):
            raise fail(where, "a rule's name is a plain name (letters, digits, _)")
        try:
            out.append(parse_rule(flow, name, spec, contracts, where))
        except RuleError as exc:
            raise fail(exc.where, exc.reason) from None
    return out


# (low, high) of each number a boundary or its source may hold: a value outside fails later, or never
RANGES: dict[str, tuple[float, float]] = {
    "lookback_hours": (0, 24 * 31), "volume_tolerance": (0.01, 100), "deadline_minutes": (1, 24 * 60),
    "page_size": (1, 10_000),
    "rate_per_s": (0.01, 10_000), "burst": (1, 10_000), "max_retries": (0, 20), "timeout_s": (0.1, 600),
    "max_pages": (1, 10_000_000), "max_response_mb": (0.01, 4096), "request_deadline_s": (1, 3600),
    "max_retry_after_s": (0, 86_400), "max_value_mb": (1, 1024),
}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_values(b: dict[str, Any], src: dict[str, Any], where: tuple[Any, ...],
                  fail: Callable[..., ConfigError]) -> None:
    """Values a boundary's keys may hold, refused here rather than when a load runs."""
    for key, value in [*((k, b[k]) for k in ("lookback_hours", "volume_tolerance", "deadline_minutes") if k in b),
                       *((k, src[k]) for k in RANGES if k in src)]:
        lo, hi = RANGES[key]
        at = where + (key,) if key in b else where + ("source", key)
        if not lo <= value <= hi:  # NaN fails too
            raise fail(at, f"expected {lo:g} to {hi:g}, got {value!r}")
    if src.get("kind") == "http" and src.get("pagination", "cursor") not in ("cursor", "page"):
        raise fail(where + ("source", "pagination"), f"expected cursor or page, got {src['pagination']!r}")
    query = src.get("query") if src.get("kind") == "sql" else None
    if query and ";" in query.strip().rstrip(";"):
        raise fail(where + ("source", "query"), "a source query is one SELECT statement (no ';')")
    table = src.get("table") if src.get("kind") == "sql" else None
    if table and not all(_IDENT.fullmatch(part) for part in table.split(".")):
        raise fail(where + ("source", "table"), f"expected a table name or schema.table, got {src['table']!r}")
    if src.get("kind") == "files" and "pattern" in src:
        pattern = src["pattern"]
        if "/" in pattern or "\\" in pattern or pattern.startswith(".."):
            raise fail(where + ("source", "pattern"), f"a file name pattern inside the folder, got {pattern!r}")
    for key in ("cursor_param", "page_param", "since_param", "until_param", "limit_param", "records_key",
                "next_key", "token_env"):
        if key in src and not _IDENT.fullmatch(src[key]):
            raise fail(where + ("source", key), f"expected a plain name, got {src[key]!r}")


def _operations(data: dict[str, Any], check: Callable[..., None], fail: Callable[..., ConfigError]) -> Operations:
    """The optional blocks beside `flows:`, checked; what is not set keeps its default."""
    blocks = {}
    for name, allowed in OPERATION_KEYS.items():
        blocks[name] = data.get(name) or {}
        check(blocks[name], allowed, (name,))
    wh = blocks["warehouse"]
    memory = wh.get("duckdb_memory_limit", WarehouseOptions.duckdb_memory_limit)
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)\s*", memory, re.IGNORECASE):
        raise fail(("warehouse", "duckdb_memory_limit"), f"expected a size such as 128MB or 1GiB, got {memory!r}")
    attempts = wh.get("connect_attempts", WarehouseOptions.connect_attempts)
    if not 1 <= attempts <= 100:
        raise fail(("warehouse", "connect_attempts"), f"expected 1 to 100, got {attempts}")
    start = blocks["partitions"].get("start_date", Operations.start_date)
    try:
        date.fromisoformat(start)
    except ValueError:
        raise fail(("partitions", "start_date"), f"expected a date YYYY-MM-DD, got {start!r}") from None
    per_run = blocks["partitions"].get("backfill_partitions_per_run", Operations.backfill_partitions_per_run)
    if not 0 <= per_run <= 366:
        raise fail(("partitions", "backfill_partitions_per_run"), f"expected 0 (one run) to 366, got {per_run}")
    fmt = blocks["alerts"].get("format", Operations.alert_format)
    if fmt not in ("slack", "json"):
        raise fail(("alerts", "format"), f"expected slack or json, got {fmt!r}")
    interval = blocks["remediation"].get("sensor_interval_s", Operations.sensor_interval_s)
    if not 5 <= interval <= 86_400:
        raise fail(("remediation", "sensor_interval_s"), f"expected 5 to 86400 seconds, got {interval}")
    synthetic = blocks["retention"].get("synthetic_days", Operations.synthetic_retention_days)
    if synthetic < 1:
        raise fail(("retention", "synthetic_days"), f"expected at least 1 day, got {synthetic}")
    operational = blocks["retention"].get("operational_days", Operations.operational_retention_days)
    if operational < 7:
        raise fail(("retention", "operational_days"), f"expected at least 7 days, got {operational}")
    audit = blocks["retention"].get("audit_days", Operations.audit_retention_days)
    lo, hi = AUDIT_RETENTION_DAYS
    if not lo <= audit <= hi:
        raise fail(("retention", "audit_days"), f"expected {lo} to {hi} days, got {audit}")
    kind = blocks["executor"].get("kind", Operations.executor)
    if kind not in EXECUTORS:
        raise fail(("executor", "kind"), f"expected one of {', '.join(EXECUTORS)}, got {kind!r}")
    concurrent = blocks["executor"].get("max_concurrent", Operations.max_concurrent)
    if not 0 <= concurrent <= 256:
        raise fail(("executor", "max_concurrent"), f"expected 0 to 256, got {concurrent}")
    return Operations(start_date=start, backfill_partitions_per_run=per_run,
                      warehouse=WarehouseOptions(memory.strip(), attempts), alert_format=fmt, executor=kind,
                      max_concurrent=concurrent,
                      compensation=blocks["remediation"].get("compensation", True), sensor_interval_s=interval,
                      synthetic_retention_days=synthetic, audit_retention_days=audit,
                      operational_retention_days=operational)


def _check_contracts(config: Config, fail: Callable[..., ConfigError]) -> None:
    from expectations.reasons import ContractError
    from expectations.registry import Registry

    reg = Registry()
    for b in config.boundaries.values():
        where = ("flows", b.flow, "boundaries", b.name, "contract")
        try:
            contract = reg.get(b.contract, b.contract_version)
        except ContractError as exc:
            raise fail(where, str(exc)) from exc
        if contract.boundary_flow != b.flow:  # its assets would land in another flow's group and job
            raise fail(where, f"contract {contract.name} belongs to flow {contract.boundary_flow!r} "
                              f"(its boundary.flow), not {b.flow!r}")


def sandbox_sources(sandbox_dir: Path) -> dict[str, dict[str, str]]:
    """The simulated source systems under MESHLINE_HOME, by boundary: what `sandbox` stands for in each
    source key that may say it (a database `url`, an API `base_url`, a landing `folder`)."""
    from assets.sandbox import LeadHandoffSandbox
    from assets.sandbox.quote_to_cash import QuoteToCashSandbox
    from assets.sandbox.subscription_updates import SubscriptionSandbox

    lh = LeadHandoffSandbox(sandbox_dir)
    q2c = QuoteToCashSandbox(sandbox_dir / "quote_to_cash")
    subs = SubscriptionSandbox(sandbox_dir / "subscription_updates")
    # An API's base URL is only known once its server runs, in the process that reads it: the
    # sources resource starts the billing API over `sandbox_db` there (assets.sandbox.billing_api).
    return {"marketing_leads": {"url": lh.marketing_url}, "crm_leads": {"url": lh.crm_url},
            "crm_opportunities": {"url": q2c.crm_url},
            "billing_invoices": {"url": q2c.billing_url, "base_url": "sandbox", "sandbox_db": str(q2c.billing_path)},
            "product_plan_events": {"folder": str(subs.events_dir)},
            "billing_subscriptions": {"base_url": "sandbox", "sandbox_db": str(subs.billing_path)}}


SANDBOX_KEYS = ("url", "base_url", "folder")


def expand_env(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """`${VAR}` and `${VAR:-default}` in a string replaced from the environment (at run time, where a
    source spec kept its references)."""
    if not isinstance(value, str) or "${" not in value:
        return value
    import os

    env = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        if var in env:
            return env[var]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {var} is not set (and has no :-default)")

    return _ENV.sub(sub, value)


def source_specs(sandbox_dir: Path, config: Config, *, references: bool = False) -> dict[str, dict[str, Any]]:
    """Each boundary's source spec from meshline.yaml, with `sandbox` resolved. With `references`, a value
    meshline.yaml takes from the environment stays a `${VAR}` reference (resolved by `build_source`)."""
    sandbox = sandbox_sources(sandbox_dir)
    specs = {}
    for b in config.boundaries.values():
        spec = dict(b.source)
        for key in SANDBOX_KEYS:
            if spec.get(key) != "sandbox":
                continue
            sim = sandbox.get(b.name, {})
            if key not in sim:
                offers = sorted(n for n, s in sandbox.items() if key in s)
                raise ConfigError(f"{config.path}: flows.{b.flow}.boundaries.{b.name}.source.{key}: the sandbox "
                                  f"simulates no {spec.get('kind')} source for boundary {b.name!r} (it has "
                                  f"{', '.join(offers)})")
            spec[key] = sim[key]
            if key == "base_url":
                spec["sandbox_db"] = sim["sandbox_db"]
        if references:
            spec.update({k: ref for k, ref in b.source_refs.items() if spec.get(k) == b.source.get(k)})
        specs[b.name] = spec
    return specs
