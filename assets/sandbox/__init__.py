"""Simulated source systems with fault injection, for the demo, the tests and the synthetic runs."""

from assets.sandbox.lead_handoff import FaultRates, LeadHandoffSandbox

__all__ = ["FaultRates", "LeadHandoffSandbox"]
