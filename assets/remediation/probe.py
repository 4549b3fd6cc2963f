"""The compensating sensor's probe: could a reload of a flow's partition change anything?

A compensating run re-extracts every boundary of the flow over the partition's window, whatever the
watermark says, and replays the partition's dead letters. The probe does exactly that as a dry run of
the loader (`load_partition(..., full_refresh=True, dry_run=True)`: the same reads, the same
validation and merge, rolled back at the point of commit), so it agrees with the reload by
construction. A reload can change something when a boundary

- has never loaded the partition (a gap);
- would load rows the warehouse lacks: records it has never seen, or newer versions of ones it has;
- would resolve dead letters whose records the source now sends valid.

Otherwise the failure is one the systems themselves must fix (a deal never invoiced stays uninvoiced
however often it is reloaded), and the sensor escalates it at once, with the probe's counts as the
evidence, instead of retrying it. Only counts leave the probe, never values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from assets.config import Config
from assets.loading.ddl import META_SCHEMA
from assets.loading.warehouse import Warehouse
from assets.loading.watermark import daily_window
from expectations.contract import Contract
from expectations.reasons import SourceError, SourceUnreachable

COUNTS = ("rows_in_source", "rows_new", "dead_letters_fixed", "rows_still_invalid")


@dataclass(frozen=True)
class Probe:
    flow: str
    partition: str
    changes: bool
    evidence: dict[str, dict[str, int]] = field(default_factory=dict)  # boundary -> counts

    def words(self) -> str:
        """The evidence in one line, e.g. "crm_leads: 120 rows in the source, 0 new, 0 dead letters
        fixed, 2 still invalid"."""
        parts = []
        for boundary, c in self.evidence.items():
            if c.get("never_loaded"):
                parts.append(f"{boundary}: never loaded")
            else:
                parts.append(f"{boundary}: {c['rows_in_source']} rows in the source, {c['rows_new']} new, "
                             f"{c['dead_letters_fixed']} dead letters fixed, {c['rows_still_invalid']} still invalid")
        return "; ".join(parts)


def probe_reload(wh: Warehouse, sources: Any, config: Config, contracts: Mapping[str, Contract], flow: str,
                 partition: str) -> Probe | None:
    """Dry-run the compensating reload of `flow`'s `partition`; `contracts`: boundary name → the contract
    it loads under (the definitions' own). None when a source cannot be read now (the probe cannot
    tell; the sensor compensates as before)."""
    from assets.loading.loader import load_partition

    evidence: dict[str, dict[str, int]] = {}
    changes = False
    for b in config.flow_boundaries(flow):
        with wh.session() as s:
            loaded = wh.table_exists(META_SCHEMA, "load_log") and s.scalar(
                f"SELECT count(*) FROM {META_SCHEMA}.load_log WHERE asset = ? AND partition_key = ?",
                (b.name, partition))
        if not loaded:
            evidence[b.name] = {"never_loaded": 1}
            changes = True
            continue
        contract = contracts[b.name]
        try:
            r = load_partition(wh, sources.source(contract), contract, partition_key=partition,
                               window=daily_window(partition), run_id="probe",
                               lookback=timedelta(hours=b.lookback_hours), full_refresh=True, dry_run=True,
                               deadline_s=60)
        except (SourceUnreachable, SourceError):
            return None
        evidence[b.name] = {"rows_in_source": r.rows_read, "rows_new": r.rows_loaded,
                            "dead_letters_fixed": r.dead_letters_resolved, "rows_still_invalid": r.rows_dead_lettered}
        changes = changes or bool(r.rows_loaded or r.dead_letters_resolved)
    return Probe(flow, partition, changes, evidence)
