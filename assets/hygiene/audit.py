"""`meshline audit`: the seed's 12-point checklist, evaluated against the real configuration and state.

Each item is Y or N with its evidence. The command exits 1 when a critical item is N (and 0 otherwise),
so it can gate a deployment. Items read the settings, meshline.yaml, the contract registry and the
warehouse's `meshline.*` tables; nothing is loaded or validated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from assets.loading.warehouse import Warehouse
from assets.settings import Settings

PII_NAME = re.compile(r"(^|_)(email|e_mail|phone|first_name|last_name|full_name|ssn|address)($|_)")
SYNTHETIC_MAX_AGE = timedelta(hours=26)


@dataclass(frozen=True)
class Item:
    number: int
    name: str
    critical: bool
    ok: bool
    evidence: str


class Context:
    def __init__(self, settings: Settings):
        from expectations.registry import Registry

        self.settings = settings
        self.config = settings.config()
        reg = Registry()
        self.contracts = {b.name: reg.get(b.contract, b.contract_version) for b in self.config.boundaries.values()}
        self.flows = sorted({b.flow for b in self.config.boundaries.values()})
        # not settings.warehouse(): the audit reads, and reports a missing redaction key as item 12
        self.wh = Warehouse(settings.warehouse_url, redaction_key=settings.key)

    def exists(self, schema: str, table: str) -> bool:
        return self.wh.table_exists(schema, table)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.wh.session() as s:
            return s.query(sql, params)


def _contracts_cataloged(c: Context) -> tuple[bool, str]:
    if not c.exists("meshline", "contracts"):
        return False, "meshline.contracts does not exist: run `meshline contracts publish`"
    published = {(n, v) for n, v in c.query("SELECT contract, version FROM meshline.contracts WHERE pinned")}
    missing = [f"{k.name} {k.version}" for k in c.contracts.values() if (k.name, k.version) not in published]
    if missing:
        return False, f"not published as pinned: {', '.join(missing)} (run `meshline contracts publish`)"
    return True, f"all {len(c.contracts)} boundaries' contracts published with owners, severity and SLOs"


def _flows_scored(c: Context) -> tuple[bool, str]:
    if not c.exists("marts", "hygiene_scorecard"):
        return False, "marts.hygiene_scorecard does not exist: run the dbt build"
    scored = {f for (f,) in c.query("SELECT DISTINCT flow FROM marts.hygiene_scorecard")}
    missing = [f for f in c.flows if f not in scored]
    if missing:
        return False, f"flows without a score: {', '.join(missing)}"
    unruled = [f for f in c.flows if not c.config.rules.get(f)]
    if unruled:
        return False, f"flows with no reconciliation rule in meshline.yaml: {', '.join(unruled)}"
    declared = {(f, r.name) for f in c.flows for r in c.config.rules[f]}
    judged = {(f, r): (int(n), int(x or 0)) for f, r, n, x in c.query(
        "SELECT flow, rule, count(*), sum(failing) FROM meshline.rule_findings GROUP BY flow, rule")
        } if c.exists("meshline", "rule_findings") else {}
    never = sorted(f"{f}.{r}" for f, r in declared - set(judged))
    if never:
        return False, f"rules never evaluated: {', '.join(never)} (run the flows' jobs)"
    failing = sum(x for k, (_, x) in judged.items() if k in declared)
    return True, (f"marts.hygiene_scorecard scores {len(c.flows)} flow(s): {', '.join(c.flows)}; "
                  f"{len(declared)} rule(s) evaluated, {failing} record(s) failing as last judged")


def _centralized_metrics(c: Context) -> tuple[bool, str]:
    if not (c.exists("meshline", "load_log") and c.exists("meshline", "check_results")):
        return False, "meshline.load_log or meshline.check_results does not exist yet"
    logged = {a for (a,) in c.query("SELECT DISTINCT asset FROM meshline.load_log")}
    checked = {a for (a,) in c.query("SELECT DISTINCT asset FROM meshline.check_results")}
    missing = sorted(set(c.contracts) - (logged & checked))
    if missing:
        return False, f"boundaries with no load or check recorded: {', '.join(missing)}"
    n = c.query("SELECT count(*) FROM meshline.check_results")[0][0]
    return True, f"every boundary's loads in meshline.load_log and {n} check outcomes in meshline.check_results"


def _dead_letter_alerting(c: Context) -> tuple[bool, str]:
    without = [n for n, k in c.contracts.items()
               if not any(s in k.slos for s in ("dead_letter_rate_max", "dead_letter_count_max"))]
    if without:
        return False, f"contracts with no dead-letter threshold: {', '.join(without)}"
    if not c.settings.alert_webhook_url:
        return False, "dead letters are queued, but pages only go to the log: set MESHLINE_ALERT_WEBHOOK_URL"
    kind = c.config.operations.alert_format
    return True, f"meshline.dead_letters with thresholds on every contract; pages to a {kind} webhook"


def _daily_synthetic(c: Context) -> tuple[bool, str]:
    from assets.remediation.state import now

    if not c.exists("meshline", "synthetic_runs"):
        return False, "no synthetic end-to-end run has ever been recorded (meshline.synthetic_runs)"
    last = c.query("SELECT max(started_at) FROM meshline.synthetic_runs")[0][0]
    if last is None or now() - last > SYNTHETIC_MAX_AGE:
        return False, f"last synthetic run {last or 'never'}: older than {SYNTHETIC_MAX_AGE.total_seconds() / 3600:.0f} h"
    return True, f"last synthetic run {last:%Y-%m-%d %H:%M} UTC"


def _both_sides(c: Context) -> tuple[bool, str]:
    thin = []
    for flow in c.flows:
        sides = [b for b in c.config.flow_boundaries(flow) if c.contracts[b.name].columns]
        if len(sides) < 2:
            thin.append(flow)
    if thin:
        return False, f"flows validated on one side only: {', '.join(thin)}"
    return True, f"{len(c.flows)} flow(s), each with a contract on its source and its destination side"


def _idempotency(c: Context) -> tuple[bool, str]:
    bad = [n for n, k in c.contracts.items() if not (k.idempotency_key and k.change_token)]
    if bad:
        return False, f"contracts without an idempotency key or change token: {', '.join(bad)}"
    from assets.loading.warehouse import ident

    loaded = {t for (t,) in c.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'")}
    keys = {k.name: k.idempotency_key for k in c.contracts.values()}
    unkeyed = sorted(t for t in loaded if t not in keys)
    if c.wh.dialect == "postgres":  # the key is the primary key
        pk = {t for (t,) in c.query(
            "SELECT table_name FROM information_schema.table_constraints WHERE table_schema = 'raw'"
            " AND constraint_type = 'PRIMARY KEY'")}
        unkeyed += sorted(t for t in loaded if t in keys and t not in pk)
        how = "keyed on it"
    else:  # DuckDB raw tables carry no index (see assets/loading/ddl.py): the merge keeps keys unique
        for t in sorted(loaded & keys.keys()):
            k = ident(keys[t])
            if c.query(f"SELECT count(*) - count(DISTINCT {k}) FROM raw.{ident(t)}")[0][0]:
                unkeyed.append(f"{t} (repeated {k})")
        how = "with one row per key"
    if unkeyed:
        return False, f"raw tables not keyed on a contract's idempotency key: {', '.join(unkeyed)}"
    return True, (f"every contract names its idempotency key and change token; {len(loaded)} raw table(s) {how};"
                  " newest change token wins")


def _retries(c: Context) -> tuple[bool, str]:
    no_retry = [b.name for b in c.config.boundaries.values()
                if b.source.get("kind") == "http" and int(b.source.get("max_retries", 6)) < 1]
    if no_retry:
        return False, f"HTTP sources configured with no retry: {', '.join(no_retry)}"
    attempts = c.config.warehouse.connect_attempts
    if attempts < 2:
        return False, "warehouse connections are not retried (meshline.yaml warehouse.connect_attempts < 2)"
    return True, ("HTTP sources (429/5xx/timeouts, Retry-After), unreachable sources (asset retry policy, "
                  f"exponential with jitter), warehouse connections ({attempts} attempts), webhooks")


def _on_call(c: Context) -> tuple[bool, str]:
    bad = [n for n, k in c.contracts.items() if "@" not in (k.owners.get("contract") or "") or not k.runbook]
    if bad:
        return False, f"contracts without an owner e-mail or a runbook: {', '.join(bad)}"
    return True, f"every contract names its owner and runbook ({len(c.contracts)} contracts)"


def _backfill_tools(c: Context) -> tuple[bool, str]:
    if not c.config.operations.compensation:
        return False, "meshline.yaml remediation.compensation is false: the compensating-backfill sensor is stopped"
    return True, "the compensating_backfill sensor (capped, with backoff) and `meshline dlq replay`"


def _postmortems(c: Context) -> tuple[bool, str]:
    if not c.exists("meshline", "incidents"):
        return True, "no incident has been recorded"
    missing = [i for (i,) in c.query("SELECT incident_id FROM meshline.incidents WHERE severity = 'P1' AND"
                                     " status = 'resolved' AND postmortem IS NULL")]
    if missing:
        return False, (f"{len(missing)} resolved P1 incident(s) without a postmortem (meshline incidents "
                       f"postmortem ID --url URL): {', '.join(missing[:5])}")
    n = c.query("SELECT count(*) FROM meshline.incidents WHERE severity = 'P1' AND status = 'resolved'")[0][0]
    return True, f"{n} resolved P1 incident(s), each with its postmortem"


def _pii_and_audit(c: Context) -> tuple[bool, str]:
    from assets.remediation.state import verify_audit_log

    unmarked = [f"{n}.{col.name}" for n, k in c.contracts.items() for col in k.columns
                if PII_NAME.search(col.name) and not col.pii]
    if unmarked:
        return False, f"columns that look like PII but are not marked pii: {', '.join(unmarked)}"
    if not c.settings.redaction_key:
        return False, "MESHLINE_REDACTION_KEY is not set: redaction uses the development key"
    problems = verify_audit_log(c.wh)
    if problems:
        return False, f"the audit log was tampered with: {problems[0]}"
    n_pii = sum(len(k.pii_columns) for k in c.contracts.values())
    return True, f"{n_pii} PII column(s) redacted outside raw with a keyed HMAC; the audit log verifies"


CHECKLIST: list[tuple[str, bool, Callable[[Context], tuple[bool, str]]]] = [
    ("contracts cataloged", True, _contracts_cataloged),
    ("critical flows scored", True, _flows_scored),
    ("centralized metrics", False, _centralized_metrics),
    ("dead-letter queues with alerting", True, _dead_letter_alerting),
    ("daily synthetic tests", False, _daily_synthetic),
    ("schema validation on both sides", True, _both_sides),
    ("idempotency tokens", True, _idempotency),
    ("automatic retries with backoff", False, _retries),
    ("named on-call path", True, _on_call),
    ("backfill tools", False, _backfill_tools),
    ("postmortems", False, _postmortems),
    ("PII and audit controls", True, _pii_and_audit),
]


def evaluate(settings: Settings) -> list[Item]:
    ctx = Context(settings)
    items = []
    for i, (name, critical, fn) in enumerate(CHECKLIST, start=1):
        try:
            ok, evidence = fn(ctx)
        except Exception as exc:  # an item that cannot be evaluated is not met; say why
            ok, evidence = False, f"could not be evaluated: {type(exc).__name__}: {exc}"
        items.append(Item(i, name, critical, ok, evidence))
    return items
