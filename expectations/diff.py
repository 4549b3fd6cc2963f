"""Contract diff: every change between two versions of a contract, classified breaking or not.

Breaking (consumers or producers must act): column removed, type narrowed, new required column, column
made required, allowed value removed (or a value list added), range narrowed (or added), pattern added or
changed, idempotency key / change token / locator changed. Not breaking: optional column added, column
made optional, allowed value added (or the list removed), range widened (or removed), pattern removed,
type widened. Everything else (owners, SLOs, severity, descriptions, PII flags, test vectors) is info.

A breaking change needs a major version bump; `check_bump` says whether the new version has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from expectations.contract import Column, Contract

# (old type, new type) pairs that accept every value the old type accepted.
WIDENINGS = {("integer", "number"), ("integer", "string"), ("number", "string"), ("date", "timestamp"),
             ("date", "string"), ("timestamp", "string"), ("boolean", "string")}

BREAKING, COMPATIBLE, INFO = "breaking", "compatible", "info"


@dataclass(frozen=True)
class Change:
    kind: str  # breaking | compatible | info
    what: str  # e.g. "column removed"
    subject: str  # e.g. "company"
    detail: str = ""

    def __str__(self) -> str:
        label = {BREAKING: "BREAKING", COMPATIBLE: "compatible", INFO: "info"}[self.kind]
        return f"{label:<10}  {self.what}: {self.subject}{f' ({self.detail})' if self.detail else ''}"


def _column_changes(a: Column, b: Column) -> list[Change]:
    out: list[Change] = []
    n = a.name
    if a.type != b.type:
        kind = COMPATIBLE if (a.type, b.type) in WIDENINGS else BREAKING
        out.append(Change(kind, "type widened" if kind == COMPATIBLE else "type narrowed", n, f"{a.type} → {b.type}"))
    if a.required != b.required:
        out.append(Change(BREAKING, "column made required", n) if b.required
                   else Change(COMPATIBLE, "column made optional", n))
    if a.allowed_values != b.allowed_values:
        if a.allowed_values is None:
            out.append(Change(BREAKING, "allowed values introduced", n, ", ".join(map(str, b.allowed_values or ()))))
        elif b.allowed_values is None:
            out.append(Change(COMPATIBLE, "allowed values removed (any value accepted)", n))
        else:
            removed = [v for v in a.allowed_values if v not in b.allowed_values]
            added = [v for v in b.allowed_values if v not in a.allowed_values]
            if removed:
                out.append(Change(BREAKING, "allowed value removed", n, ", ".join(map(str, removed))))
            if added:
                out.append(Change(COMPATIBLE, "allowed value added", n, ", ".join(map(str, added))))
    def lower_rises(old: float, new: float) -> bool:
        return new > old

    def upper_falls(old: float, new: float) -> bool:
        return new < old

    for bound, tighter in (("min", lower_rises), ("max", upper_falls)):
        old, new = getattr(a, bound), getattr(b, bound)
        if old == new:
            continue
        if new is None:
            out.append(Change(COMPATIBLE, "range widened", n, f"{bound} {old} removed"))
        elif old is None or tighter(old, new):
            out.append(Change(BREAKING, "range narrowed", n, f"{bound} {old} → {new}"))
        else:
            out.append(Change(COMPATIBLE, "range widened", n, f"{bound} {old} → {new}"))
    if a.regex != b.regex:
        if b.regex is None:
            out.append(Change(COMPATIBLE, "pattern removed", n))
        else:
            out.append(Change(BREAKING, "pattern added" if a.regex is None else "pattern changed", n,
                              str(b.pattern)))
    if a.pii != b.pii:
        out.append(Change(INFO, "PII flag changed", n, f"{a.pii} → {b.pii}"))
    return out


def diff(old: Contract, new: Contract) -> list[Change]:
    if old.name != new.name:
        return [Change(BREAKING, "contract renamed", old.name, f"→ {new.name}")]
    out: list[Change] = []
    for key in ("idempotency_key", "change_token", "locator"):
        if getattr(old, key) != getattr(new, key):
            out.append(Change(BREAKING, f"{key.replace('_', ' ')} changed", str(getattr(old, key)),
                              f"→ {getattr(new, key)}"))
    old_cols = {c.name: c for c in old.columns}
    new_cols = {c.name: c for c in new.columns}
    for name in old_cols:
        if name not in new_cols:
            out.append(Change(BREAKING, "column removed", name))
    for name, col in new_cols.items():
        if name not in old_cols:
            out.append(Change(BREAKING, "required column added", name) if col.required
                       else Change(COMPATIBLE, "optional column added", name))
        else:
            out += _column_changes(old_cols[name], col)
    for key in ("severity", "owners", "slos", "deprecated_after", "boundary_flow", "source_system", "source_table"):
        if getattr(old, key) != getattr(new, key):
            out.append(Change(INFO, f"{key.replace('_', ' ')} changed", str(getattr(old, key)),
                              f"→ {getattr(new, key)}"))
    return out


def breaking(changes: list[Change]) -> list[Change]:
    return [c for c in changes if c.kind == BREAKING]


def check_bump(old: Contract, new: Contract, changes: list[Change]) -> str | None:
    """None when the version bump fits the changes; otherwise why not."""
    if breaking(changes) and new.major <= old.major:
        return (f"{len(breaking(changes))} breaking change(s) need a major version bump: "
                f"{old.version} → {new.version} keeps major {new.major}")
    return None
