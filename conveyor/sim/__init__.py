"""Discrete-event model of a plan under load: throughput, latency percentiles, queues,
utilisation and energy per inference — all modeled (docs/simulate.md)."""

from conveyor.sim.result import SimResult, StageResult
from conveyor.sim.simulate import simulate

__all__ = ["simulate", "SimResult", "StageResult"]
