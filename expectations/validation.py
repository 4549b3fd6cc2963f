"""Run a contract's compiled Great Expectations suite over a pandas DataFrame.

What comes back is a summary safe to put in Dagster metadata and logs: counts per expectation and
reason code, never the unexpected values themselves (they can be PII).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from expectations.contract import Contract


@dataclass
class SuiteResult:
    success: bool
    evaluated: int
    failed_expectations: list[str] = field(default_factory=list)
    unexpected_by_reason: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    # Row index -> ["code:column", ...] when asked for row-level results (tests and test vectors).
    row_reasons: dict[int, list[str]] = field(default_factory=dict)
    docs_url: str | None = None  # the Data Docs page of this validation, when it was stored


_INDEX = "__meshline_row__"


def summarize(res: Any, rows: int, row_level: bool = False) -> SuiteResult:
    """Counts per expectation and reason code from a GX validation result; no values."""
    out = SuiteResult(success=bool(res.success), evaluated=len(res.results), rows=rows)
    for r in res.results:
        meta = r.expectation_config.meta or {}
        code, column = meta.get("reason_code", "unknown"), meta.get("column", "?")
        if r.success:
            continue
        out.failed_expectations.append(f"{r.expectation_config.type}({column})")
        out.unexpected_by_reason[code] += int((r.result or {}).get("unexpected_count") or 0)
        if row_level:
            for item in (r.result or {}).get("unexpected_index_list") or []:
                out.row_reasons.setdefault(int(item[_INDEX]), []).append(f"{code}:{column}")
    return out


# What a stored result (Data Docs) may hold: counts, never sample values (they can be PII).
NO_VALUES = {"result_format": "BASIC", "partial_unexpected_count": 0}


def validate_frame(df: pd.DataFrame, contract: Contract, row_level: bool = False) -> SuiteResult:
    """Validate in an in-memory GX context (test vectors, parity tests)."""
    from expectations.compiler import compile_suite, gx_context

    ctx = gx_context()
    name = f"{contract.name}_{contract.version}"
    try:
        source = ctx.data_sources.get(name)
    except (KeyError, ValueError):
        source = ctx.data_sources.add_pandas(name)
    try:
        asset = source.get_asset("frame")
    except LookupError:
        asset = source.add_dataframe_asset("frame")
    try:
        batch_def = asset.get_batch_definition("whole")
    except KeyError:
        batch_def = asset.add_batch_definition_whole_dataframe("whole")
    suite = compile_suite(contract)
    frame = df.reset_index(drop=True)
    result_format: dict[str, Any] = NO_VALUES
    if row_level:
        frame = frame.assign(**{_INDEX: range(len(frame))})
        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": [_INDEX]}
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    return summarize(batch.validate(suite, result_format=result_format), len(frame), row_level)
