"""The exact timing of deterministic servers in series, vectorised over items.

One replica taking items that may start at x_0, x_1, ... in order, one every `interval`,
starts item k at

    s_k = max(x_k, s_{k-1} + interval) = k*interval + max_{j<=k} (x_j - j*interval),

a running maximum: one `np.maximum.accumulate` per server (max-plus algebra). Item k then
reaches the next server at s_k + latency.

A bounded FIFO of depth D after a server lets it start item k only once item k-D has
started at the next server (the sender stalls: back-pressure). That couples each server
to the one after it, but only D items back: so items go in chunks of D, each chunk swept
forward through the servers with the block times of earlier chunks already known. With
unbounded FIFOs the whole run is one chunk. Starts stay in item order (ready times do), so
a FIFO's order is the item order."""

from __future__ import annotations

import numpy as np

from conveyor.sim.model import Server


def scan(ready: np.ndarray, interval: float) -> np.ndarray:
    """Start times of one replica taking items that may start at `ready` (in order)."""
    k = np.arange(ready.size, dtype=np.float64) * interval
    return np.maximum.accumulate(ready - k) + k


def starts(path: tuple[Server, ...], arrivals: np.ndarray, fifo_depth: int | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(arrive, start) as arrays [server, item] for items arriving at `arrivals` (sorted)."""
    m, n = len(path), arrivals.size
    arrive = np.empty((m, n))
    start = np.empty((m, n))
    chunk = int(fifo_depth) if fifo_depth else max(n, 1)
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        t = arrivals[c0:c1]
        for j, server in enumerate(path):
            arrive[j, c0:c1] = t
            ready = t
            if fifo_depth and j + 1 < m and c1 > fifo_depth:
                # item k waits for item k-D to start at j+1 (positions p with c0+p >= D)
                p0 = max(0, fifo_depth - c0)
                ready = t.copy()
                ready[p0:] = np.maximum(t[p0:], start[j + 1, c0 + p0 - fifo_depth:c1 - fifo_depth])
            r = server.replicas
            if c0 > 0:  # the previous item of the same replica, k - r, when in an earlier chunk
                p1 = min(r, c1 - c0)
                lo = max(0, r - c0)
                if lo < p1:
                    ready = ready.copy() if ready is t else ready
                    ready[lo:p1] = np.maximum(ready[lo:p1], start[j, c0 + lo - r:c0 + p1 - r] + server.interval_s)
            row = start[j, c0:c1]
            if r == 1:
                row[:] = scan(ready, server.interval_s)
            else:
                for o in range(min(r, c1 - c0)):  # round robin: positions o, o+r, ... are one replica's
                    row[o::r] = scan(ready[o::r], server.interval_s)
            t = row + server.latency_s
    return arrive, start
