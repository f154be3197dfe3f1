"""Vectorised range-minimum queries over integer ranks (no Python loop per element).

Both structures answer many queries at once with a handful of numpy calls per level,
which is what lets the latency pass of the planner run in O(m log m) / O(m log^2 m)
numpy work per board instead of O(m^2) Python steps.  Values are integer ranks, so a
minimum also identifies its argument (the caller maps a rank back to its index), and
ties never arise.
"""

from __future__ import annotations

import numpy as np


def floor_log2(x: np.ndarray) -> np.ndarray:
    """floor(log2(x)) for positive integers, exactly."""
    return (np.frexp(x.astype(np.float64))[1] - 1).astype(np.int64)


class SparseMin:
    """Range minimum over ``vals[L:R]`` (R > L) by a sparse table: O(n log w) to build,
    where w is the longest range asked for, O(1) numpy work per query."""

    def __init__(self, vals: np.ndarray, longest: int):
        n = vals.shape[0]
        nlev = int(max(longest, 1)).bit_length()
        t = np.empty((nlev, n), dtype=vals.dtype)
        t[0] = vals
        for lev in range(1, nlev):
            span = 1 << (lev - 1)
            np.minimum(t[lev - 1, : n - span], t[lev - 1, span:], out=t[lev, : n - span])
        self.table = t

    def query(self, L: np.ndarray, R: np.ndarray) -> np.ndarray:
        lev = floor_log2(R - L)
        return np.minimum(self.table[lev, L], self.table[lev, R - (np.int64(1) << lev)])


def sliding_min_float(vals: np.ndarray, L: np.ndarray, R: np.ndarray) -> np.ndarray:
    """min(vals[L:R]) per query (inf where the range is empty); floats, for the probes."""
    out = np.full(L.shape[0], np.inf)
    ok = R > L
    if ok.any():
        Lk, Rk = L[ok], R[ok]
        out[ok] = SparseMin(vals, int((Rk - Lk).max())).query(Lk, Rk)
    return out


class ThresholdRangeMin:
    """Points p = 0..n-1, each with a distinct key rank ``kr[p]``.  A query (L, R, T)
    asks for the smallest value over the points p in [L, R) with ``kr[p] < T``.

    Offline structure: [L, R) is split into O(log(R - L)) aligned blocks, as in a
    bottom-up segment tree: at level l the blocks are [c 2^l, (c+1) 2^l), and with
    lo = ceil(L / 2^l), hi = floor(R / 2^l), block lo is taken when lo is odd and block
    hi - 1 when hi is odd (while lo < hi).  At each level the points are sorted by
    (block, key rank), so "key rank < T inside block c" is a prefix of block c, whose
    minimum is a running minimum restarting at every block.  Only the levels up to
    log2(longest range) are built: O(n log w) to build, O(q log w log n) to query.
    """

    def __init__(self, kr: np.ndarray, longest: int):
        n = int(kr.shape[0])
        self.n = n
        korder = np.empty(n, dtype=np.int64)
        korder[kr] = np.arange(n)
        small = n < (1 << 16)
        self.levels = []
        lev = 0
        while True:
            blk = korder >> lev
            o = np.argsort(blk.astype(np.uint16) if small else blk, kind="stable")
            order = korder[o]
            bs = blk[o]
            nb = ((n - 1) >> lev) + 1
            # offsets that make the running minimum restart at every block (values <= n)
            off = (nb - 1 - bs) * (n + 1)
            self.levels.append((order, bs, bs * n + kr[order], off))
            if (1 << (lev + 1)) > longest or nb == 1:
                break
            lev += 1

    def query(self, vals: np.ndarray, L: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
        """vals: int64 ranks in [0, n]; returns per query the minimum (n when none)."""
        n = self.n
        best = np.full(L.shape[0], n, dtype=np.int64)
        live = np.flatnonzero(L < R)
        Ll, Rl, Tl = L[live], R[live], T[live]
        for lev, (order, bs, keys, off) in enumerate(self.levels):
            if live.size == 0:
                break
            lo = (Ll + ((1 << lev) - 1)) >> lev
            hi = Rl >> lev
            act = lo < hi
            if not act.all():
                live, lo, hi, Ll, Rl, Tl = live[act], lo[act], hi[act], Ll[act], Rl[act], Tl[act]
                if live.size == 0:
                    break
            run = np.minimum.accumulate(vals[order] + off)      # running min restarting per block
            for c, sel in ((lo, (lo & 1) == 1), (hi - 1, (hi & 1) == 1)):
                if not sel.any():
                    continue
                cs = c[sel]
                pos = np.searchsorted(keys, cs * n + Tl[sel], side="left") - 1
                some = pos >= 0                                # a point of key < T in block cs
                np.maximum(pos, 0, out=pos)
                got = np.where(some & (bs[pos] == cs), run[pos] - off[pos], n)
                qi = live[sel]
                best[qi] = np.minimum(best[qi], got)
        return best
