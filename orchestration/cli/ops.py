"""`meshline dlq` and `meshline incidents`: the dead-letter queue and incidents, from the command line.

    meshline dlq list    [--flow F] [--asset A] [--partition P] [--reason R] [--older-than 6h] [--status S] [--limit N]
    meshline dlq show    ID                       (an id prefix will do)
    meshline dlq replay  [same filters]           re-read the selected dead letters' partitions from their sources
    meshline dlq resolve ID [ID ...] --note TEXT  mark resolved by hand
    meshline incidents   [--all] [--limit N]      open and recent incidents, and MTTR per contract and severity

They read MESHLINE_WAREHOUSE_URL (and, for replay, meshline.yaml's sources). Nothing here imports
Dagster or Great Expectations, so the commands that validate nothing start in well under a second.
Every action that changes something is written to `meshline.audit_log` with the acting user.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from assets.settings import Settings

if TYPE_CHECKING:  # the loader brings pyarrow: `meshline dlq list` does not import it
    from assets.loading.loader import LoadResult
    from assets.loading.warehouse import Tx


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name (a container without one)
        return "cli:unknown"


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flow")
    p.add_argument("--asset", help="boundary, e.g. crm_leads")
    p.add_argument("--partition", help="partition key, e.g. 2026-03-10")
    p.add_argument("--reason", help="reason code, e.g. invalid_format")
    p.add_argument("--older-than", help="first seen at least this long ago: 90m, 6h, 2d")


def _make_filters(args, status: str | None = "open"):
    from assets.remediation.dlq import Filters, parse_age

    return Filters(flow=args.flow, asset=args.asset, partition=args.partition, reason=args.reason,
                   older_than=parse_age(args.older_than) if args.older_than else None, status=status)


def compensating_loader(settings: Settings) -> Callable[[str, str, str, Callable[[Tx], None]], LoadResult]:
    """(asset, partition, run_id) → LoadResult: a full-refresh reload of one boundary partition, through
    the source meshline.yaml configures for it."""
    from assets.config import source_specs
    from assets.loading import load_partition
    from assets.loading.watermark import daily_window
    from assets.sources import build_source
    from expectations.registry import Registry

    config = settings.config()
    specs = source_specs(settings.sandbox_dir, config)
    registry = Registry()
    wh = settings.warehouse(config)

    def load(asset: str, partition: str, run_id: str, before_commit: Callable[[Tx], None]) -> LoadResult:
        b = config.boundaries.get(asset)
        if b is None:
            raise SystemExit(f"meshline dlq replay: no boundary {asset!r} in {config.path}")
        contract = registry.get(b.contract, b.contract_version)
        source = build_source(specs[asset], system=contract.source_system, table=contract.source_table)
        return load_partition(wh, source, contract, partition_key=partition, window=daily_window(partition),
                              run_id=run_id, lookback=timedelta(hours=b.lookback_hours),
                              full_refresh=True, before_commit=before_commit)

    return load


def dlq(argv: list[str]) -> int:
    from assets.loading import Warehouse
    from assets.remediation import dlq as q

    p = argparse.ArgumentParser(prog="meshline dlq", description="The dead-letter queue.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="dead letters, newest first")
    _filters(ls)
    ls.add_argument("--status", default="open", help="open (default), resolved, or any")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    sh = sub.add_parser("show", help="one dead letter, whole (its payload is redacted)")
    sh.add_argument("id")
    rp = sub.add_parser("replay", help="re-read the selected open dead letters' partitions from their sources")
    _filters(rp)
    rs = sub.add_parser("resolve", help="mark open dead letters resolved by hand")
    rs.add_argument("ids", nargs="+")
    rs.add_argument("--note", required=True, help="why (kept in the dead letter and the audit log)")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    wh = Warehouse(settings.warehouse_url, redaction_key=settings.key)
    try:
        if args.cmd == "list":
            f = _make_filters(args, None if args.status == "any" else args.status)
            total, rows = q.list_dead_letters(wh, f, args.limit)
            if args.json:
                for r in rows:
                    print(json.dumps(r, default=str, sort_keys=True))
                return 0
            print(f"{total} dead letter(s){' (showing ' + str(len(rows)) + ')' if total > len(rows) else ''}")
            if rows:
                print(f"{'id':<12} {'asset':<22} {'partition':<10} {'reason':<17} {'status':<8} {'locator':<28} first seen")
            for r in rows:
                print(f"{r['dead_letter_id'][:12]:<12} {r['asset']:<22} {r['partition_key']:<10} {r['reason_code']:<17} "
                      f"{r['status']:<8} {str(r['source_locator'] or '-')[:28]:<28} {r['first_seen_at']:%Y-%m-%d %H:%M}")
            return 0
        if args.cmd == "show":
            d = q.show(wh, args.id)
            if d is None:
                print(f"meshline dlq show: no single dead letter with id {args.id!r}", file=sys.stderr)
                return 2
            for k, v in d.items():
                print(f"{k:>17}  {v}")
            return 0
        if args.cmd == "replay":
            rep = q.replay(wh, _make_filters(args), compensating_loader(settings), _actor())
            print(f"replay {rep.run_id}: {rep.selected} selected in {rep.partitions} partition(s); {rep.resolved} "
                  f"resolved, {rep.still_open} still open; {rep.rows_loaded} row(s) loaded")
            return 0
        if args.cmd == "resolve":
            n = q.resolve(wh, args.ids, args.note, _actor())
            print(f"{n} dead letter(s) resolved" + (f"; {len(args.ids) - n} not open or not found"
                                                    if n < len(args.ids) else ""))
            return 0 if n == len(args.ids) else 1
    except ValueError as exc:
        print(f"meshline dlq: {exc}", file=sys.stderr)
        return 2
    return 2


def incidents(argv: list[str]) -> int:
    from assets.loading import Warehouse
    from assets.loading.ddl import META_SCHEMA
    from assets.remediation.state import mttr, now

    if argv[:1] == ["postmortem"]:
        from assets.remediation.state import record_postmortem

        pm = argparse.ArgumentParser(prog="meshline incidents postmortem",
                                     description="Link a resolved incident to its postmortem write-up.")
        pm.add_argument("incident_id")
        pm.add_argument("--url", required=True, help="where the postmortem lives")
        a = pm.parse_args(argv[1:])
        ok = record_postmortem(Warehouse(Settings.from_env().warehouse_url), a.incident_id, a.url, _actor())
        print(f"postmortem recorded for {a.incident_id}" if ok else
              f"meshline incidents postmortem: no resolved incident {a.incident_id!r}", file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 2
    p = argparse.ArgumentParser(prog="meshline incidents", description="Open and recent incidents, and MTTR. "
                                "`meshline incidents postmortem ID --url URL` links a resolved one to its write-up.")
    p.add_argument("--all", action="store_true", help="every incident, not only open and the last 7 days'")
    p.add_argument("--limit", type=int, default=50)
    args = p.parse_args(argv)
    wh = Warehouse(Settings.from_env().warehouse_url)
    if not wh.table_exists(META_SCHEMA, "incidents"):
        print("no incidents recorded yet")
        return 0
    at = now()
    where = "" if args.all else "WHERE status = 'open' OR opened_at >= ?"
    params = () if args.all else (at - timedelta(days=7),)
    with wh.session() as s:
        rows = s.query(f"SELECT incident_id, severity, status, contract, check_name, partition_key, opened_at,"
                       f" minutes_to_resolve, escalated_at FROM {META_SCHEMA}.incidents {where}"
                       f" ORDER BY status DESC, opened_at DESC LIMIT {int(args.limit)}", params)
    n_open = sum(1 for r in rows if r[2] == "open")
    print(f"{n_open} open, {len(rows) - n_open} resolved (shown: {'all' if args.all else 'open and last 7 days'})")
    if rows:
        print(f"{'incident':<16} {'sev':<3} {'status':<8} {'contract':<22} {'check':<34} {'partition':<10} "
              f"{'opened':<16} {'open for':>9}")
    for iid, sev, status, contract, check, part, opened, minutes, escalated in rows:
        span = minutes if minutes is not None else (at - opened).total_seconds() / 60
        print(f"{iid:<16} {sev:<3} {status:<8} {contract:<22} {check[:34]:<34} {part:<10} {opened:%Y-%m-%d %H:%M} "
              f"{_dur(span):>9}{' ESCALATED' if escalated else ''}")
    table = mttr(wh)
    if table:
        print("\nMTTR (resolved incidents):")
        for contract, sev, n, m in table:
            print(f"  {contract:<22} {sev}  {n:>4} resolved  mean {_dur(m or 0)}")
    return 0


def _dur(minutes: float) -> str:
    if minutes < 90:
        return f"{minutes:.0f}m"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f}h"
    return f"{minutes / 1440:.1f}d"


def audit_log(argv: list[str]) -> int:
    from assets.remediation.state import audit_head, prune_audit_log, verify_audit_log

    p = argparse.ArgumentParser(prog="meshline audit-log", description=(
        "The append-only audit log (meshline.audit_log): each row carries an HMAC, keyed by a secret derived "
        "from MESHLINE_REDACTION_KEY, of itself and the row before it."))
    sub = p.add_subparsers(dest="cmd", required=True)
    ver = sub.add_parser("verify", help="exit 1 when a row was edited, deleted, reordered or recomputed")
    ver.add_argument("--head", help="a head printed earlier by `meshline audit-log head`: also exit 1 when the "
                                    "rows up to it were cut")
    sub.add_parser("head", help="print the newest row's <seq>:<hash>; keep it outside the warehouse")
    pr = sub.add_parser("prune", help="delete rows older than the retention, keeping the chain verifiable")
    pr.add_argument("--days", type=int, help="retention in days, 90..365 (default: meshline.yaml's "
                                             "retention.audit_days, else 365)")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    config = settings.config()
    wh = settings.warehouse(config)
    try:
        if args.cmd == "head":
            head = audit_head(wh)
            print(head or "the audit log is empty")
            return 0 if head else 1
        if args.cmd == "verify":
            problems = verify_audit_log(wh, head=args.head)
            with wh.session() as s:
                n = s.scalar("SELECT count(*) FROM meshline.audit_log")
            if problems:
                print(f"audit log TAMPERED: {len(problems)} problem(s) in {n} row(s)")
                for line in problems[:50]:
                    print(f"  {line}")
                return 1
            print(f"audit log intact: {n} row(s), every one chained to the one before")
            return 0
        days = args.days if args.days is not None else config.operations.audit_retention_days
        n = prune_audit_log(wh, days, _actor())
        print(f"pruned {n} audit row(s) older than {days} days")
        return 0
    except ValueError as exc:
        print(f"meshline audit-log: {exc}", file=sys.stderr)
        return 2
