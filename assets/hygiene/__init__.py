"""Nightly hygiene beside the loads: synthetic end-to-end runs, the audit checklist, the report."""
