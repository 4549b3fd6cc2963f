"""Compile a contract to a Great Expectations 1.x ExpectationSuite.

Each expectation carries `meta.reason_code` and `meta.column`, so a GX result maps back to the same
reason codes the loader writes on dead letters. Importing this module imports great_expectations
(seconds): only checks, `meshline contracts compile` and tests do.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402

from expectations.contract import Contract  # noqa: E402
from expectations.reasons import ReasonCode  # noqa: E402


@lru_cache(maxsize=1)
def gx_context() -> Any:
    """One ephemeral (in-memory) GX context per process, progress bars off."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def suite_name(contract: Contract) -> str:
    """`marketing_leads__v1_0_0`: GX turns dots into folders in Data Docs, so none here."""
    return f"{contract.name}__v{contract.version.replace('.', '_')}"


# Every expectation a contract compiles to judges each row on its own (or the batch's columns), never
# an aggregate of rows: rows that pass as one batch pass in any subset of them, which is what lets a
# backfill's run validate a range of partitions at once (assets.flows.boundary).
ROW_WISE = frozenset({"ExpectColumnToExist", "ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToMatchRegex",
                      "ExpectColumnValuesToBeInSet", "ExpectColumnValuesToBeBetween"})


def compile_suite(contract: Contract) -> gx.ExpectationSuite:
    gx_context()  # GX 1.x builds suites only inside an active context
    suite = gx.ExpectationSuite(
        name=suite_name(contract),
        meta={"contract": contract.name, "contract_version": contract.version,
              "severity": contract.severity, "owners": dict(contract.owners)},
    )

    def add(expectation: Any, code: ReasonCode, column: str) -> None:
        expectation.meta = {"reason_code": code.value, "column": column}
        suite.add_expectation(expectation)

    for col in contract.columns:
        add(gxe.ExpectColumnToExist(column=col.name), ReasonCode.TYPE_MISMATCH, col.name)
        if col.name == contract.idempotency_key:
            add(gxe.ExpectColumnValuesToNotBeNull(column=col.name), ReasonCode.NULL_KEY, col.name)
        elif col.required:
            add(gxe.ExpectColumnValuesToNotBeNull(column=col.name), ReasonCode.MISSING_REQUIRED, col.name)
        if col.regex is not None:
            add(gxe.ExpectColumnValuesToMatchRegex(column=col.name, regex=col.regex),
                ReasonCode.INVALID_FORMAT, col.name)
        if col.allowed_values is not None:
            add(gxe.ExpectColumnValuesToBeInSet(column=col.name, value_set=list(col.allowed_values)),
                ReasonCode.UNKNOWN_VALUE, col.name)
        if col.min is not None or col.max is not None:
            add(gxe.ExpectColumnValuesToBeBetween(column=col.name, min_value=col.min, max_value=col.max),
                ReasonCode.OUT_OF_RANGE, col.name)
    return suite
