"""The exact timing of deterministic servers in series, vectorised over items.

One replica taking items that may start at x_0, x_1, ... in order, one every `interval`,
starts item k at

    s_k = max(x_k, s_{k-1} + interval) = k*interval + max_{j<=k} (x_j - j*interval),

a running maximum: one `np.maximum.accumulate` per server (max-plus algebra). Item k then
reaches the next server at s_k + latency.

A bounded FIFO of depth D after a server lets it start item k only once item k-D has
started at the next server (the sender stalls: back-pressure). That couples each server
to the one after it, but only D items back: so items go in chunks of D. Chunk c of server
j needs chunk c of server j-1 (its arrivals), chunk c-1 of server j+1 (the FIFO) and chunk
c-1 of server j itself (its previous items): every (server j, chunk c) with the same
2c + j is independent of the others, so a wavefront sweeps them all at once, one numpy
call per step over ~m/2 chunks (2C + m steps instead of C x m). With unbounded FIFOs the
whole run is one chunk. Starts stay in item order (ready times do), so a FIFO's order is
the item order.

Both paths compute, element by element, the same floating-point operations as the plain
chunk-by-chunk loop (tests/test_sim_recurrence.py holds them bit-identical)."""

from __future__ import annotations

import numpy as np

from conveyor.sim.model import Server


def scan(ready: np.ndarray, interval: float) -> np.ndarray:
    """Start times of one replica taking items that may start at `ready` (in order)."""
    k = np.arange(ready.size, dtype=np.float64) * interval
    return np.maximum.accumulate(ready - k) + k


def start_times(path: tuple[Server, ...], arrivals: np.ndarray, fifo_depth: int | None = None) -> np.ndarray:
    """Start times [server, item] of items arriving at `arrivals` (sorted). Arrivals at
    server j are `arrive_row(path, arrivals, start, j)`."""
    arrivals = np.ascontiguousarray(arrivals, dtype=np.float64)
    n = arrivals.size
    if not fifo_depth or fifo_depth >= n:  # a FIFO deeper than the run never fills
        return _unbounded(path, arrivals)
    return _wavefront(path, arrivals, int(fifo_depth))


def arrive_row(path: tuple[Server, ...], arrivals: np.ndarray, start: np.ndarray, j: int,
               out: np.ndarray | None = None) -> np.ndarray:
    """When each item reaches server j: the arrivals for j = 0, else its start at j-1
    plus that server's latency (the same sum the recurrence used)."""
    if j == 0:
        return arrivals
    return np.add(start[j - 1], path[j - 1].latency_s, out=out)


