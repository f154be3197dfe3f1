"""Second pass: among the splits whose bottleneck is at most B*, one of least latency.

Latency is accumulated board by board, ``L = ((L - Q[j][a]) + Q[j][b]) + cut[b]``, so a
DP over (board, end position) with

    E_j(b) = min over feasible starts a of  ((E_{j-1}(a) - Q[j][a]) + Q[j][b]) + cut[b]

is exact in floating point: rounding is monotone, so the minimum over a can be taken on
X(a) = E_{j-1}(a) - Q[j][a] *before* adding the terms that depend on b only.  What is
left per board is "minimum of X over the feasible starts of b":

- stage mode: feasible starts form a window [L(b), b) (compute and memory are monotone
  in the start; the link at b is a property of b alone) -> sparse-table range minimum,
  O(m log m) numpy work per board;
- merged mode: a start is feasible iff h(a) = cut[a] - Q[j][a] is small enough for b
  (merged time ((h(a) + Q[j][b]) + cut[b]) is monotone in h(a)) and a lies in the
  memory window -> a 2-D query, answered offline by ThresholdRangeMin in
  O(m log^2 m) numpy work per board.

X is replaced by its rank (stable sort, so equal X prefer the earlier start); a board
left empty carries E_{j-1}(b) over and wins ties (fewer boards used).
"""

from __future__ import annotations

import math

import numpy as np

from conveyor.planner.partition_model import Chain, count_true, first_true
from conveyor.planner.partition_rangemin import SparseMin, ThresholdRangeMin
from conveyor.planner.partition_search import bands

INF = math.inf
_FUZZY_SCAN = 24          # zones up to this many starts are scanned directly


def min_latency_bounds(ch: Chain, B: float) -> list[int]:
    """Boundaries of a least-latency split among those with bottleneck <= B (B feasible)."""
    m, k, Q, cut = ch.m, ch.k, ch.Q, ch.cut
    merged = ch.link_mode == "merged"
    ok_b, F, G, _ = bands(ch, B)
    if not ok_b:
        raise AssertionError("partition latency pass: the optimal bottleneck is infeasible")
    E = np.full(m + 1, INF)
    E[0] = 0.0
    choice = np.full((k, m + 1), -1, dtype=np.int64)
    same = [False] * k            # board j's step is the same map as board j-1's
    for j in range(1, k):
        same[j] = (ch.speeds[j] == ch.speeds[j - 1]
                   and (ch.cap is None or ch.cap[j] == ch.cap[j - 1])
                   and G[j - 1] == G[j] == G[j + 1] and F[j - 1] == F[j] == F[j + 1])
    settled = False
    for j in range(k):
        ga, fa = G[j], F[j]
        gb, fb = G[j + 1], F[j + 1]
        if settled and same[j]:
            # a fixed point: the previous board changed nothing, and this one is the same
            # map, so it leaves every board-count latency as it is (an empty board)
            choice[j] = np.arange(m + 1)
            continue
        settled = False
        newE = np.full(m + 1, INF)
        lo_b = max(gb, ga + 1)
        if lo_b <= fb:
            row = Q[j]
            b = np.arange(lo_b, fb + 1)
            top = min(fa, fb - 1)                    # starts a in [ga, top]
            n = top - ga + 1
            X = E[ga: top + 1] - row[ga: top + 1]
            order = np.argsort(X, kind="stable")
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n)
            rank[~np.isfinite(X)] = n                  # sentinel: no start
            win = ch.mem_windows(j)
            L = np.full(b.shape[0], ga, dtype=np.int64)
            if win is not None:
                np.maximum(L, win[0][b], out=L)
            R = np.minimum(b, top + 1)
            Lc = first_true(row, lambda a, bb, q=row: (q[bb] - q[a]) <= B, b, row[b] - B)
            np.maximum(L, Lc, out=L)         # merged time >= compute time, so this holds in both modes
            np.minimum(L, R, out=L)
            if not merged:
                got = _range_min(rank, n, L - ga, R - ga)
                if ch.max_link > B:
                    got[cut[b] > B] = n
            else:
                got = _merged_min(ch, j, B, ga, top, b, rank, n, L - ga, R - ga)
            has = got < n
            a = np.where(has, order[np.minimum(got, n - 1)], 0)
            newE[b] = np.where(has, (X[a] + row[b]) + cut[b], INF)
            choice[j, b] = np.where(has, a + ga, -1)
        if ch.allow_empty:
            keep = np.zeros(m + 1, dtype=bool)
            keep[gb: fb + 1] = E[gb: fb + 1] <= newE[gb: fb + 1]
            keep &= np.isfinite(E)
            newE[keep] = E[keep]
            choice[j, keep] = np.flatnonzero(keep)
            settled = bool(np.array_equal(newE, E) and keep[np.isfinite(E)].all())
        E = newE
    if not np.isfinite(E[m]):
        raise AssertionError("partition latency pass: no split under the optimal bottleneck")
    bounds = [m]
    b = m
    for j in range(k - 1, -1, -1):
        b = int(choice[j, b])
        if b < 0:
            raise AssertionError("partition latency pass: broken back-pointer")
        bounds.append(b)
    bounds.reverse()
    if bounds[0] != 0:
        raise AssertionError("partition latency pass: split does not start at layer 0")
    return bounds


