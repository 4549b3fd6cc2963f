"""subscription_updates sandbox: the product's plan events as JSONL drops, billing's subscriptions behind
an HTTP API, with faults.

- `product_events/events-<day>.jsonl`: the day's plan events (sign-ups and plan changes), one JSON
  object per line, with a few lines that do not parse;
- `product_events/events-<day>-retry.jsonl`: events the product delivered a second time (at-least-once
  delivery; the event id makes the second copy harmless);
- `billing.duckdb`, table `billing_subscriptions`: billing's change log, served by
  `assets.sandbox.billing_api` on 127.0.0.1.

Billing applies each plan event 5 minutes to 6 hours after it occurred. Injected faults, recorded in
`ground_truth.json`, all on an account's latest plan event (an earlier one would be repaired by the next):

- not_reflected   billing never applies the event (for a sign-up: billing has no subscription at all)
- plan_mismatch   billing applies another plan than the event's
- malformed       lines that do not parse and events the contract rejects (product), subscriptions with a
                  negative MRR (billing)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from assets.sandbox.base import SimulatedSystem
from assets.sandbox.lead_handoff import FIRST, LAST, _write

PLAN_SYNC_SLA = timedelta(hours=12)
PLANS = ["starter", "growth", "pro", "enterprise"]
MRR = {"starter": 49.0, "growth": 199.0, "pro": 490.0, "enterprise": 2400.0}
APPLY_DELAY = (timedelta(minutes=5), timedelta(hours=6))
MIN_GAP = timedelta(hours=7)  # between two plan events of one account: longer than billing's slowest apply


@dataclass(frozen=True)
class SubscriptionFaults:
    not_reflected: float = 0.05
    plan_mismatch: float = 0.04
    duplicate_events: float = 0.03
    malformed_lines: float = 0.01
    malformed_events: float = 0.01
    malformed_billing: float = 0.01


def _iso(ts: Any) -> str:
    import pandas as pd

    return pd.Timestamp(ts).to_pydatetime().isoformat()


class SubscriptionSandbox(SimulatedSystem):

    @property
    def events_dir(self) -> Path:
        return self.root / "product_events"

    @property
    def billing_path(self) -> Path:
        return self.root / "billing.duckdb"

    def generate(self, *, end: date, days: int = 14, accounts_per_day: int = 60, seed: int = 7,
                 faults: SubscriptionFaults = SubscriptionFaults(), plan_changes_mean: float | None = None) -> dict[str, Any]:
        """Write the event drops and billing afresh and return the ground truth. `plan_changes_mean`: the
        mean number of plan changes per account (Poisson), for volume; by default 0, 1 or 2."""
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(seed)
        start, stop = self.window(end, days)
        n = days * accounts_per_day
        accounts = np.arange(30_001, 30_001 + n)

        # Each account signs up, then changes plan 0-2 times, at least MIN_GAP apart.
        events: list[dict[str, Any]] = []
        for i, acct in enumerate(accounts):
            at = start + timedelta(seconds=int(rng.integers(0, days * 86400)))
            plan = PLANS[int(rng.integers(0, len(PLANS)))]
            who = f"{FIRST[i % len(FIRST)]}.{LAST[(i * 7) % len(LAST)]}{i}@example.com"
            events.append({"account_id": int(acct), "event_type": "signup", "plan": plan, "occurred_at": at,
                           "actor_email": who})
            changes = (int(rng.choice([0, 1, 2], p=[0.6, 0.3, 0.1])) if plan_changes_mean is None
                       else int(rng.poisson(plan_changes_mean)))
            for _ in range(changes):
                at = at + MIN_GAP + timedelta(seconds=int(rng.integers(0, 4 * 86400)))
                if at >= stop:
                    break
                plan = [p for p in PLANS if p != plan][int(rng.integers(0, len(PLANS) - 1))]
                events.append({"account_id": int(acct), "event_type": "plan_change", "plan": plan,
                               "occurred_at": at, "actor_email": who})
        ev = pd.DataFrame(events).sort_values(["occurred_at", "account_id"], kind="stable").reset_index(drop=True)
        ev.insert(0, "event_id", [f"evt_{int(x):012x}" for x in rng.permutation(len(ev)) + 0xA0000])
        lo, hi = (d.total_seconds() for d in APPLY_DELAY)
        ev["applied_at"] = ev["occurred_at"] + pd.to_timedelta(rng.integers(int(lo), int(hi), len(ev)), unit="s")
        ev["is_latest"] = ~ev.duplicated("account_id", keep="last")

        def pick(mask: pd.Series, rate: float) -> np.ndarray:
            pool = np.flatnonzero(mask.to_numpy())
            k = min(len(pool), int(round(rate * n)))
            out = np.zeros(len(ev), dtype=bool)
            out[rng.choice(pool, size=k, replace=False)] = True
            return out

        due = ev["is_latest"] & (ev["occurred_at"] + PLAN_SYNC_SLA < stop - timedelta(hours=12))
        not_reflected = pick(due, faults.not_reflected)
        mismatch = pick(ev["is_latest"] & (ev["applied_at"] < stop) & ~not_reflected, faults.plan_mismatch)

        # Billing's change log: one version of the account's subscription per plan event it applied.
        applied = ev[~not_reflected & (ev["applied_at"] < stop).to_numpy()].copy()
        wrong = mismatch[applied.index]
        applied["billed_plan"] = applied["plan"]
        applied.loc[wrong, "billed_plan"] = [
            [p for p in PLANS if p != plan][int(rng.integers(0, len(PLANS) - 1))]
            for plan in applied.loc[wrong, "plan"]]
        subs = pd.DataFrame({
            "subscription_id": applied["account_id"].to_numpy() + 500_000,
            "account_id": applied["account_id"].to_numpy(),
            "plan": applied["billed_plan"].to_numpy(),
            "mrr": applied["billed_plan"].map(MRR).to_numpy(),
            "billing_email": [f"ap{a}@example.org" for a in applied["account_id"]],
            "plan_effective_at": applied["applied_at"].to_numpy(),
            "updated_at": applied["applied_at"].to_numpy(),
        })
        n_bad_b = int(round(faults.malformed_billing * n))
        bad_b_at = start + pd.to_timedelta(rng.integers(0, days * 86400, n_bad_b), unit="s")
        bad_b = pd.DataFrame({"subscription_id": np.arange(995_001, 995_001 + n_bad_b),
                              "account_id": np.arange(995_001, 995_001 + n_bad_b), "plan": "pro", "mrr": -1.0,
                              "billing_email": "ap-broken@example.org", "plan_effective_at": bad_b_at,
                              "updated_at": bad_b_at})
        subs = pd.concat([subs, bad_b], ignore_index=True).sort_values("updated_at", kind="stable")
        subs = subs.reset_index(drop=True)
        subs.insert(0, "row_id", np.arange(1, len(subs) + 1))
        for c in ("plan_effective_at", "updated_at"):
            subs[c] = pd.to_datetime(subs[c]).astype("datetime64[us]")

        # Events the contract rejects (an unknown plan), for accounts nobody else has.
        n_bad_e = int(round(faults.malformed_events * n))
        bad_e = pd.DataFrame({
            "event_id": [f"evt_{0xF00000 + i:012x}" for i in range(n_bad_e)],
            "account_id": np.arange(990_001, 990_001 + n_bad_e), "event_type": "plan_change", "plan": "platinum",
            "occurred_at": start + pd.to_timedelta(rng.integers(0, days * 86400, n_bad_e), unit="s"),
            "actor_email": "someone@example.com"})
        drops = pd.concat([ev[["event_id", "account_id", "event_type", "plan", "occurred_at", "actor_email"]],
                           bad_e], ignore_index=True).sort_values("occurred_at", kind="stable")
        dup = pick(pd.Series(np.ones(len(ev), dtype=bool)), faults.duplicate_events)
        retries = ev.loc[dup, drops.columns]

        self.root.mkdir(parents=True, exist_ok=True)
        self.events_dir.mkdir(parents=True, exist_ok=True)
        for old in self.events_dir.glob("*"):
            old.unlink()
        n_broken = int(round(faults.malformed_lines * n))
        broken_days = set(int(x) for x in rng.choice(days, size=min(days, n_broken), replace=False))
        malformed: list[dict[str, Any]] = []
        for d in range(days):
            day = (start + timedelta(days=d)).date()
            lo_t, hi_t = pd.Timestamp(day), pd.Timestamp(day + timedelta(days=1))
            todays = drops[(drops["occurred_at"] >= lo_t) & (drops["occurred_at"] < hi_t)]
            lines = [json.dumps({**r, "occurred_at": _iso(r["occurred_at"])}) for r in todays.to_dict("records")]
            name = f"events-{day.isoformat()}.jsonl"
            if d in broken_days and lines:
                cut = int(rng.integers(1, len(lines) + 1))  # never first: the file's first record dates it
                lines.insert(cut, lines[cut - 1][: len(lines[cut - 1]) // 2])  # a line cut off mid-write
                malformed.append({"system": "product", "position": f"{name}:{cut + 1}",
                                  "reason_code": "malformed_record", "partition": day.isoformat()})
            for r in todays.to_dict("records"):
                if r["plan"] not in PLANS:
                    line = lines.index(json.dumps({**r, "occurred_at": _iso(r["occurred_at"])})) + 1
                    malformed.append({"system": "product", "position": f"{name}:{line}",
                                      "reason_code": "unknown_value", "partition": day.isoformat()})
            (self.events_dir / name).write_text("\n".join(lines) + "\n")
            again = retries[(retries["occurred_at"] >= lo_t) & (retries["occurred_at"] < hi_t)]
            if len(again):
                (self.events_dir / f"events-{day.isoformat()}-retry.jsonl").write_text("\n".join(
                    json.dumps({**r, "occurred_at": _iso(r["occurred_at"])}) for r in again.to_dict("records")) + "\n")
        malformed += [{"system": "billing", "row_id": int(r), "reason_code": "out_of_range",
                       "partition": pd.Timestamp(t).date().isoformat()}
                      for r, t in subs.loc[subs["mrr"] < 0, ["row_id", "updated_at"]].itertuples(index=False)]
        _write(self.billing_path, {"billing_subscriptions": subs})

        latest = ev[ev["is_latest"]]
        truth = {
            "start": start.date().isoformat(), "end": (stop - timedelta(days=1)).date().isoformat(), "days": days,
            "seed": seed, "faults": asdict(faults), "plan_sync_sla_hours": PLAN_SYNC_SLA.total_seconds() / 3600,
            "accounts": int(n), "events": int(len(ev)), "duplicate_deliveries": int(dup.sum()),
            "not_reflected": sorted(int(a) for a in ev.loc[not_reflected, "account_id"]),
            "plan_mismatch": sorted(int(a) for a in ev.loc[mismatch, "account_id"]),
            "latest_event_day": {str(int(a)): pd.Timestamp(t).date().isoformat()
                                 for a, t in latest[["account_id", "occurred_at"]].itertuples(index=False)},
            "malformed": sorted(malformed, key=lambda m: (m["system"], str(m.get("position", m.get("row_id"))))),
        }
        self.truth_path.write_text(json.dumps(truth, indent=1, sort_keys=True))
        return truth
