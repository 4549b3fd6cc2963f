"""Meshline's benchmark (`make bench`): not part of the distribution."""
