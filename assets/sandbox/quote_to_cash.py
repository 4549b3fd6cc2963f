"""quote_to_cash sandbox: a CRM's opportunities and a billing system's invoices, with faults.

Both are change logs written as DuckDB files. Injected faults, recorded in `ground_truth.json`:

- no_invoice         a closed-won deal (due by the end of the simulation) that billing never invoices
- amount_mismatch    an invoice whose amount differs from its deal's
- currency_mismatch  an invoice in another currency than its deal
- no_deal            an invoice for an opportunity the CRM does not have
- malformed          rows the contracts must reject: an unknown stage (CRM), a negative amount (billing)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from assets.sandbox.base import SimulatedSystem
from assets.sandbox.lead_handoff import _write

INVOICE_SLA = timedelta(hours=48)


@dataclass(frozen=True)
class QuoteFaults:
    no_invoice: float = 0.05
    amount_mismatch: float = 0.04
    currency_mismatch: float = 0.03
    no_deal: float = 0.03
    malformed_crm: float = 0.02
    malformed_billing: float = 0.01


class QuoteToCashSandbox(SimulatedSystem):

    @property
    def crm_path(self) -> Path:
        return self.root / "crm_opportunities.duckdb"

    @property
    def billing_path(self) -> Path:
        return self.root / "billing.duckdb"

    @property
    def crm_url(self) -> str:
        return f"duckdb:///{self.crm_path}"

    @property
    def billing_url(self) -> str:
        return f"duckdb:///{self.billing_path}"

    def generate(self, *, end: date, days: int = 14, deals_per_day: int = 80, seed: int = 7,
                 faults: QuoteFaults = QuoteFaults(), touches_per_invoice: float | None = None) -> dict[str, Any]:
        """Write both databases afresh and return the ground truth. `touches_per_invoice`: the mean
        number of later versions billing writes of each invoice (reminders, payments, regenerated PDFs;
        same content, newer change token), for volume; by default about one invoice in ten gets one."""
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(seed)
        start, stop = self.window(end, days)
        n = days * deals_per_day
        def sec(a: Any) -> Any:
            return pd.to_timedelta(a, unit="s")
        opp_id = np.arange(5_001, 5_001 + n)
        created = pd.Series(start + sec(np.sort(rng.integers(0, days * 86400, n))))
        amount = np.round(rng.gamma(2.0, 8000.0, n), 2)
        account = rng.integers(1, 400, n)
        opened = pd.DataFrame({"opportunity_id": opp_id, "account_id": account, "stage": "prospecting",
                               "amount": amount, "currency": "USD", "closed_at": pd.NaT,
                               "updated_at": created.values})
        # Half the deals close within 1-72 h of creation: 60% of those won.
        close_at = created + sec(rng.integers(3600, 72 * 3600, n))
        closes = (rng.random(n) < 0.5) & np.asarray(close_at < stop)
        won = closes & (rng.random(n) < 0.6)
        lost = closes & ~won
        closed = opened[closes].assign(
            stage=np.where(won[closes], "closed_won", "closed_lost"), closed_at=close_at[closes].values,
            updated_at=close_at[closes].values)

        due = won & (close_at + INVOICE_SLA < stop - timedelta(hours=12)).to_numpy()

        def pick(mask: np.ndarray, rate: float, taken: np.ndarray) -> np.ndarray:
            pool = np.flatnonzero(mask & ~taken)
            k = min(len(pool), int(round(rate * won.sum())))
            out = np.zeros(n, dtype=bool)
            out[rng.choice(pool, size=k, replace=False)] = True
            return out

        none = np.zeros(n, dtype=bool)
        no_invoice = pick(due, faults.no_invoice, none)
        amount_mm = pick(won, faults.amount_mismatch, no_invoice)
        currency_mm = pick(won, faults.currency_mismatch, no_invoice | amount_mm)
        invoiced = won & ~no_invoice
        issued = close_at + sec(rng.integers(600, 12 * 3600, n))
        invoiced &= (issued < stop).to_numpy()
        inv = pd.DataFrame({
            "opportunity_id": opp_id[invoiced],
            "amount": np.where(amount_mm[invoiced], np.round(amount[invoiced] * 1.1, 2), amount[invoiced]),
            "currency": np.where(currency_mm[invoiced], "EUR", "USD"),
            "issued_at": issued[invoiced].values,
        })
        n_orphan = int(round(faults.no_deal * won.sum()))
        orphan_at = start + sec(rng.integers(0, days * 86400, n_orphan))
        orphans = pd.DataFrame({"opportunity_id": np.arange(900_001, 900_001 + n_orphan),
                                "amount": np.round(rng.gamma(2.0, 8000.0, n_orphan), 2), "currency": "USD",
                                "issued_at": orphan_at})
        n_bad_b = int(round(faults.malformed_billing * won.sum()))
        bad_at = start + sec(rng.integers(0, days * 86400, n_bad_b))
        bad_b = pd.DataFrame({"opportunity_id": np.arange(950_001, 950_001 + n_bad_b), "amount": -1.0,
                              "currency": "USD", "issued_at": bad_at})
        invoices = pd.concat([inv, orphans, bad_b], ignore_index=True)
        invoices.insert(0, "invoice_id", np.arange(70_001, 70_001 + len(invoices)))
        invoices["updated_at"] = invoices["issued_at"]
        # Billing touches about one invoice in ten again later (a regenerated PDF, a reminder): a second
        # version of the same invoice with a newer change token and the same content.
        if touches_per_invoice is None:
            touched = invoices.iloc[: len(inv)].sample(frac=0.1, random_state=seed).copy()
            touched["updated_at"] = touched["issued_at"] + sec(rng.integers(3600, 20 * 3600, len(touched)))
        else:
            reps = rng.poisson(touches_per_invoice, len(inv))
            touched = invoices.iloc[np.repeat(np.arange(len(inv)), reps)].copy()
            touched["updated_at"] = touched["issued_at"] + sec(rng.integers(3600, 30 * 86400, len(touched)))
        touched = touched[touched["updated_at"] < stop]
        invoices = pd.concat([invoices, touched], ignore_index=True)
        invoices = invoices.sort_values("updated_at", kind="stable").reset_index(drop=True)
        invoices.insert(0, "row_id", np.arange(1, len(invoices) + 1))

        n_bad_c = int(round(faults.malformed_crm * n))
        bad_c_at = start + sec(rng.integers(0, days * 86400, n_bad_c))
        bad_c = pd.DataFrame({"opportunity_id": np.arange(990_001, 990_001 + n_bad_c), "account_id": 1,
                              "stage": "Closed Won!!", "amount": 100.0, "currency": "USD", "closed_at": pd.NaT,
                              "updated_at": bad_c_at})
        opps = pd.concat([opened, closed, bad_c], ignore_index=True).sort_values("updated_at", kind="stable")
        opps = opps.reset_index(drop=True)
        opps.insert(0, "row_id", np.arange(1, len(opps) + 1))
        opps["closed_at"] = pd.to_datetime(opps["closed_at"]).astype("datetime64[us]")

        self.root.mkdir(parents=True, exist_ok=True)
        _write(self.crm_path, {"crm_opportunities": opps})
        _write(self.billing_path, {"billing_invoices": invoices})
        truth = {
            "start": start.date().isoformat(), "end": (stop - timedelta(days=1)).date().isoformat(), "days": days,
            "seed": seed, "faults": asdict(faults), "invoice_sla_hours": INVOICE_SLA.total_seconds() / 3600,
            "deals": int(n), "closed_won": int(won.sum()), "closed_lost": int(lost.sum()),
            "no_invoice": sorted(int(x) for x in opp_id[no_invoice]),
            "amount_mismatch": sorted(int(x) for x in opp_id[amount_mm & invoiced]),
            "currency_mismatch": sorted(int(x) for x in opp_id[currency_mm & invoiced]),
            "malformed": sorted(
                [{"system": "crm", "row_id": int(r), "reason_code": "unknown_value"}
                 for r in opps.loc[opps["stage"] == "Closed Won!!", "row_id"]]
                + [{"system": "billing", "row_id": int(r), "reason_code": "out_of_range"}
                   for r in invoices.loc[invoices["amount"] < 0, "row_id"]],
                key=lambda m: (m["system"], m["row_id"])),
        }
        # Orphans are invoices whose deal the CRM never had; malformed invoices are dead letters, not orphans.
        truth["no_deal"] = sorted({int(x) for x in invoices.loc[
            (invoices["opportunity_id"] >= 900_001) & (invoices["opportunity_id"] < 950_001), "invoice_id"]})
        self.truth_path.write_text(json.dumps(truth, indent=1, sort_keys=True))
        return truth
