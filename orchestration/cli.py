"""The `meshline` command. Subcommands import what they need only when they run, so `--help` is instant."""

from __future__ import annotations

import sys

USAGE = """usage: meshline COMMAND [ARGS]

commands:
  demo     simulate 14 days of the lead handoff flow with faults, load and check it through Dagster,
           build the dbt marts and print what was found (`meshline demo --help`)
  bench    the validated incremental load of the shared benchmark table, DuckDB and Postgres
           (`meshline bench --help`)

environment:
  MESHLINE_HOME            local state (default ./.meshline)
  MESHLINE_WAREHOUSE_URL   duckdb:///PATH (default) or postgresql+psycopg2://USER@HOST:PORT/DB
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from orchestration.demo import main as demo_main

        return demo_main(rest)
    if cmd == "bench":
        from orchestration.bench import main as bench_main

        return bench_main(rest)
    print(f"meshline: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