def _range_min(rank, n, L, R):
    """min(rank[L:R]) per query; n where the range is empty."""
    got = np.full(L.shape[0], n, dtype=np.int64)
    nz = np.flatnonzero(L < R)
    if nz.size:
        got[nz] = SparseMin(rank, int((R[nz] - L[nz]).max())).query(L[nz], R[nz])
    return got


def _merged_min(ch, j, B, ga, top, b, rank, n, L, R):
    """Per query b (local range [L, R) of starts): min rank over starts a whose merged
    stage ((h(a) + Q[b]) + cut[b]) <= B, with h(a) = cut[a] - Q[a].

    Split each range at Lsafe(b): from Lsafe on, even the largest h of the suffix
    passes, so every start there is feasible and a plain range minimum serves; only the
    starts in [L, Lsafe) -- usually a few layers, as wide as the links are long in
    layers -- need the 2-D (range, threshold) query."""
    row, cut = ch.Q[j], ch.cut
    h = cut[ga: top + 1] - row[ga: top + 1]
    qb, cb = row[b], cut[b]
    idx = np.arange(b.shape[0])
    # suffix maxima of h, with a sentinel -inf start one past the end (vacuously safe)
    suf = np.empty(n + 1)
    suf[:n] = np.maximum.accumulate(h[::-1])[::-1]
    suf[n] = -INF
    neg = -suf                                       # non-decreasing in the start
    fs = first_true(neg, lambda a, i: ((suf[a] + qb[i]) + cb[i]) <= B, idx,
                    -((B - cb) - qb), anchor=np.full(b.shape[0], n))
    Ls = np.minimum(np.maximum(fs, L), R)
    got = _range_min(rank, n, Ls, R)
    fz = np.flatnonzero(L < Ls)
    if fz.size:
        wide = int((Ls[fz] - L[fz]).max())
        if wide <= _FUZZY_SCAN:
            # narrow zones: test every start of the zone directly
            Lf, Lsf, qf, cf = L[fz], Ls[fz], qb[fz], cb[fz]
            best = got[fz]
            for d in range(wide):
                a = Lf + d
                inside = a < Lsf
                a = np.minimum(a, n - 1)
                ok = inside & (((h[a] + qf) + cf) <= B)
                best = np.where(ok, np.minimum(best, rank[a]), best)
            got[fz] = best
        else:
            horder = np.argsort(h, kind="stable")
            hs = h[horder]
            kr = np.empty(n, dtype=np.int64)
            kr[horder] = np.arange(n)
            T = count_true(hs, lambda p, i: ((hs[p] + qb[i]) + cb[i]) <= B, fz, (B - cb[fz]) - qb[fz])
            trm = ThresholdRangeMin(kr, wide)
            got[fz] = np.minimum(got[fz], trm.query(rank, L[fz], Ls[fz], T))
    return got
