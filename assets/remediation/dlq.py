"""Dead-letter queue tooling: list, show, replay, resolve — every action written to the audit log.

Replay is the compensating action for the partitions the selected dead letters belong to: each
(asset, partition) is re-extracted from its source regardless of the watermark, in one transaction;
records that now pass the contract are loaded, and their dead letters (matched by source locator)
are marked resolved with the replay's run id. Records still invalid stay open. Replaying twice changes
nothing the first replay did not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from assets.loading.ddl import META_SCHEMA, ensure_meta
from assets.loading.warehouse import Tx, Warehouse
from assets.remediation.state import audit, ensure, now

if TYPE_CHECKING:  # the loader brings pyarrow: imported by the replay's caller, not by `meshline dlq list`
    from assets.loading.loader import LoadResult


@dataclass(frozen=True)
class Filters:
    flow: str | None = None
    asset: str | None = None
    partition: str | None = None
    reason: str | None = None
    older_than: timedelta | None = None  # first seen at least this long ago
    status: str | None = "open"  # None: any status

    def where(self, at: datetime) -> tuple[str, list[object]]:
        sql: list[str] = ["1 = 1"]
        params: list[object] = []
        for col, val in (("flow", self.flow), ("asset", self.asset), ("partition_key", self.partition),
                         ("reason_code", self.reason), ("status", self.status)):
            if val is not None:
                sql.append(f"{col} = ?")
                params.append(val)
        if self.older_than is not None:
            sql.append("first_seen_at <= ?")
            params.append(at - self.older_than)
        return " AND ".join(sql), params


def parse_age(text: str) -> timedelta:
    """'90m', '6h', '2d' → timedelta."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    try:
        return timedelta(**{units[text[-1]]: float(text[:-1])})
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"an age is a number and m, h or d (e.g. 90m, 6h, 2d), not {text!r}") from None


def _ready(wh: Warehouse) -> bool:
    """Whether there are dead letters at all; brings an older warehouse's tables up to date."""
    if not wh.table_exists(META_SCHEMA, "dead_letters"):
        return False
    with wh.transaction() as tx:
        ensure_meta(tx)
    return True


def list_dead_letters(wh: Warehouse, f: Filters, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, the newest `limit` of them)."""
    if not _ready(wh):
        return 0, []
    where, params = f.where(now())
    with wh.session() as s:
        total = s.scalar(f"SELECT count(*) FROM {META_SCHEMA}.dead_letters WHERE {where}", params)
        rows = s.query(f"SELECT dead_letter_id, flow, asset, partition_key, reason_code, record_key, source_locator,"
                       f" status, first_seen_at FROM {META_SCHEMA}.dead_letters WHERE {where}"
                       f" ORDER BY first_seen_at DESC, dead_letter_id LIMIT {int(limit)}", params)
    keys = ("dead_letter_id", "flow", "asset", "partition_key", "reason_code", "record_key", "source_locator",
            "status", "first_seen_at")
    return int(total), [dict(zip(keys, r, strict=True)) for r in rows]


def show(wh: Warehouse, dead_letter_id: str) -> dict[str, Any] | None:
    if not _ready(wh):
        return None
    with wh.session() as s:
        cols = [c for (c,) in s.query("SELECT column_name FROM information_schema.columns WHERE table_schema = ?"
                                      " AND table_name = 'dead_letters' ORDER BY ordinal_position", (META_SCHEMA,))]
        rows = s.query(f"SELECT {', '.join(cols)} FROM {META_SCHEMA}.dead_letters WHERE dead_letter_id = ?"
                       " OR dead_letter_id LIKE ?", (dead_letter_id, f"{dead_letter_id}%"))
    if len(rows) != 1:
        return None
    return dict(zip(cols, rows[0], strict=True))


def resolve(wh: Warehouse, ids: list[str], note: str, actor: str) -> int:
    """Mark open dead letters resolved by hand (the record was fixed some other way, or accepted as lost)."""
    at = now()
    n = 0
    if not _ready(wh):
        return 0
    with wh.transaction() as tx:
        ensure(tx)
        for dl in ids:
            hit = tx.scalar(f"SELECT count(*) FROM {META_SCHEMA}.dead_letters WHERE dead_letter_id = ? AND"
                            " status = 'open'", (dl,))
            if not hit:
                continue
            tx.execute(f"UPDATE {META_SCHEMA}.dead_letters SET status = 'resolved', resolved_at = ?, resolved_by_run = ?,"
                       " resolution = ? WHERE dead_letter_id = ?", (at, f"manual:{actor}", f"manual: {note}"[:500], dl))
            audit(tx, actor, "dlq.resolve", dl, {"note": note}, at)
            n += 1
    return n


@dataclass
class ReplayResult:
    run_id: str
    partitions: int = 0
    selected: int = 0
    resolved: int = 0
    still_open: int = 0
    rows_loaded: int = 0


def replay(wh: Warehouse, f: Filters, load: Callable[[str, str, str, Callable[[Tx], None]], LoadResult],
           actor: str, progress: Callable[[str], None] = print, run_id: str | None = None) -> ReplayResult:
    """Replay the open dead letters `f` selects. `load(asset, partition_key, run_id, before_commit)` is the
    compensating reload of one asset partition (full refresh of its window), returning the loader's
    LoadResult; `before_commit(tx)` runs inside its transaction, where the replay's audit row is written,
    so a reload is never committed without it."""
    run_id = run_id or f"dlq-replay-{uuid.uuid4().hex[:12]}"
    out = ReplayResult(run_id=run_id)
    f = Filters(**{**f.__dict__, "status": "open"})
    if not _ready(wh):
        return out
    where, params = f.where(now())
    with wh.session() as s:
        groups = s.query(f"SELECT asset, partition_key, count(*) FROM {META_SCHEMA}.dead_letters WHERE {where}"
                         " GROUP BY asset, partition_key ORDER BY asset, partition_key", params)
    out.partitions, out.selected = len(groups), sum(int(n) for _, _, n in groups)
    progress(f"replaying {out.selected} open dead letter(s) in {out.partitions} asset partition(s) (run {run_id})")
    for i, (asset, part, n) in enumerate(groups, start=1):
        counts: dict[str, int] = {}

        def audited(tx: Tx, asset: str = asset, part: str = part, n: int = int(n),
                    counts: dict[str, int] = counts) -> None:
            for name, status in (("resolved", "resolved"), ("still_open", "open")):
                extra = " AND resolved_by_run = ?" if status == "resolved" else ""
                counts[name] = int(tx.scalar(
                    f"SELECT count(*) FROM {META_SCHEMA}.dead_letters WHERE asset = ? AND partition_key = ?"
                    f" AND status = ?{extra}", (asset, part, status, *([run_id] if extra else []))))
            audit(tx, actor, "dlq.replay", f"{asset}/{part}", {"run_id": run_id, "selected": n, **counts})

        r = load(asset, part, run_id, audited)
        left = counts["still_open"]
        out.resolved += r.dead_letters_resolved
        out.rows_loaded += r.rows_loaded
        out.still_open += left
        progress(f"  [{i}/{out.partitions}] {asset} {part}: {n} selected, {r.dead_letters_resolved} resolved, "
                 f"{left} still open, {r.rows_loaded} row(s) loaded")
    return out
