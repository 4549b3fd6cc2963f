"""Errors and dead-letter reason codes.

The hierarchy, drawn once::

    MeshlineError                      base of every error Meshline raises on purpose
    ├── ContractError                  a contract file is invalid (file, key and reason in the message)
    ├── SourceError                    a source system cannot be read
    │   ├── SourceUnreachable          it cannot be reached at all (transient: retried)
    │   └── SourceSchemaError          the source lacks a column the contract requires
    └── LoadError                      a load could not be committed (nothing was written)

Row-level problems are not exceptions: they are dead letters with one of the `ReasonCode`s below.
"""

from __future__ import annotations

from enum import StrEnum


class MeshlineError(Exception):
    """Base of every error Meshline raises on purpose."""


class ContractError(MeshlineError):
    """A contract file is invalid; the message names the file, the key and the reason."""


class SourceError(MeshlineError):
    """A source system cannot be read."""


class SourceUnreachable(SourceError):
    """The source cannot be reached at all (connection refused, unknown host, timeouts, a landing folder
    that is not mounted). Usually transient, so the asset's retry policy applies."""


class SourceSchemaError(SourceError):
    """The source lacks a column the contract requires; the load is refused and nothing is written."""


class LoadError(MeshlineError):
    """A load could not be committed; the transaction was rolled back."""


class ReasonCode(StrEnum):
    """Why a row was dead-lettered. One row can carry several, each tied to a column."""

    NULL_KEY = "null_key"  # the idempotency key is null
    MISSING_REQUIRED = "missing_required"  # a required column is null
    TYPE_MISMATCH = "type_mismatch"  # the value cannot be read as the contract's type
    INVALID_FORMAT = "invalid_format"  # the value does not match the column's pattern
    UNKNOWN_VALUE = "unknown_value"  # the value is not one of the allowed values
    OUT_OF_RANGE = "out_of_range"  # the value is outside the column's range
    MALFORMED_RECORD = "malformed_record"  # the source record could not be parsed at all (file, line)
