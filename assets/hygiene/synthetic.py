"""Synthetic end-to-end runs: prove, every night, that Meshline still catches every failure mode.

Each run builds an isolated world — its own simulated sources and its own DuckDB warehouse under
`$MESHLINE_HOME/synthetic/<run id>` — injects every failure mode of the seed's playbooks, runs the real
boundary assets and checks through Dagster (runs tagged `meshline/synthetic=<run id>`) and the
compensating-backfill sensor's logic, and scores each mode:

| mode                  | injected                                            | detector                   |
|-----------------------|-----------------------------------------------------|----------------------------|
| missing_record        | MQLs the CRM never gets                             | rule_handed_off            |
| duplicate             | MQLs turned into two CRM leads                      | rule_one_crm_lead          |
| malformed_row         | rows breaking the contracts                         | contract (dead letters)    |
| schema_drift          | a column the CRM starts sending                     | contract (held rows)       |
| late_arrival          | CRM leads arriving after their partition, old token | hygiene lookback, else rule_handed_off |
| dropped_event         | plan changes billing never hears of                 | rule_plan_applied          |
| partial_write         | a day of product events only 30% delivered          | volume                     |
| rate_limit_throttling | billing's API answering 429                         | source_throttling          |
| silent_etl_drop       | CRM leads deleted from the warehouse by "a job"     | rule_handed_off            |

The rule detectors are the shipped meshline.yaml's rules of lead_handoff and subscription_updates (the
world's sources are the sandbox's, whatever the user's configuration points at).

Per mode: injected, detected, false positives, seconds from injection to detection, and how many the
compensating backfill remediated (where a reload can: late arrivals, partial writes, silent drops).
Results go to `meshline.synthetic_runs` and `meshline.synthetic_results` in the main warehouse.
`disabled` switches detectors off, to show that a mode they alone catch is then reported missed.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assets.loading.warehouse import Warehouse
from assets.settings import Settings

if TYPE_CHECKING:  # Dagster is imported when a run starts, not by `meshline synthetic prune`'s parse
    import dagster as dg

MODES = ("missing_record", "duplicate", "malformed_row", "schema_drift", "late_arrival", "dropped_event",
         "partial_write", "rate_limit_throttling", "silent_etl_drop")
DETECTORS = {"missing_record": "rule_handed_off", "duplicate": "rule_one_crm_lead",
             "malformed_row": "contract", "schema_drift": "contract", "late_arrival": "rule_handed_off",
             "dropped_event": "rule_plan_applied", "partial_write": "volume",
             "rate_limit_throttling": "source_throttling", "silent_etl_drop": "rule_handed_off"}
REMEDIABLE = {"late_arrival", "partial_write", "silent_etl_drop"}
SYNTHETIC_TAG = "meshline/synthetic"
DRIFT_COLUMN = "lead_score"
RESULTS_DDL = """CREATE TABLE IF NOT EXISTS meshline.synthetic_results (
    run_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    detector TEXT NOT NULL,
    injected INTEGER NOT NULL,
    detected INTEGER NOT NULL,
    false_positives INTEGER NOT NULL,
    seconds_to_detect DOUBLE PRECISION,
    remediated INTEGER,
    missed BOOLEAN NOT NULL,
    started_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, mode)
)"""


@dataclass
class ModeScore:
    mode: str
    detector: str
    injected: int
    detected: int
    false_positives: int
    seconds_to_detect: float | None
    remediated: int | None  # None: a reload cannot remediate this mode

    @property
    def missed(self) -> bool:
        return self.injected == 0 or self.detected < self.injected


@dataclass
class SyntheticResult:
    run_id: str
    started_at: object
    seconds: float
    scores: list[ModeScore] = field(default_factory=list)

    @property
    def missed(self) -> list[str]:
        return [s.mode for s in self.scores if s.missed]

    @property
    def false_positives(self) -> int:
        return sum(s.false_positives for s in self.scores)


class _World:
    """The isolated sources, warehouse and Dagster plumbing of one run."""

    def __init__(self, root: Path, run_id: str, instance: dg.DagsterInstance, end: date, days: int, seed: int):
        from assets.sandbox import FaultRates, LeadHandoffSandbox
        from assets.sandbox.billing_api import BillingApi
        from assets.sandbox.subscription_updates import SubscriptionFaults, SubscriptionSandbox

        self.root, self.run_id, self.instance = root, run_id, instance
        self.wh_url = f"duckdb:///{root / 'warehouse.duckdb'}"
        self.lh = LeadHandoffSandbox(root / "lead_handoff")
        self.lh_truth = self.lh.generate(end=end, days=days, leads_per_day=40, seed=seed, faults=FaultRates(
            never_synced=0.06, duplicated=0.04, slow=0, malformed_marketing=0.03, malformed_crm=0.02, late=0))
        self.subs = SubscriptionSandbox(root / "subscription_updates")
        self.subs_truth = self.subs.generate(end=end, days=days, accounts_per_day=40, seed=seed, faults=SubscriptionFaults(
            not_reflected=0.06, plan_mismatch=0, duplicate_events=0.03, malformed_lines=0, malformed_events=0,
            malformed_billing=0))
        self.api = BillingApi(self.subs.billing_path, throttle_every=4)
        self.api.start()
        self.keys = [(date.fromisoformat(self.lh_truth["start"]) + timedelta(days=i)).isoformat() for i in range(days)]
        from assets.config import load_config
        from assets.settings import DEFAULT_CONFIG

        self.config = load_config(DEFAULT_CONFIG)
        self.rules = {r.check_name: r for flow in ("lead_handoff", "subscription_updates") for r in self.config.rules[flow]}

    def close(self) -> None:
        self.api.stop()
        self.instance.dispose()

    def resources(self) -> dict[str, Any]:
        from assets.resources import DataDocsResource, SourcesResource, WarehouseResource

        return {"warehouse": WarehouseResource(url=self.wh_url), "data_docs": DataDocsResource(root=str(self.root)),
                "sources": SourcesResource(boundaries={
                    "marketing_leads": {"kind": "sql", "url": self.lh.marketing_url, "table": "marketing_leads"},
                    "crm_leads": {"kind": "sql", "url": self.lh.crm_url, "table": "crm_leads"},
                    "product_plan_events": {"kind": "files", "folder": str(self.subs.events_dir), "pattern": "*.jsonl"},
                    "billing_subscriptions": {"kind": "http", "base_url": self.api.base_url,
                                              "path": "/v1/billing_subscriptions", "page_size": 25, "rate_per_s": 200,
                                              "burst": 20, "backoff_base_s": 0.01, "backoff_cap_s": 0.05}})}

    def materialize(self, flow: str, key: str, tags: dict[str, Any] | None = None) -> dg.ExecuteInProcessResult:
        import dagster as dg

        from assets.flows.declared import build_flow

        assets, checks = build_flow(flow, self.config, dg.DailyPartitionsDefinition(start_date=self.keys[0]), None)
        return dg.materialize([*assets, *checks], partition_key=key, instance=self.instance, raise_on_error=False,
                              resources=self.resources(), tags={SYNTHETIC_TAG: self.run_id, **(tags or {})},
                              run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})


def run_synthetic(settings: Settings, *, disabled: frozenset[str] = frozenset(), days: int = 5, seed: int = 17,
                  keep: bool = False, progress: Callable[[str], None] = print) -> SyntheticResult:
    """One synthetic world, its runs recorded in a Dagster instance of its own (in memory), so the real
    assets' history in the UI never shows a synthetic world's result."""
    import dagster as dg

    from assets.loading import Warehouse
    from assets.remediation.compensation import plan_compensation
    from assets.remediation.state import now

    instance = dg.DagsterInstance.ephemeral()
    run_id = f"syn-{uuid.uuid4().hex[:10]}"
    started, t0 = now(), time.perf_counter()
    root = settings.home / "synthetic" / run_id
    root.mkdir(parents=True, exist_ok=True)
    progress(f"synthetic run {run_id}: building an isolated sandbox and warehouse under {root}")
    w = _World(root, run_id, instance, date.today() - timedelta(days=1), days, seed)
    stamp: dict[str, float] = {}

    def mark(name: str) -> None:
        stamp[name] = time.perf_counter()

    try:
        lh_t, subs_t = w.lh_truth, w.subs_truth
        never = list(lh_t["never_synced"])
        late, missing = set(never[::2]), set(never[1::2])
        # partial_write: the last day's product events, only 30% delivered for now
        last = w.keys[-1]
        day_file = w.subs.events_dir / f"events-{last}.jsonl"
        lines = day_file.read_text().splitlines()
        cut = max(1, int(len(lines) * 0.3))
        day_file.write_text("\n".join(lines[:cut]) + "\n")
        held_back = lines[cut:]
        mark("generated")

        progress(f"  pass 1: {len(w.keys)} daily partitions of lead_handoff and subscription_updates")
        for key in w.keys:
            w.materialize("lead_handoff", key)
            w.materialize("subscription_updates", key)
        mark("pass1")

        # Faults that happen after the first load.
        w.lh.hand_off_late(sorted(late))  # late_arrival: old change tokens
        wh = Warehouse(w.wh_url)
        with wh.transaction() as tx:  # silent_etl_drop: "a job" deletes loaded CRM leads, no error anywhere
            victims = tx.query(
                "SELECT c.crm_lead_id, c.marketing_lead_id FROM raw.crm_leads c JOIN meshline.watermarks m ON"
                " m.asset = 'crm_leads' AND c.updated_at >= CAST(m.partition_key AS TIMESTAMP) AND"
                " c.updated_at < CAST(m.partition_key AS TIMESTAMP) + INTERVAL 1 DAY AND c.updated_at <"
                " m.watermark - INTERVAL 7 HOUR WHERE c.marketing_lead_id IS NOT NULL AND c.status = 'open'"
                f" AND c.marketing_lead_id NOT IN ({', '.join(str(x) for x in lh_t['duplicated'] + never) or '0'})"
                " AND CAST(m.partition_key AS DATE) < ? ORDER BY c.crm_lead_id LIMIT 3",
                (date.fromisoformat(last) - timedelta(days=1),))
            for crm_id, _ in victims:
                tx.execute("DELETE FROM raw.crm_leads WHERE crm_lead_id = ?", (crm_id,))
        dropped = {int(m) for _, m in victims}
        mark("injected")

        progress("  pass 2: nightly hygiene over every partition")
        for key in w.keys:
            w.materialize("lead_handoff", key, {"meshline/pass": "hygiene"})
            w.materialize("subscription_updates", key, {"meshline/pass": "hygiene"})
        mark("pass2")

        findings = _detect(w, wh, disabled)
        throttled_served = w.api.throttled  # what the API had refused by the time the detectors ran
        with wh.session() as s:
            caught_late = {int(m) for (m,) in s.query(  # late leads the hygiene pass's lookback already loaded
                "SELECT marketing_lead_id FROM raw.crm_leads WHERE owner = 'rep_late'")} & late
        # remediation: the rest of the partial day arrives; the sensor's logic launches compensating runs
        (w.subs.events_dir / f"events-{last}-redelivered.jsonl").write_text("\n".join(held_back) + "\n")
        flow_jobs = {"lead_handoff": "lead_handoff", "subscription_updates": "subscription_updates"}
        launched = 0
        for _ in range(2):
            reqs, _ = plan_compensation(wh, instance, flow_jobs, None)
            for r in reqs:
                assert r.job_name is not None and r.partition_key is not None  # compensation names both
                res = w.materialize(r.job_name, r.partition_key, dict(r.tags))
                launched += 1
                # the launched run carries the remediation tag: the next tick sees it finished
                assert res.dagster_run.tags.get("meshline/remediation") == r.tags["meshline/remediation"]
        progress(f"  remediation: {launched} compensating run(s)")
        after = _detect(w, wh, frozenset())
        mark("remediated")

        # schema_drift, last: the CRM starts sending a column no contract version lists
        import duckdb

        with duckdb.connect(str(w.lh.paths.crm)) as con:
            con.execute(f"ALTER TABLE crm_leads ADD COLUMN {DRIFT_COLUMN} INTEGER")
            # ... and a new version of one lead, so that the next load reads a row carrying it
            row, lead, mkt, newest = con.execute(
                "SELECT max(row_id) + 1, arg_max(crm_lead_id, updated_at), arg_max(marketing_lead_id, updated_at),"
                " max(updated_at) FROM crm_leads").fetchall()[0]
            con.execute(f"INSERT INTO crm_leads (row_id, crm_lead_id, marketing_lead_id, owner, status, created_at,"
                        f" updated_at, {DRIFT_COLUMN}) VALUES (?, ?, ?, 'rep_1', 'working', ?, ?, 42)",
                        [row, lead, mkt, newest, newest + timedelta(microseconds=1)])
        mark("drift_injected")
        w.materialize("lead_handoff", last, {"meshline/pass": "hygiene"})
        with wh.session() as s:
            held = {c for (cols,) in s.query("SELECT DISTINCT unknown_columns FROM meshline.held_rows")
                    for c in cols.split(",")} if wh.table_exists("meshline", "held_rows") else set()
        drift_found = set() if "contract" in disabled else held
        mark("drift_detected")

        def score(mode: str, injected: set[Any], found: set[Any], universe: set[Any], t_inject: str, t_detect: str,
                  remediated: int | None = None) -> ModeScore:
            det = len(set(injected) & set(found))
            return ModeScore(mode, DETECTORS[mode], len(injected), det, len(set(found) - set(universe)),
                             round(stamp[t_detect] - stamp[t_inject], 2) if det else None, remediated)

        missing_all = missing | late | dropped
        f = findings
        scores = [
            score("missing_record", missing, f["missing"] & missing, missing_all | f["missing"], "generated", "pass2"),
            score("duplicate", set(lh_t["duplicated"]), f["duplicated"], set(lh_t["duplicated"]), "generated", "pass2"),
            score("malformed_row", {(m["system"], str(m["row_id"])) for m in lh_t["malformed"]}, f["dead_letters"],
                  {(m["system"], str(m["row_id"])) for m in lh_t["malformed"]}, "generated", "pass1"),
            score("schema_drift", {DRIFT_COLUMN}, drift_found, {DRIFT_COLUMN}, "drift_injected", "drift_detected"),
            score("late_arrival", late, (f["missing"] & late) | caught_late, missing_all, "injected", "pass2",
                  len(late - after["missing"])),
            # Accounts whose newest plan events the partial write held back: billing rightly holds a plan
            # the loaded events do not show yet, which the rule reports; not a false positive.
            score("dropped_event", set(subs_t["not_reflected"]), f["not_reflected"],
                  set(subs_t["not_reflected"]) | {json.loads(line)["account_id"] for line in held_back},
                  "generated", "pass2"),
            score("partial_write", {last}, f["volume"], {last}, "generated", "pass1",
                  int(last not in after["volume_now"])),
            score("rate_limit_throttling", set(range(throttled_served)), set(range(f["throttled"])),
                  set(range(throttled_served)), "generated", "pass1"),
            score("silent_etl_drop", dropped, f["missing"] & dropped, missing_all, "injected", "pass2",
                  len(dropped - after["missing"])),
        ]
        # false positives of the shared missing-record detector: whatever it found beyond every injection
        extra = len(f["missing"] - missing_all)
        for s_ in scores:
            if s_.detector == "rule_handed_off":
                s_.false_positives = extra
    finally:
        w.close()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    result = SyntheticResult(run_id, started, time.perf_counter() - t0, scores)
    _store(settings.warehouse(), result)
    return result


def _detect(w: _World, wh: Warehouse, disabled: frozenset[str]) -> dict[str, Any]:
    """What the detectors report over the isolated warehouse right now."""
    import dagster as dg

    from assets.flows.rules import evaluate

    out: dict[str, Any] = {"missing": set(), "duplicated": set(), "not_reflected": set(), "dead_letters": set(),
                           "volume": set(), "volume_now": set(), "throttled": 0}
    for detector, found in (("rule_handed_off", "missing"), ("rule_one_crm_lead", "duplicated")):
        if detector not in disabled:
            for key in w.keys:
                out[found] |= set(evaluate(wh, w.rules[detector], key).failing_keys)
    if "rule_plan_applied" not in disabled:
        with wh.session() as s:  # the rule names events; the sandbox's truth names their accounts
            account = dict(s.query("SELECT event_id, account_id FROM raw.product_plan_events"))
        for key in w.keys:
            out["not_reflected"] |= {account[e] for e in evaluate(wh, w.rules["rule_plan_applied"], key).failing_keys}
    with wh.session() as s:
        if "contract" not in disabled:
            out["dead_letters"] = {(sys_, str(json.loads(loc).get("row_id"))) for sys_, loc in s.query(
                "SELECT source_system, locator FROM meshline.dead_letters WHERE flow = 'lead_handoff'")}
        vol = s.query("SELECT partition_key, passed, evaluated_at FROM meshline.check_results WHERE"
                      " check_name = 'volume_product_plan_events' ORDER BY evaluated_at")
    if "volume" not in disabled:
        out["volume"] = {p for p, passed, _ in vol if not passed}
        latest = {}
        for p, passed, _ in vol:
            latest[p] = passed
        out["volume_now"] = {p for p, passed in latest.items() if not passed}
    if "source_throttling" not in disabled:
        for rec in w.instance.get_runs(filters=dg.RunsFilter(tags={SYNTHETIC_TAG: w.run_id})):
            for ev in w.instance.get_records_for_run(
                    rec.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
                mat = ev.event_log_entry.asset_materialization
                md = mat.metadata if mat else {}
                if "source_throttled" in md:
                    out["throttled"] += int(str(md["source_throttled"].value))
    return out


def _store(wh: Warehouse, r: SyntheticResult) -> None:
    from assets.remediation.state import audit, ensure, now

    with wh.transaction() as tx:
        ensure(tx)
        tx.execute(RESULTS_DDL)
        for s in r.scores:
            tx.execute("INSERT INTO meshline.synthetic_results (run_id, mode, detector, injected, detected,"
                       " false_positives, seconds_to_detect, remediated, missed, started_at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (r.run_id, s.mode, s.detector, s.injected, s.detected, s.false_positives, s.seconds_to_detect,
                        s.remediated, s.missed, r.started_at))
        tx.execute("INSERT INTO meshline.synthetic_runs (run_id, started_at, finished_at, modes_injected,"
                   " modes_detected, false_positives, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (r.run_id, r.started_at, now(), len(r.scores), len(r.scores) - len(r.missed), r.false_positives,
                    "passed" if not r.missed and not r.false_positives else "failed"))
        audit(tx, "synthetic", "synthetic.run", r.run_id, {"missed": r.missed, "false_positives": r.false_positives})


def prune(settings: Settings, *, instance: dg.DagsterInstance | None = None, days: int = 90,
          at: datetime | None = None) -> dict[str, int]:
    """Delete synthetic results older than `days` and the Dagster runs (with their event logs) of the
    synthetic job created before then: open-source Dagster keeps them forever otherwise."""
    import dagster as dg

    from assets.loading import Warehouse
    from assets.remediation.state import audit, ensure, now

    if days < 1:
        raise ValueError("the synthetic retention must be at least one day")
    at = at or now()
    cutoff = at - timedelta(days=days)
    wh = Warehouse(settings.warehouse_url, redaction_key=settings.key)
    with wh.transaction() as tx:
        ensure(tx)
        tx.execute(RESULTS_DDL)
        n_res = tx.scalar("SELECT count(*) FROM meshline.synthetic_results WHERE started_at < ?", (cutoff,))
        n_runs = tx.scalar("SELECT count(*) FROM meshline.synthetic_runs WHERE started_at < ?", (cutoff,))
        tx.execute("DELETE FROM meshline.synthetic_results WHERE started_at < ?", (cutoff,))
        tx.execute("DELETE FROM meshline.synthetic_runs WHERE started_at < ?", (cutoff,))
        instance = instance or dg.DagsterInstance.get()
        from datetime import UTC

        old = [r for r in instance.get_run_records(filters=dg.RunsFilter(created_before=cutoff.replace(tzinfo=UTC)))
               if r.dagster_run.tags.get("meshline/pass") == "synthetic"]
        for rec in old:
            instance.delete_run(rec.dagster_run.run_id)
        audit(tx, "synthetic", "synthetic.prune", "meshline.synthetic_runs",
              {"results": int(n_res), "runs": int(n_runs), "dagster_runs": len(old), "days": days}, at)
    for d in (settings.home / "synthetic").glob("syn-*") if (settings.home / "synthetic").exists() else []:
        if d.is_dir() and d.stat().st_mtime < time.time() - days * 86400:
            shutil.rmtree(d, ignore_errors=True)
    return {"results": int(n_res), "runs": int(n_runs), "dagster_runs": len(old)}
