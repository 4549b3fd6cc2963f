"""`meshline report`: the command line of assets.hygiene.report."""

from __future__ import annotations

from pathlib import Path

from assets.hygiene import report as hygiene_report
from assets.hygiene.report import write_report
from assets.settings import Settings


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="meshline report", description=hygiene_report.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the HTML file to write")
    args = p.parse_args(argv)
    path = write_report(Settings.from_env(), Path(args.out))
    print(f"report written: {path.resolve()}")
    return 0

