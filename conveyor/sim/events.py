"""The same model as an event simulation (simpy), for what the recurrence does not cover —
a closed loop, where each request enters when an earlier one leaves — and as its check.

Each replica of each server is a process taking its items in order: it starts item k at
max(arrival, its previous start + interval, the time item k-D started at the next server
when a FIFO of depth D follows), and hands it on `latency` later."""

from __future__ import annotations

import numpy as np
import simpy

from conveyor.sim.model import Server


def run(path: tuple[Server, ...], arrivals: np.ndarray | None = None, closed: int | None = None,
        requests: int = 0, fifo_depth: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrive, start) as arrays [server, item], and each item's completion time. Open loop:
    items enter at `arrivals`; closed loop: `closed` items enter at 0 and each completion
    lets the next one in, until `requests` have entered."""
    n = len(arrivals) if arrivals is not None else int(requests)
    m = len(path)
    env = simpy.Environment()
    arrive = np.full((m, n), np.nan)
    start = np.full((m, n), np.nan)
    done = np.full(n, np.nan)
    started = [[env.event() for _ in range(n)] for _ in range(m)]
    inbox = [[simpy.Store(env) for _ in range(s.replicas)] for s in path]
    entered = [0]

    def enter(k: int) -> None:
        arrive[0, k] = env.now
        inbox[0][k % path[0].replicas].put(k)

    def deliver(j: int, k: int, latency: float):
        yield env.timeout(latency)
        if j + 1 < m:
            arrive[j + 1, k] = env.now
            inbox[j + 1][k % path[j + 1].replicas].put(k)
            return
        done[k] = env.now
        if closed and entered[0] < n:
            enter(entered[0])
            entered[0] += 1

    def replica(j: int, r: int):
        s = path[j]
        free = -np.inf
        while True:
            k = yield inbox[j][r].get()
            if free > env.now:
                yield env.timeout(free - env.now)
            if fifo_depth and j + 1 < m and k - fifo_depth >= 0:
                yield started[j + 1][k - fifo_depth]  # back-pressure: the FIFO after j is full
            start[j, k] = env.now
            started[j][k].succeed()
            free = env.now + s.interval_s
            env.process(deliver(j, k, s.latency_s))

    for j, s in enumerate(path):
        for r in range(s.replicas):
            env.process(replica(j, r))

    if closed:
        def source():
            for _ in range(min(closed, n)):
                enter(entered[0])
                entered[0] += 1
            yield env.timeout(0)
        env.process(source())
    else:
        def source():
            for k, t in enumerate(arrivals):
                if t > env.now:
                    yield env.timeout(t - env.now)
                enter(k)
        env.process(source())
    env.run()
    return arrive, start, done
