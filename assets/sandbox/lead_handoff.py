"""A marketing automation database and a CRM database, generated for N days from a seed.

Both are change logs (one row per version, `row_id` the locator), written as DuckDB files. Faults are
injected at rates you set and every injected fault is recorded in the ground truth
(`ground_truth.json` beside the databases), so a test can demand that Meshline finds exactly them:

- never_synced  an MQL (due by the end of the simulation) that never reaches the CRM
- duplicated    one MQL turned into two CRM leads
- slow          an MQL whose CRM lead arrives after the handoff SLA
- malformed     rows the contracts must reject: bad e-mail and null key (marketing), unknown status
                (a bad CRM update of a lead that is otherwise fine) and null key (CRM)
- late          an update whose change token is older than the partition's watermark when it arrives:
                held back by `generate()` and put in the source by `deliver_late()`

Everything is vectorized (numpy/pandas → DuckDB), so a year of a million leads takes seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FIRST = ["ada", "grace", "alan", "edsger", "barbara", "donald", "frances", "ken", "radia", "john"]
LAST = ["lovelace", "hopper", "turing", "dijkstra", "liskov", "knuth", "allen", "thompson", "perlman", "backus"]
COMPANIES = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell", "cyberdyne"]
CAMPAIGNS = ["webinar", "ebook", "trial", "paid_search", "event", "referral"]
DOMAINS = ["example.com", "example.org", "mail.example.net"]
HANDOFF_SLA = timedelta(hours=24)


@dataclass(frozen=True)
class FaultRates:
    """Fractions of MQLs (or of CRM leads, for CRM faults) that get each fault."""

    never_synced: float = 0.03
    duplicated: float = 0.02
    slow: float = 0.02
    malformed_marketing: float = 0.02
    malformed_crm: float = 0.02
    late: float = 0.03


@dataclass(frozen=True)
class SandboxPaths:
    root: Path

    @property
    def marketing(self) -> Path:
        return self.root / "marketing.duckdb"

    @property
    def crm(self) -> Path:
        return self.root / "crm.duckdb"

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground_truth.json"


class LeadHandoffSandbox:
    def __init__(self, root: Path):
        self.paths = SandboxPaths(Path(root))

    @property
    def marketing_url(self) -> str:
        return f"duckdb:///{self.paths.marketing}"

    @property
    def crm_url(self) -> str:
        return f"duckdb:///{self.paths.crm}"

    def exists(self) -> bool:
        return self.paths.ground_truth.exists()

    def ground_truth(self) -> dict[str, Any]:
        truth: dict[str, Any] = json.loads(self.paths.ground_truth.read_text())
        return truth

    # ---------------------------------------------------------------- generation
    def generate(self, *, end: date, days: int = 14, leads_per_day: int = 200, seed: int = 7,
                 faults: FaultRates = FaultRates()) -> dict[str, Any]:
        """Write both databases afresh and return the ground truth."""
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(seed)
        start = datetime.combine(end - timedelta(days=days - 1), datetime.min.time())
        stop = start + timedelta(days=days)  # exclusive end of the simulation
        n = days * leads_per_day
        def sec(a: Any) -> Any:
            return pd.to_timedelta(a, unit="s")

        lead_id = np.arange(1, n + 1)
        mql_at = pd.Series(start + sec(np.sort(rng.integers(0, days * 86400, n))))
        first = rng.integers(0, len(FIRST), n)
        last = rng.integers(0, len(LAST), n)
        leads = pd.DataFrame({
            "lead_id": lead_id,
            "email": [f"{FIRST[f]}.{LAST[g]}{i}@{DOMAINS[i % 3]}" for f, g, i in zip(first, last, lead_id, strict=True)],
            "first_name": [FIRST[f].title() for f in first],
            "last_name": [LAST[g].title() for g in last],
            "company": np.array(COMPANIES)[rng.integers(0, len(COMPANIES), n)],
            "campaign": np.array(CAMPAIGNS)[rng.integers(0, len(CAMPAIGNS), n)],
            "mql_at": mql_at.values,
            "updated_at": mql_at.values,
        })
        due = (mql_at + HANDOFF_SLA < stop - timedelta(hours=12)).to_numpy()
        early = (mql_at < stop - timedelta(hours=48)).to_numpy()

        def pick(mask: np.ndarray, rate: float, taken: np.ndarray) -> np.ndarray:
            pool = np.flatnonzero(mask & ~taken)
            k = min(len(pool), int(round(rate * n)))
            chosen = np.zeros(n, dtype=bool)
            chosen[rng.choice(pool, size=k, replace=False)] = True
            return chosen

        none = np.zeros(n, dtype=bool)
        never = pick(due, faults.never_synced, none)
        dup = pick(due, faults.duplicated, never)
        slow = pick(early, faults.slow, never | dup)
        # Late updates: a company change on the MQL's own day, between 3 h and 1 h before midnight, so it
        # is older than that day's watermark but inside the 6 h lookback when it arrives.
        day_end = mql_at.dt.normalize() + pd.Timedelta(days=1)
        late_ok = ((day_end - mql_at) > pd.Timedelta(hours=4)).to_numpy()
        late = pick(late_ok, faults.late, none)
        late_at = day_end[late] - sec(rng.integers(3600, 3 * 3600, late.sum()))

        # Ordinary updates (a campaign re-attribution) for some leads that get no late update.
        upd = pick(np.ones(n, dtype=bool), 0.10, late)
        upd_at = mql_at[upd] + sec(rng.integers(3600, 48 * 3600, upd.sum()))
        keep = (upd_at < stop).to_numpy()
        updates = leads[upd][keep].assign(
            campaign="reattributed", updated_at=upd_at[keep].values)
        late_rows = leads[late].assign(company=lambda d: d["company"] + "_renamed", updated_at=late_at.values)

        # Malformed marketing rows: extra MQLs the contract must reject (never handed off).
        n_bad_m = int(round(faults.malformed_marketing * n))
        bad_at = start + sec(rng.integers(0, days * 86400, n_bad_m))
        bad_m = pd.DataFrame({
            "lead_id": pd.array([n + 1 + i if i % 2 == 0 else None for i in range(n_bad_m)], dtype="Int64"),
            "email": [f"not-an-email-{i}" if i % 2 == 0 else f"nokey{i}@example.com" for i in range(n_bad_m)],
            "first_name": "Bad", "last_name": "Row", "company": "acme", "campaign": "import",
            "mql_at": bad_at, "updated_at": bad_at,
        })

        # CRM: one lead per synced MQL; a second for duplicated ones; slow ones after the SLA.
        synced = ~never
        latency = sec(rng.integers(300, 6 * 3600, n))
        latency = np.where(slow, sec(rng.integers(26 * 3600, 40 * 3600, n)), latency)  # type: ignore[call-overload]  # pandas-stubs: Timedelta arrays
        created = mql_at + pd.to_timedelta(latency)
        crm_mask = synced & (created < stop).to_numpy()
        crm = pd.DataFrame({
            "marketing_lead_id": lead_id[crm_mask],
            "owner": [f"rep_{i % 25}" for i in lead_id[crm_mask]],
            "status": "open",
            "created_at": created[crm_mask].values,
        })
        dup_created = (created[dup] + sec(rng.integers(60, 7200, dup.sum()))).values
        crm = pd.concat([crm, pd.DataFrame({
            "marketing_lead_id": lead_id[dup], "owner": "rep_dup", "status": "open", "created_at": dup_created,
        })], ignore_index=True).sort_values("created_at", kind="stable").reset_index(drop=True)
        crm.insert(0, "crm_lead_id", np.arange(100_001, 100_001 + len(crm)))
        crm["updated_at"] = crm["created_at"]
        # Status progress for some CRM leads.
        prog = rng.random(len(crm)) < 0.3
        prog_at = crm["created_at"][prog] + sec(rng.integers(600, 72 * 3600, prog.sum()))
        ok = (prog_at < stop).to_numpy()
        crm_updates = crm[prog][ok].assign(status="working", updated_at=prog_at[ok].values)
        # Malformed CRM rows: an unknown-status update of a good lead (its earlier version stays valid),
        # and a null-key row for an MQL that also has a good CRM lead.
        n_bad_c = int(round(faults.malformed_crm * len(crm)))
        victims = crm.iloc[rng.choice(len(crm), size=n_bad_c, replace=False)].copy()
        victims["updated_at"] = victims["created_at"] + pd.Timedelta(minutes=1)
        victims = victims[victims["updated_at"] < stop]
        half = len(victims) // 2
        bad_status = victims.iloc[:half].assign(status="Closed Won!!")
        null_key = victims.iloc[half:].assign(crm_lead_id=None, owner="rep_broken_sync")
        bad_c = pd.concat([bad_status, null_key], ignore_index=True)
        bad_c["crm_lead_id"] = bad_c["crm_lead_id"].astype("Int64")

        marketing = pd.concat([leads.astype({"lead_id": "Int64"}), updates.astype({"lead_id": "Int64"}), bad_m],
                              ignore_index=True)
        marketing = marketing.sort_values("updated_at", kind="stable").reset_index(drop=True)
        marketing.insert(0, "row_id", np.arange(1, len(marketing) + 1))
        late_rows = late_rows.reset_index(drop=True)
        late_rows.insert(0, "row_id", np.arange(len(marketing) + 1, len(marketing) + 1 + len(late_rows)))
        crm_all = pd.concat([crm.astype({"crm_lead_id": "Int64"}), crm_updates.astype({"crm_lead_id": "Int64"}),
                             bad_c], ignore_index=True)
        crm_all["row_id"] = np.arange(1, len(crm_all) + 1)
        crm_all = crm_all[["row_id", "crm_lead_id", "marketing_lead_id", "owner", "status", "created_at",
                           "updated_at"]].sort_values("updated_at", kind="stable")

        self.paths.root.mkdir(parents=True, exist_ok=True)
        _write(self.paths.marketing, {"marketing_leads": marketing, "pending_late_updates": late_rows})
        _write(self.paths.crm, {"crm_leads": crm_all})

        truth = {
            "start": start.date().isoformat(), "end": (stop - timedelta(days=1)).date().isoformat(),
            "days": days, "leads_per_day": leads_per_day, "seed": seed, "faults": asdict(faults),
            "handoff_sla_hours": HANDOFF_SLA.total_seconds() / 3600,
            "mqls": int(n),
            "never_synced": sorted(int(x) for x in lead_id[never]),
            "duplicated": sorted(int(x) for x in lead_id[dup]),
            "slow": sorted(int(x) for x in lead_id[slow & crm_mask]),
            "malformed": _malformed(marketing, crm_all),
            "late_updates": [{"lead_id": int(r["lead_id"]), "row_id": int(r["row_id"]), "company": r["company"],
                              "updated_at": pd.Timestamp(r["updated_at"]).isoformat()}
                             for r in late_rows.to_dict("records")],
            "late_delivered": False,
        }
        self.paths.ground_truth.write_text(json.dumps(truth, indent=1, sort_keys=True))
        return truth

    def deliver_late(self) -> int:
        """Put the held-back late updates into the marketing source (idempotent). Returns rows delivered."""
        import duckdb

        truth = self.ground_truth()
        if truth["late_delivered"]:
            return 0
        with duckdb.connect(str(self.paths.marketing)) as con:
            con.execute("INSERT INTO marketing_leads SELECT * FROM pending_late_updates")
            delivered = con.execute("SELECT count(*) FROM pending_late_updates").fetchall()[0][0]
        truth["late_delivered"] = True
        self.paths.ground_truth.write_text(json.dumps(truth, indent=1, sort_keys=True))
        return int(delivered)


    def hand_off_late(self, lead_ids: list[int]) -> int:
        """The CRM finally creates leads for these MQLs, stamped with their MQL time: records that arrive
        after their partition was loaded, older than watermark − lookback, which only a compensating
        reload of the partition reads. Returns the CRM rows written."""
        import duckdb

        if not lead_ids:
            return 0
        with duckdb.connect(str(self.paths.marketing), read_only=True) as con:
            mql = dict(con.execute(
                f"SELECT lead_id, min(mql_at) FROM marketing_leads WHERE lead_id IN ({', '.join('?' * len(lead_ids))})"
                " GROUP BY lead_id", [int(x) for x in lead_ids]).fetchall())
        with duckdb.connect(str(self.paths.crm)) as con:
            row, crm_id = con.execute("SELECT max(row_id), max(crm_lead_id) FROM crm_leads").fetchall()[0]
            for i, lead in enumerate(sorted(mql)):
                con.execute("INSERT INTO crm_leads (row_id, crm_lead_id, marketing_lead_id, owner, status, created_at,"
                            " updated_at) VALUES (?, ?, ?, 'rep_late', 'open', ?, ?)",
                            [row + 1 + i, crm_id + 1 + i, lead, mql[lead], mql[lead]])
        return len(mql)


def _malformed(marketing: pd.DataFrame, crm: pd.DataFrame) -> list[dict[str, Any]]:
    """Every row the generator made malformed, with the reason code the contracts must give it."""
    import pandas as pd

    out = [{"system": "marketing_automation", "row_id": int(r),
            "reason_code": "null_key" if pd.isna(k) else "invalid_format"}
           for r, k, f in zip(marketing["row_id"], marketing["lead_id"], marketing["first_name"], strict=True)
           if f == "Bad"]
    out += [{"system": "crm", "row_id": int(r), "reason_code": "null_key" if pd.isna(k) else "unknown_value"}
            for r, k, s in zip(crm["row_id"], crm["crm_lead_id"], crm["status"], strict=True)
            if s == "Closed Won!!" or pd.isna(k)]
    return sorted(out, key=lambda m: (m["system"], m["row_id"]))


def _write(path: Path, tables: dict[str, pd.DataFrame]) -> None:
    import duckdb

    if path.exists():
        path.unlink()
    with duckdb.connect(str(path)) as con:
        for name, df in tables.items():
            con.register("_df", df)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM _df")
            con.unregister("_df")
