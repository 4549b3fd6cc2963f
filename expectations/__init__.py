"""Meshline contracts: versioned YAML per boundary, compiled to Great Expectations suites.

Nothing in this package imports Dagster or the rest of Meshline; `great_expectations` is imported
lazily (only by `expectations.compiler` and `expectations.validation`) because it costs seconds.
"""

from expectations.contract import Column, Contract
from expectations.reasons import ContractError, ReasonCode
from expectations.registry import load_contract, load_contracts

__all__ = ["Column", "Contract", "ContractError", "ReasonCode", "load_contract", "load_contracts"]
