"""The time scale that keeps a paced run honest on this machine (slow motion).

A paced stage holds every item until the plan's modeled time has passed; when this machine
emulates a stage slower than the modeled board computes it, items overrun and the run
measures the emulator, not the plan. Stretching every modeled time by a scale fixes that.
The scale is chosen so that each stage's emulation takes at most half its stretched interval,
and all stages together at most half the cores (the rule benchmarks/runtime.py uses), rounded
up to a round number."""

from __future__ import annotations

import math
import os
from typing import Sequence

SCALES = (1, 2, 5, 10, 20, 30, 50, 100, 200, 500, 1000)


def calibrated_time_scale(compute_s: Sequence[float], plan, cores: int | None = None) -> float:
    """`compute_s[i]`: seconds this machine takes per item on one device of plan stage i."""
    cores = cores or os.cpu_count() or 1
    per_stage = [c / (st.stage_time_s * (1 + len(st.replicas)))
                 for c, st in zip(compute_s, plan.stages) if st.stage_time_s > 0]
    need = max([2 * r for r in per_stage] + [2 * sum(compute_s) / (cores * plan.interval_s)])
    if need <= SCALES[-1]:
        return float(next(s for s in SCALES if s >= need))
    mag = 10 ** math.floor(math.log10(need))  # beyond the table: the next 1-2-5 step
    return float(next(m * mag for m in (1, 2, 5, 10) if m * mag >= need))


def measured_compute_s(stage_stats: Sequence[dict]) -> list[float]:
    """Seconds per item each stage computed in a run (`Pipeline.stats()["stages"]`)."""
    return [(st.get("busy_s") or 0.0) / st["items"] if st.get("items") else 0.0 for st in stage_stats]
