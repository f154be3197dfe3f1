"""What every executor runs per stage: a Device holding the stage resident, fed with the
bundle of values travelling down the pipeline. Shared by the local and Ray executors."""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from conveyor.runtime.device import Device, open_device
from conveyor.runtime.stages import StageSpec


class StageWorker:
    """Loads the stage once (weights resident), then processes bundles one at a time.

    A bundle maps tensor names to arrays: the values this stage or a later one reads.
    The result is the bundle for the next stage (this stage's outputs plus what later
    stages still need). In paced mode the result is held back until the plan's modeled
    stage time has passed since the work began, so that measured throughput and latency
    can be held against the plan's prediction."""

    def __init__(self, spec: StageSpec, paced: bool = False):
        self.spec = spec
        self.paced = paced
        self.device: Device = open_device(spec)
        self.items = 0
        self.busy_s = 0.0

    def process(self, bundle: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        outputs = self.device({name: bundle[name] for name in self.spec.needs})
        merged = {**bundle, **outputs}
        result = {name: merged[name] for name in self.spec.forwards}
        if self.paced:
            remaining = self.spec.modeled_s - (time.perf_counter() - t0)
            if remaining > 0:
                _sleep_precisely(remaining)
        self.busy_s += time.perf_counter() - t0
        self.items += 1
        return result

    def close(self) -> None:
        self.device.close()


def _sleep_precisely(seconds: float) -> None:
    """time.sleep overshoots by up to a scheduler tick; finish the last stretch spinning."""
    end = time.perf_counter() + seconds
    if seconds > 2e-3:
        time.sleep(seconds - 1e-3)
    while time.perf_counter() < end:
        pass