def starts(path: tuple[Server, ...], arrivals: np.ndarray, fifo_depth: int | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(arrive, start) as arrays [server, item] for items arriving at `arrivals` (sorted)."""
    start = start_times(path, arrivals, fifo_depth)
    arrive = np.empty_like(start)
    for j in range(len(path)):
        arrive[j] = arrive_row(path, arrivals, start, j)
    return arrive, start


def _unbounded(path: tuple[Server, ...], arrivals: np.ndarray) -> np.ndarray:
    m, n = len(path), arrivals.size
    start = np.empty((m, n))
    index = np.arange(n, dtype=np.float64)
    k, buf, t = np.empty(n), np.empty(n), arrivals
    nxt = np.empty(n)
    for j, server in enumerate(path):
        row, r = start[j], server.replicas
        if r == 1:  # scan(t, interval) without its temporaries
            np.multiply(index, server.interval_s, out=k)
            np.subtract(t, k, out=buf)
            np.maximum.accumulate(buf, out=buf)
            np.add(buf, k, out=row)
        else:  # round robin: items o, o+r, ... are one replica's
            for o in range(min(r, n)):
                row[o::r] = scan(t[o::r], server.interval_s)
        t = np.add(row, server.latency_s, out=nxt)
    return start


def _wavefront(path: tuple[Server, ...], arrivals: np.ndarray, depth: int) -> np.ndarray:
    """Bounded FIFOs: the chunked recurrence (chunks of `depth` items, offsets local to a
    chunk), swept by wavefronts of independent (server, chunk) pairs."""
    m, n, D = len(path), arrivals.size, depth
    C = -(-n // D)
    rmax = max(s.replicas for s in path)
    F = max(1, -(-rmax // D))  # leading chunks of -inf: no FIFO / previous-item constraint yet
    L = (F + C) * D  # one row: F pad chunks, then C chunks of D items
    # rows: 0 the arrivals (as a server of latency 0), 1..m the servers, m+1 no FIFO after the last
    S = np.full((m + 2, L), -np.inf)
    S[0, F * D:F * D + n] = arrivals
    S[0, F * D + n:] = arrivals[-1]  # padding items after the last: they never reach back
    flat = S.reshape(-1)
    interval = np.array([s.interval_s for s in path])
    lat_before = np.array([0.0] + [s.latency_s for s in path[:-1]])  # latency of the server feeding j
    reps = [s.replicas for s in path]
    pos = np.arange(D, dtype=np.float64)
    step = 8 * (2 * L - D)  # from (server j, chunk c) to (server j+2, chunk c-1)
    buf = np.empty((m // 2 + 1, D))
    views = []
    for par in (0, 1):  # servers j = par, par+2, ...: active together on steps of this parity
        js = list(range(par, m, 2))
        if not js:
            views.append(None)
            continue
        base = (par + 1) * L + F * D  # server j=par, chunk 0, item 0
        shape, strides = (C + len(js) - 1, len(js), D), (8 * D, step, 8)

        def view(offset, base=base, shape=shape, strides=strides):
            return np.lib.stride_tricks.as_strided(flat[base + offset:], shape=shape, strides=strides)
        # view[q, a, p]: server j = par + 2a, chunk c = q - a, item p of the chunk
        js_a = np.array(js)
        held = []  # replicated servers: (a, r, j, its ready row, its offsets, a scan buffer)
        for a, j in enumerate(js):
            r = reps[j]
            if r > 1:
                off_r = np.floor_divide(np.arange(D), r).astype(np.float64) * interval[j]
                held.append((a, r, j, np.empty(D), off_r, np.empty(-(-D // r) * r)))
        views.append((view(0), view(-L), view(L - D), view(-1), len(js), lat_before[js_a][:, None],
                      interval[js_a], pos[None, :] * interval[js_a][:, None], held))
    add, maximum, subtract, accumulate = np.add, np.maximum, np.subtract, np.maximum.accumulate
    carry = np.empty(m // 2 + 1)
    for tau in range(2 * (C - 1) + m):
        v = views[tau % 2]
        if v is None:  # a single server: odd steps have nothing to do
            continue
        out_v, arrive_v, fifo_v, prev_v, ncols, lat, ivl, offs, held = v
        q = tau // 2
        a_lo, a_hi = max(0, q - (C - 1)), min(ncols - 1, q) + 1
        if a_lo >= a_hi:
            continue
        if a_lo == 0 and a_hi == ncols:  # every server of this parity is active: no slicing
            out, arrive, fifo, prev_col = out_v[q], arrive_v[q], fifo_v[q], prev_v[q, :, 0]
            lat_s, ivl_s, off = lat, ivl, offs
        else:
            out, arrive, fifo, prev_col = out_v[q, a_lo:a_hi], arrive_v[q, a_lo:a_hi], fifo_v[q, a_lo:a_hi], \
                prev_v[q, a_lo:a_hi, 0]
            lat_s, ivl_s, off = lat[a_lo:a_hi], ivl[a_lo:a_hi], offs[a_lo:a_hi]
        ready = buf[:a_hi - a_lo]
        add(arrive, lat_s, out=ready)        # t = start at j-1 + its latency
        maximum(ready, fifo, out=ready)      # item k waits for k-D to start at j+1
        busy = []
        for h in held:
            a = h[0]
            if a_lo <= a < a_hi:  # a replicated server: its previous item of the same replica is k - r
                _, r, j, rr, _, _ = h
                row0 = (j + 1) * L + (F + q - a) * D
                w = min(r, D)
                rr[:] = ready[a - a_lo]
                maximum(rr[:w], flat[row0 - r:row0 - r + w] + interval[j], out=rr[:w])
                busy.append(h)
        col = ready[:, 0]  # one replica: the previous item is the last of the chunk before
        c = carry[:a_hi - a_lo]
        add(prev_col, ivl_s, out=c)
        maximum(col, c, out=col)
        subtract(ready, off, out=ready)
        accumulate(ready, axis=1, out=ready)
        add(ready, off, out=out)
        for a, r, j, rr, off_r, pad in busy:  # round robin in the chunk: positions o, o+r, ... per replica
            subtract(rr, off_r, out=pad[:D])  # pad's tail (past D) never reaches back: left as is
            grid = pad.reshape(-1, r)
            accumulate(grid, axis=0, out=grid)
            add(pad[:D], off_r, out=out[a - a_lo])
    return S[1:m + 1, F * D:F * D + n]
