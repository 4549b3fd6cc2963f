"""The contract registry: contracts/<name>/<version>.yml side by side, and pins.yml naming the version
each boundary runs under."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from expectations.contract import CONTRACTS_DIR, Contract, parse_contract_file, parse_yaml
from expectations.reasons import ContractError

PINS = "pins.yml"


def semver(version: str) -> tuple[int, int, int]:
    try:
        major, minor, patch = (int(x) for x in version.split("."))
    except ValueError as exc:
        raise ContractError(f"not a MAJOR.MINOR.PATCH version: {version!r}") from exc
    return major, minor, patch


@lru_cache(maxsize=256)
def _parse_cached(path: str, mtime: float) -> Contract:
    return parse_contract_file(Path(path))


class Registry:
    def __init__(self, root: Path | None = None):
        # A team keeps its own contracts where MESHLINE_CONTRACTS_DIR says; the shipped ones otherwise.
        self.root = Path(root or os.environ.get("MESHLINE_CONTRACTS_DIR") or CONTRACTS_DIR)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*.yml")))

    def versions(self, name: str) -> list[str]:
        d = self.root / name
        if not d.is_dir():
            raise ContractError(f"{self.root}: no contract named {name!r} (known: {', '.join(self.names())})")
        return sorted((p.stem for p in d.glob("*.yml")), key=semver)

    def path(self, name: str, version: str) -> Path:
        return self.root / name / f"{version}.yml"

    def pins(self) -> dict[str, str]:
        path = self.root / PINS
        if not path.exists():
            return {}
        data = parse_yaml(path.read_text())[1] or {}
        if not isinstance(data, dict):
            raise ContractError(f"{path}: expected a mapping of contract name to version")
        pins = {str(k): str(v) for k, v in data.items()}
        for name, version in pins.items():
            if version not in self.versions(name):
                raise ContractError(f"{path}: {name}: pinned version {version} does not exist "
                                    f"(versions: {', '.join(self.versions(name))})")
        return pins

    def pinned(self, name: str) -> str:
        pins = self.pins()
        if name in pins:
            return pins[name]
        return self.versions(name)[-1]  # unpinned: the newest version

    def get(self, name: str, version: str | None = None) -> Contract:
        version = version or self.pinned(name)
        path = self.path(name, version)
        if not path.exists():
            raise ContractError(f"{path}: no version {version} of contract {name!r} "
                                f"(versions: {', '.join(self.versions(name))})")
        contract = _parse_cached(str(path), path.stat().st_mtime)
        if contract.name != name or contract.version != version:
            raise ContractError(f"{path}: file says {contract.name}@{contract.version}; "
                                f"its place says {name}@{version}")
        return contract

    def resolve(self, ref: str) -> Contract:
        """`name`, `name@version`, or a path to a contract file."""
        if ref.endswith((".yml", ".yaml")):
            return parse_contract_file(Path(ref))
        name, _, version = ref.partition("@")
        return self.get(name, version or None)

    def all_versions(self) -> list[Contract]:
        return [self.get(n, v) for n in self.names() for v in self.versions(n)]


def load_contract(name_or_path: str | Path, version: str | None = None,
                  contracts_dir: Path | None = None) -> Contract:
    """A contract by file path, or by name (`marketing_leads`, at its pinned version unless `version`)."""
    path = Path(name_or_path)
    if path.suffix in (".yml", ".yaml"):
        return parse_contract_file(path)
    return Registry(contracts_dir).get(str(name_or_path), version)


def load_contracts(contracts_dir: Path | None = None) -> dict[str, Contract]:
    """Every contract at its pinned version."""
    reg = Registry(contracts_dir)
    return {name: reg.get(name) for name in reg.names()}
