"""`meshline synthetic`: the command line of assets.hygiene.synthetic."""

from __future__ import annotations

from assets.hygiene import synthetic as hygiene_synthetic
from assets.hygiene.synthetic import DETECTORS, prune, run_synthetic
from assets.settings import Settings


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import os
    from dataclasses import asdict

    p = argparse.ArgumentParser(prog="meshline synthetic", description=hygiene_synthetic.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("run", help="one synthetic end-to-end run; exit 1 when a mode is missed")
    rp.add_argument("--disable", action="append", default=[], choices=sorted(set(DETECTORS.values())),
                    help="switch a detector off (to see the modes it alone catches reported missed)")
    rp.add_argument("--days", type=int, default=5)
    rp.add_argument("--keep", action="store_true", help="keep the isolated sandbox and warehouse")
    rp.add_argument("--json", action="store_true")
    pr = sub.add_parser("prune", help="delete results and Dagster runs older than the retention")
    pr.add_argument("--days", type=int, help="default: meshline.yaml's retention.synthetic_days, else 90")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    os.environ.setdefault("DAGSTER_HOME", str(settings.ensure_local_dagster_home()))
    if args.cmd == "prune" and args.days is None:
        args.days = settings.config().operations.synthetic_retention_days
    if args.cmd == "prune":
        print(json.dumps(prune(settings, days=args.days)))
        return 0
    if args.days < 5:
        p.error("--days must be at least 5 (the volume check needs 3 earlier partitions)")
    r = run_synthetic(settings, disabled=frozenset(args.disable), days=args.days, keep=args.keep,
                      progress=(lambda m: None) if args.json else print)
    if args.json:
        print(json.dumps({"run_id": r.run_id, "missed": r.missed, "scores": [asdict(s) for s in r.scores]}))
    else:
        print(f"\n{'mode':<22} {'detector':<25} {'injected':>8} {'detected':>8} {'false +':>7} {'detect s':>8} "
              f"{'remediated':>10}")
        for s in r.scores:
            rem = "-" if s.remediated is None else f"{s.remediated}/{s.injected}"
            print(f"{s.mode:<22} {s.detector:<25} {s.injected:>8} {s.detected:>8} {s.false_positives:>7} "
                  f"{'-' if s.seconds_to_detect is None else f'{s.seconds_to_detect:.1f}':>8} {rem:>10}"
                  f"{'   MISSED' if s.missed else ''}")
        print(f"\n{len(r.scores) - len(r.missed)}/{len(r.scores)} modes detected, {r.false_positives} false "
              f"positive(s), {r.seconds:.0f} s" + (f"; MISSED: {', '.join(r.missed)}" if r.missed else ""))
    return 1 if r.missed else 0
