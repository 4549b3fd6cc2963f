"""The `meshline` command. Subcommands import what they need only when they run, so `--help` is instant."""

from __future__ import annotations

import importlib
import os
import sys

from expectations.reasons import MeshlineError

USAGE = """usage: meshline COMMAND [ARGS]

commands:
  demo       simulate 14 days of the revenue flows with faults, load and check them through Dagster,
             build the dbt marts and print what was found (`meshline demo --help`)
  dev        the Dagster UI over MESHLINE_HOME, bound to 127.0.0.1 (`--host`, `--port` to change)
  contracts  list | show NAME | test | diff OLD NEW | compile | publish | docs
  dlq        list | show ID | replay | resolve ID --note TEXT: the dead-letter queue
  incidents  open and recent incidents, and MTTR per contract and severity
  audit-log  verify | head | prune: the keyed, hash-chained audit log
  synthetic  run | prune: a synthetic end-to-end run scoring every failure mode
  report     --out PATH: one static HTML file with the hygiene plots, readable offline
  audit      the 12-point hygiene checklist against the real configuration and state (exit 1: a critical N)
  validate   meshline.yaml, its contracts, their pins and the flows' rules, checked together

`meshline COMMAND --help` says more. Settings: MESHLINE_HOME, MESHLINE_WAREHOUSE_URL, MESHLINE_CONFIG
MESHLINE_CONTRACTS_DIR (see the README); everything else is in meshline.yaml.
"""

# command → (module under orchestration.cli, function)
COMMANDS = {
    "demo": ("demo", "main"), "dev": ("dev", "main"), "contracts": ("contracts", "main"),
    "dlq": ("ops", "dlq"), "incidents": ("ops", "incidents"), "audit-log": ("ops", "audit_log"),
    "synthetic": ("synthetic", "main"), "report": ("report", "main"), "audit": ("audit", "main"),
    "validate": ("validate", "main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"meshline: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module, func = COMMANDS[cmd]
    run = getattr(importlib.import_module(f"orchestration.cli.{module}"), func)
    try:
        code = int(run(rest))
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return code
    except MeshlineError as exc:  # a configuration or contract error says all there is to say
        print(f"meshline {cmd}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `meshline incidents | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if not type(exc).__module__.lstrip("_").startswith(("duckdb", "psycopg2")):
            raise  # a bug: the traceback is what helps
        # the warehouse refused (unreachable, locked, read-only, not a database): one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"meshline {cmd}: the warehouse answered {type(exc).__name__}: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
