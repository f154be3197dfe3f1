"""The fast recurrence (one pass per server; bounded FIFOs swept by wavefronts) against the
plain chunk-by-chunk loop it replaced: bit-identical start times for replicated servers,
FIFO depths below, at and above the replica counts, and runs that do not fill a chunk."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor.sim.model import Server
from conveyor.sim.recurrence import scan, start_times, starts


def reference_starts(path, arrivals, fifo_depth=None):
    """The chunked recurrence as first written: chunks of `fifo_depth` items, servers in
    order within a chunk (the definition the fast paths must reproduce bit for bit)."""
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
                p0 = max(0, fifo_depth - c0)
                ready = t.copy()
                ready[p0:] = np.maximum(t[p0:], start[j + 1, c0 + p0 - fifo_depth:c1 - fifo_depth])
            r = server.replicas
            if c0 > 0:
                p1 = min(r, c1 - c0)
                lo = max(0, r - c0)
                if lo < p1:
                    ready = ready.copy() if ready is t else ready
                    ready[lo:p1] = np.maximum(ready[lo:p1], start[j, c0 + lo - r:c0 + p1 - r] + server.interval_s)
            row = start[j, c0:c1]
            if r == 1:
                row[:] = scan(ready, server.interval_s)
            else:
                for o in range(min(r, c1 - c0)):
                    row[o::r] = scan(ready[o::r], server.interval_s)
            t = row + server.latency_s
    return arrive, start


def _path(rng, m, replicas):
    out = []
    for j in range(m):
        interval = float(rng.uniform(0.5e-3, 1.5e-3))
        out.append(Server(f"s{j}", j, "compute", interval * replicas[j], interval * rng.uniform(0.5, 4.0), replicas[j]))
    return tuple(out)


@pytest.mark.parametrize("fifo", [None, 1, 2, 3, 5, 8, 64, 10_000])
@pytest.mark.parametrize("replicas", [(1, 1, 1, 1, 1), (1, 2, 1, 3, 1), (3, 1, 1, 1, 2), (2,), (1, 3)])
def test_fast_recurrence_is_bit_identical_to_the_chunked_loop(fifo, replicas):
    rng = np.random.default_rng(len(replicas) * 100 + (fifo or 0))
    path = _path(rng, len(replicas), replicas)
    for n in (1, 7, 301):
        arrivals = np.cumsum(rng.exponential(0.4e-3, n)) if n > 1 else np.zeros(1)  # above capacity
        ref_arrive, ref_start = reference_starts(path, arrivals, fifo)
        arrive, start = starts(path, arrivals, fifo)
        np.testing.assert_array_equal(start, ref_start)
        np.testing.assert_array_equal(arrive, ref_arrive)
        if n == 301 and fifo and fifo <= 8 and len(path) > 1:
            assert np.any(start != reference_starts(path, arrivals, None)[1])  # the FIFO does bind here


def test_start_times_of_a_saturated_fifo_chain_are_the_closed_form():
    # three servers, the last the slowest; depth 1 ties each server to the next one's start
    path = (Server("a", 0, "compute", 1.0, 1.0), Server("b", 1, "compute", 1.0, 1.0), Server("c", 2, "compute", 4.0, 4.0))
    start = start_times(path, np.zeros(6), fifo_depth=1)
    assert start[2].tolist() == [2.0, 6.0, 10.0, 14.0, 18.0, 22.0]  # the bottleneck paces everything
    assert start[0, 2:].tolist() == [2.0, 6.0, 10.0, 14.0]          # item k waits for k-1 to start at b
