"""Dagster wiring for Meshline: settings, resources, definitions, jobs, schedules, sensors and the CLI.

No business logic lives here; it imports `assets` and `expectations`, never the other way round.
"""
