"""The exact timing of deterministic servers in series, vectorised over items.

One replica taking items x_0, x_1, ... (the times each may start) in order, one every
`interval`, starts item k at

    s_k = max(x_k, s_{k-1} + interval) = k*interval + max_{j<=k} (x_j - j*interval),

a running maximum: one `np.maximum.accumulate` per server (max-plus algebra). Item k then
reaches the next server at s_k + latency.

A bounded FIFO of depth D after a server lets it start item k only once item k-D has
started at the next server (the sender stalls: back-pressure), which couples each server
to the one after it. The coupled system is monotone in max-plus terms, so sweeping the
servers with the block times of the previous sweep rises to its unique solution; the
sweeps stop when nothing moves (exact) and give up after `max_sweeps` (the caller then
uses the event simulation)."""

from __future__ import annotations

import numpy as np

from conveyor.sim.model import Server


def scan(ready: np.ndarray, interval: float) -> np.ndarray:
    """Start times of one replica taking items that may start at `ready` (in order)."""
    k = np.arange(ready.size, dtype=np.float64) * interval
    return np.maximum.accumulate(ready - k) + k


def _serve(server: Server, ready: np.ndarray) -> np.ndarray:
    n = server.replicas
    if n == 1:
        return scan(ready, server.interval_s)
    start = np.empty_like(ready)
    for r in range(n):  # round robin: replica r takes items r, r+n, r+2n, ...
        start[r::n] = scan(ready[r::n], server.interval_s)
    return start


def starts(path: tuple[Server, ...], arrivals: np.ndarray, fifo_depth: int | None = None,
           max_sweeps: int = 200) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """(arrive, start) per server for items arriving at `arrivals` (sorted); None when the
    blocking sweeps did not settle within `max_sweeps`."""
    m = len(path)
    arrive: list[np.ndarray] = [None] * m  # type: ignore[list-item]
    start: list[np.ndarray] = [None] * m   # type: ignore[list-item]
    block: list[np.ndarray | None] = [None] * m
    for _ in range(max_sweeps if fifo_depth else 1):
        moved = False
        t = arrivals
        for j, server in enumerate(path):
            arrive[j] = t
            ready = t if block[j] is None else np.maximum(t, block[j])
            s = _serve(server, ready)
            if start[j] is None or not np.array_equal(s, start[j]):
                moved = True
            start[j] = s
            t = s + server.latency_s
        if not fifo_depth:
            return arrive, start
        if not moved:
            return arrive, start
        d = int(fifo_depth)
        for j in range(m - 1):  # item k may start at j once item k-D started at j+1
            b = np.full(arrivals.size, -np.inf)  # (starts stay in item order: ready times do)
            if d < arrivals.size:
                b[d:] = start[j + 1][:-d]
            block[j] = b
    return None
