"""The benchmark's source: CRM opportunity change events in a Postgres table, made by Postgres itself.

    python -m bench.source POSTGRES_URL [ROWS]        (default ROWS = 1,000,000)

Table crm_opportunities (event_id, opportunity_id, account_id, owner_email, stage, amount, currency,
close_date, updated_at): ROWS distinct opportunities, then ROWS/100 later change events for existing
ones (so 1% have two versions), and ROWS/50 contract violations among them, a quarter each of: no
account, a malformed owner e-mail, a negative amount, an unknown stage. Deterministic: every value is
a function of the row number.
"""

from __future__ import annotations

import sys
import time

import psycopg2

STAGES = ("prospecting", "qualification", "proposal", "negotiation", "closed_won", "closed_lost")
CURRENCIES = ("USD", "EUR", "GBP")

DDL = """
DROP TABLE IF EXISTS crm_opportunities;
CREATE TABLE crm_opportunities (
    event_id BIGINT PRIMARY KEY,
    opportunity_id BIGINT NOT NULL,
    account_id BIGINT,
    owner_email TEXT,
    stage TEXT,
    amount DOUBLE PRECISION,
    currency TEXT,
    close_date DATE,
    updated_at TIMESTAMP NOT NULL
);
"""

# Row i (1-based) of ROWS + ROWS/100 events: the first ROWS create opportunity i, the rest change the
# opportunity (i * 7919) mod ROWS + 1, an hour or more after every creation. Every 50th event is a
# violation, its kind chosen by (i / 50) mod 4.
INSERT = """
INSERT INTO crm_opportunities
SELECT i,
       CASE WHEN i <= %(n)s THEN i ELSE ((i * 7919) %% %(n)s) + 1 END,
       CASE WHEN i %% 50 = 0 AND (i / 50) %% 4 = 0 THEN NULL ELSE (i * 31) %% 50000 + 1 END,
       CASE WHEN i %% 50 = 0 AND (i / 50) %% 4 = 1 THEN 'owner' || i || '.example.com'
            ELSE 'owner' || (i %% 997) || '@example.com' END,
       CASE WHEN i %% 50 = 0 AND (i / 50) %% 4 = 3 THEN 'lost_in_space'
            ELSE (%(stages)s::text[])[(i %% 6) + 1] END,
       CASE WHEN i %% 50 = 0 AND (i / 50) %% 4 = 2 THEN -1.0 * (i %% 1000 + 1)
            ELSE ((i * 13) %% 200000) / 2.0 END,
       (%(currencies)s::text[])[(i %% 3) + 1],
       DATE '2026-01-01' + CAST(i %% 365 AS integer),
       TIMESTAMP '2026-01-01' + make_interval(secs => i * 0.5)
           + CASE WHEN i > %(n)s THEN INTERVAL '1 hour' * (1 + i %% 24) + make_interval(secs => %(n)s * 0.5)
                  ELSE INTERVAL '0' END
FROM generate_series(1::bigint, %(total)s::bigint) AS i;
ANALYZE crm_opportunities;
"""


def generate(url: str, rows: int = 1_000_000) -> int:
    """Write the table into the database at `url` (libpq form); returns the number of events."""
    total = rows + rows // 100
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(DDL)
        cur.execute(INSERT, {"n": rows, "total": total, "stages": list(STAGES), "currencies": list(CURRENCIES)})
    conn.close()
    return total


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    total = generate(argv[0], int(argv[1]) if len(argv) > 1 else 1_000_000)
    print(f"crm_opportunities: {total:,} events in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
