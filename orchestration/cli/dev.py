"""`meshline dev`: `dagster dev` over workspace.yaml, with DAGSTER_HOME under MESHLINE_HOME."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from assets.settings import PROJECT_ROOT, Settings


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="meshline dev", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", default="3000")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(settings.ensure_local_dagster_home()))
    dagster = shutil.which("dagster") or os.path.join(os.path.dirname(sys.executable), "dagster")
    print(f"Dagster UI on http://{args.host}:{args.port}  (DAGSTER_HOME={env['DAGSTER_HOME']})", flush=True)
    os.chdir(PROJECT_ROOT)
    os.execve(dagster, [dagster, "dev", "-h", args.host, "-p", args.port, "-w", "workspace.yaml"], env)
    return 0  # not reached
