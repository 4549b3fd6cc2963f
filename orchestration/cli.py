"""The `meshline` command. Subcommands import what they need only when they run, so `--help` is instant."""

from __future__ import annotations

import sys

USAGE = """usage: meshline COMMAND [ARGS]

commands:
  demo     simulate 14 days of the revenue flows with faults, load and check them through Dagster,
           build the dbt marts and print what was found (`meshline demo --help`)
  contracts  list | show NAME | test | diff OLD NEW | compile | publish | docs
           (`meshline contracts --help`)
  dev      the Dagster UI over MESHLINE_HOME, bound to 127.0.0.1 (`--host`, `--port` to change)
  bench    the validated incremental load of the shared benchmark table, DuckDB and Postgres
           (`meshline bench --help`)
  dlq      list | show ID | replay | resolve ID --note TEXT: the dead-letter queue (`meshline dlq --help`)
  incidents  open and recent incidents, and MTTR per contract and severity
  audit-log  verify | prune: the hash-chained audit log (`meshline audit-log --help`)
  synthetic  run | prune: a synthetic end-to-end run scoring every failure mode (`meshline synthetic --help`)
  report   --out PATH: one static HTML file with the hygiene plots, readable offline
  audit    the 12-point hygiene checklist against the real configuration and state (exit 1: a critical N)
  compact  merge the DuckDB warehouse's row groups that loads leave (the dbt asset does it before each build)

environment:
  MESHLINE_HOME            local state (default ./.meshline)
  MESHLINE_WAREHOUSE_URL   duckdb:///PATH (default) or postgresql+psycopg2://USER@HOST:PORT/DB
"""


def dev(argv: list[str]) -> int:
    """Exec `dagster dev` over workspace.yaml with DAGSTER_HOME under MESHLINE_HOME (embedded default)."""
    import argparse
    import os
    import shutil

    from orchestration.settings import PROJECT_ROOT, Settings

    p = argparse.ArgumentParser(prog="meshline dev")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", default="3000")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    if "DAGSTER_HOME" not in os.environ:
        os.environ["DAGSTER_HOME"] = str(settings.ensure_local_dagster_home())
    dagster = shutil.which("dagster") or os.path.join(os.path.dirname(sys.executable), "dagster")
    print(f"Dagster UI on http://{args.host}:{args.port}  (DAGSTER_HOME={os.environ['DAGSTER_HOME']})", flush=True)
    os.chdir(PROJECT_ROOT)
    os.execv(dagster, [dagster, "dev", "-h", args.host, "-p", args.port, "-w", "workspace.yaml"])
    return 0  # not reached


def compact(argv: list[str]) -> int:
    """Merge the row groups DuckDB loads leave behind (assets/loading/compaction.py)."""
    import argparse

    from orchestration.settings import Settings

    argparse.ArgumentParser(prog="meshline compact", description=compact.__doc__).parse_args(argv)
    from assets.loading.compaction import compact as run
    from assets.loading.warehouse import Warehouse

    print(run(Warehouse(Settings.from_env().warehouse_url)).summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from orchestration.demo import main as demo_main

        return demo_main(rest)
    if cmd == "contracts":
        from orchestration.contracts_cli import main as contracts_main

        return contracts_main(rest)
    if cmd == "dev":
        return dev(rest)
    if cmd == "bench":
        from orchestration.bench import main as bench_main

        return bench_main(rest)
    if cmd == "dlq":
        from orchestration.ops_cli import dlq

        return dlq(rest)
    if cmd == "report":
        from orchestration.report import main as report_main

        return report_main(rest)
    if cmd == "synthetic":
        from orchestration.synthetic import main as synthetic_main

        return synthetic_main(rest)
    if cmd == "audit":
        from orchestration.audit import main as audit_main

        return audit_main(rest)
    if cmd == "audit-log":
        from orchestration.ops_cli import audit_log

        return audit_log(rest)
    if cmd == "compact":
        return compact(rest)
    if cmd == "incidents":
        from orchestration.ops_cli import incidents

        return incidents(rest)
    print(f"meshline: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
