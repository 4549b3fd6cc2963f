"""Remediation: incidents, compensating backfills, dead-letter replay, paging, the audit log."""
