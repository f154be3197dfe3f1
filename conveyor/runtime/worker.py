"""What every executor runs per stage: a Device holding the stage resident, fed with the
bundle of values travelling down the pipeline. Shared by the local and Ray executors.

Paced mode. An emulated FPGA stage computes at the speed of this machine, not of the board
the plan modeled. With `paced=True` each result carries the time at which the modeled board
would have released it (`RELEASE_KEY`, wall-clock seconds), and whoever receives it — the
next stage, or the Pipeline for the last one — does not start on it before then. The
release time follows the plan's timing model of the stage (`Pacer`): a dataflow stage takes
a new item every `interval` but hands each one on `latency` after it started (latency may
exceed the interval: items overlap inside the stage), then its outgoing link when that is
a pipeline stage of its own. Holding at the receiver rather than the sender lets a stage
start its next item while its previous result is still "in the pipe", so throughput and
latency both follow the plan while the executors stay one-item-at-a-time per stage.
Stages on host backends (cpu, gpu) are not paced — their real time is what the plan's
host model predicts — but they honour the release times they receive.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from typing import Mapping, Sequence

import numpy as np

from conveyor.runtime.device import Device, open_device
from conveyor.runtime.stages import StageSpec

#: the bundle entry holding a paced item's release time (float64, wall-clock seconds)
RELEASE_KEY = "conveyor:release_at"
#: backends whose stages are paced (they stand in for hardware that is faster or slower)
PACED_BACKENDS = ("emulator",)


class Pacer:
    """The plan's timing of one stage: servers in series, each (interval, latency) seconds.

    Item k reaches server j at a_k and starts at s_k = max(a_k, s_{k-1} + interval_j), leaving
    at s_k + latency_j for the next server. This is how a pipelined hardware stage behaves;
    the clock is wall time so that release times mean the same in every process (across
    machines, as far as their clocks agree)."""

    def __init__(self, servers: Sequence[tuple[float, float]], time_scale: float = 1.0):
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.servers = [(float(i) * time_scale, float(l) * time_scale) for i, l in servers]
        self.free = [0.0] * len(self.servers)  # when each server takes its next item
        self.overruns = 0                      # items computed slower than the modeled interval

    def start(self, arrival: float) -> float:
        """When an item that may start at `arrival` starts (the stage's first server free)."""
        return max(arrival, self.free[0]) if self.servers else arrival

    def release(self, start: float, done: float) -> float:
        """The release time of the item started at `start` whose compute finished at `done`
        (never before it: a result cannot leave before it exists)."""
        t = start
        for j, (interval, latency) in enumerate(self.servers):
            s = max(t, self.free[j])
            self.free[j] = s + interval
            t = s + latency
        if self.servers and done > start + self.servers[0][0]:
            self.overruns += 1
        return max(t, done)


def release_time(bundle: Mapping[str, np.ndarray]) -> float | None:
    v = bundle.get(RELEASE_KEY)
    return None if v is None else float(v)


#: wait_until sleeps until this long before its deadline, then yields in short sleeps
FINAL_WAIT_S = 2e-4
#: the timer slack wait_until asks for (ns): Linux may wake a sleeping thread up to its slack
#: late, 50 us by default; measured here (2 cores, loaded): time.sleep(0) returns after 76 us
#: at the default slack, 18 us at 1 us
TIMER_SLACK_NS = 1000
_PR_SET_TIMERSLACK = 29  # <linux/prctl.h>
_thread_state = threading.local()


def fine_timer_slack() -> None:
    """Once per thread, on Linux: ask for a timer slack of TIMER_SLACK_NS (per thread; it only
    makes this thread's timed waits wake closer to their deadlines)."""
    if getattr(_thread_state, "slack_set", False):
        return
    _thread_state.slack_set = True
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(TIMER_SLACK_NS), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the default slack, waits ~50 us later


def wait_until(deadline: float) -> None:
    """Return at wall time `deadline`, never before it, without holding the GIL meanwhile.

    It sleeps until FINAL_WAIT_S before the deadline, then sleeps in `time.sleep(0)` steps
    (each releases the GIL and takes ~20 us at the timer slack set here) until the deadline
    has passed. It used to sleep to 1 ms before and spin the rest, holding the GIL: in the
    serving process the paced release thread then held it ~0.9 ms per request, and the HTTP
    event loop waited behind it (docs/serving.md has the measurements)."""
    fine_timer_slack()
    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            return
        # the sleep runs on the monotonic clock, the deadline is wall time: the loop re-checks
        time.sleep(remaining - FINAL_WAIT_S if remaining > FINAL_WAIT_S else 0)


class StageWorker:
    """Loads the stage once (weights resident), then processes bundles one at a time.

    A bundle maps tensor names to arrays: the values this stage or a later one reads.
    The result is the bundle for the next stage (this stage's outputs plus what later
    stages still need), with its release time when paced (module docstring)."""

    def __init__(self, spec: StageSpec, paced: bool = False, time_scale: float = 1.0):
        self.spec = spec
        self.paced = paced
        self.pacer = Pacer(spec.timing if spec.backend in PACED_BACKENDS else (), time_scale) if paced else None
        self.device: Device = open_device(spec)
        self.items = 0
        self.busy_s = 0.0   # computing (not waiting for a release time)

    @property
    def overruns(self) -> int:
        return self.pacer.overruns if self.pacer is not None else 0

    def process(self, bundle: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = None
        if self.pacer is not None:
            arrival = release_time(bundle)
            start = self.pacer.start(time.time() if arrival is None else max(arrival, time.time()))
            wait_until(start)
        t0 = time.perf_counter()
        outputs = self.device({name: bundle[name] for name in self.spec.needs})
        merged = {**bundle, **outputs}
        result = {name: merged[name] for name in self.spec.forwards}
        self.busy_s += time.perf_counter() - t0
        self.items += 1
        if self.pacer is not None:
            result[RELEASE_KEY] = np.array(self.pacer.release(start, time.time()), np.float64)
        return result

    def close(self) -> None:
        self.device.close()
