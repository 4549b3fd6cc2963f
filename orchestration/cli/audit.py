"""`meshline audit`: the command line of assets.hygiene.audit."""

from __future__ import annotations

from assets.hygiene import audit as hygiene_audit
from assets.hygiene.audit import evaluate
from assets.settings import Settings


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="meshline audit", description=hygiene_audit.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="one JSON object per item")
    args = p.parse_args(argv)
    items = evaluate(Settings.from_env())
    for it in items:
        if args.json:
            print(json.dumps(it.__dict__, sort_keys=True))
        else:
            print(f"{it.number:>2}. [{'Y' if it.ok else 'N'}] {it.name}{' (critical)' if it.critical else ''}\n"
                  f"        {it.evidence}")
    failed = [it for it in items if it.critical and not it.ok]
    if not args.json:
        print(f"\n{sum(it.ok for it in items)}/12 met; "
              + (f"critical not met: {', '.join(it.name for it in failed)}" if failed else "every critical item met"))
    return 1 if failed else 0

