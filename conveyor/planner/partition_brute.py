"""Brute force: every split, evaluated with the same formulas as the planner (vectorised)."""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np

from conveyor.errors import PlanError
from conveyor.planner.partition_model import Chain, Split

MAX_SPLITS = 2_000_000


def count_splits(m: int, k: int, allow_empty: bool) -> int:
    return math.comb(m + k - 1, k - 1) if allow_empty else math.comb(m - 1, k - 1)


@lru_cache(maxsize=256)
def _all_bounds(m: int, k: int, allow_empty: bool) -> np.ndarray:
    """Every boundary vector 0 = c_0 <= c_1 <= ... <= c_k = m (strict if not allow_empty),
    in lexicographic order, shape (splits, k + 1)."""
    if allow_empty:
        inner = itertools.combinations_with_replacement(range(m + 1), k - 1)
    else:
        inner = itertools.combinations(range(1, m), k - 1)
    n = count_splits(m, k, allow_empty)
    flat = np.fromiter(itertools.chain.from_iterable(inner), dtype=np.int64, count=n * (k - 1))
    out = np.empty((n, k + 1), dtype=np.int64)
    out[:, 0] = 0
    out[:, k] = m
    out[:, 1:k] = flat.reshape(n, k - 1)
    out.setflags(write=False)
    return out


def brute_force_chain(ch: Chain) -> Split:
    m, k = ch.m, ch.k
    if not ch.allow_empty and k > m:
        from conveyor.planner.partition_search import diagnose
        raise diagnose(ch)
    n = count_splits(m, k, ch.allow_empty)
    if n > MAX_SPLITS:
        raise PlanError(
            f"brute_force would enumerate {n:,} splits of {m} layers onto {k} boards; it is meant for "
            f"small cases (at most {MAX_SPLITS:,} splits); use balance() instead")
    C = _all_bounds(m, k, ch.allow_empty)
    A, Bn = C[:, :-1], C[:, 1:]
    J = np.arange(k)[None, :]
    Qa, Qb = ch.Q[J, A], ch.Q[J, Bn]
    ne = Bn > A
    cut = ch.cut
    ok = np.ones(len(C), dtype=bool)
    if ch.M is not None:
        ok &= ((ch.M[Bn] - ch.M[A]) <= ch.cap[None, :]).all(axis=1)
    if ch.link_mode == "merged":
        T = np.where(ne, ((cut[A] - Qa) + Qb) + cut[Bn], 0.0)
        bott = T.max(axis=1)
    else:
        t = np.where(ne, Qb - Qa, 0.0)
        links = np.where(ne, cut[Bn], 0.0)     # cut[m] == 0, so the last stage adds nothing
        bott = np.maximum(t.max(axis=1), links.max(axis=1))
    lat = np.zeros(len(C))
    for j in range(k):
        lat = np.where(ne[:, j], ((lat - Qa[:, j]) + Qb[:, j]) + cut[Bn[:, j]], lat)
    if not ok.any():
        from conveyor.planner.partition_search import diagnose
        raise diagnose(ch)
    bott = np.where(ok, bott, np.inf)
    best = bott.min()
    cand = np.flatnonzero(bott == best)
    i = int(cand[np.argmin(lat[cand])])        # first in lexicographic order among equal latency
    split = ch.evaluate(C[i])
    if split.bottleneck != best or split.latency != lat[i]:
        raise AssertionError("brute force: vectorised and scalar evaluation disagree")
    return split
