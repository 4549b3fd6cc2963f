"""`meshline validate`: meshline.yaml, the contracts it names, their pins and the flows' rules, checked
together before anything runs. Exit 0 and a summary, or exit 2 with the file, the line, the key and the
reason of the first problem."""

from __future__ import annotations

import argparse

from assets.settings import Settings


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="meshline validate", description=__doc__).parse_args(argv)
    from expectations.registry import Registry

    settings = Settings.from_env()
    reg = Registry()
    pins = reg.pins()  # a pin naming a contract or a version that does not exist is refused here
    config = settings.config()
    for flow in config.flows:
        bounds = config.flow_boundaries(flow)
        rules = config.rules.get(flow, [])
        print(f"{flow}: {len(bounds)} boundar{'y' if len(bounds) == 1 else 'ies'} "
              f"({', '.join(f'{b.name}@{reg.get(b.contract, b.contract_version).version}' for b in bounds)}), "
              f"{len(rules)} rule(s)")
        for rule in rules:
            print(f"  {rule.name} [{rule.kind}, {rule.severity}]: {rule.words()}")
    print(f"{config.path}: valid; {len(pins)} pinned contract(s) in {reg.root}")
    return 0
