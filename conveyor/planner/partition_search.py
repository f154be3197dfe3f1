"""The smallest bottleneck: feasibility probes and an exact search over float values.

A probe answers "is there a split whose every stage (and, in stage mode, every used
link) takes at most B?".  Feasibility is monotone in B, and the optimum B* is the time
of some stage of some split, so B* is the smallest float B a probe accepts.  The search
bisects on the bit patterns of non-negative doubles (which are ordered like the values),
so it ends on B* itself, never "within eps".  Two shortcuts keep it short:

- a probe that accepts B returns a split; its actual bottleneck (<= B) becomes the
  new upper end;
- a probe that rejects B returns the smallest time of any comparison it failed
  ("next event"): no B' below that value can change any comparison, so every B' below
  it is rejected too, and the lower end jumps there.

Probes:
- greedy (stage mode, empty boards allowed): each board, in chain order, takes layers
  as far as its compute time and memory allow and then steps back to the last cut whose
  link time fits.  Exact because every constraint is monotone in the start of a stage
  (a later start never makes a stage longer) and the set of cuts a link allows does not
  depend on the start: by induction the greedy position after board j is the furthest
  position any feasible split can reach after board j -- with heterogeneous speeds too,
  since each board is compared with the same board of the other split.  O(k log m).
- reachability DP (merged links, or no empty boards): R_j = positions reachable after
  board j.  Stage mode uses the last reachable start before b (the longest stage is the
  worst, so the latest start is the best); merged mode uses the minimum of
  h(a) = cut[a] - Q[a] over reachable starts, a prefix minimum (or a sliding minimum
  over the memory window).  O(k m) numpy work.
"""

from __future__ import annotations

import bisect
import math
import struct

import numpy as np

from conveyor.errors import PlanError
from conveyor.planner.partition_model import Chain, fmt_bytes
from conveyor.planner.partition_rangemin import sliding_min_float

INF = math.inf


def f2b(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x + 0.0))[0]


def b2f(i: int) -> float:
    return struct.unpack("<d", struct.pack("<q", i))[0]


def uses_greedy(ch: Chain) -> bool:
    return ch.link_mode == "stage" and ch.allow_empty


# -- greedy sweeps (exact for stage mode with empty boards; a relaxation otherwise) ------------

def forward_sweep(ch: Chain, B: float, links: bool):
    """F[i] = furthest position reachable after boards 0..i-1 when each stage only has to
    meet compute <= B, memory, and (if links) link <= B at its cut; plus the next event."""
    m, Q, cut = ch.m, ch.Q, ch.cut
    last_ok = None
    if links and ch.max_link > B:
        allowed = cut <= B
        allowed[0] = allowed[m] = True
        last_ok = np.maximum.accumulate(np.where(allowed, np.arange(m + 1), -1))
    pos, event = 0, INF
    F = [0]
    rng = range(m + 1)
    for j in range(ch.k):
        if pos < m:
            row = Q[j]
            base = row[pos]
            r = bisect.bisect_right(rng, B, lo=pos, key=lambda b: row[b] - base) - 1
            lim = m if ch.M is None else int(ch.mem_windows(j)[1][pos])
            if r < lim:
                event = min(event, float(row[r + 1] - base))
            else:
                r = lim
            if r < m and last_ok is not None:
                c = int(last_ok[r])
                if c < r:
                    event = min(event, float(cut[c + 1: r + 1].min()))
                r = c
            pos = max(pos, r)
        F.append(pos)
    return F, event


def backward_sweep(ch: Chain, B: float, links: bool):
    """G[i] = earliest position after boards 0..i-1 from which boards i..k-1 can take the
    rest under the same relaxed constraints; plus the next event."""
    m, Q, cut = ch.m, ch.Q, ch.cut
    next_ok = None
    if links and ch.max_link > B:
        allowed = cut <= B
        allowed[0] = allowed[m] = True
        next_ok = np.minimum.accumulate(np.where(allowed, np.arange(m + 1), m + 1)[::-1])[::-1]
    pos, event = m, INF
    G = [m]
    rng = range(m + 1)
    nB = -B
    for j in range(ch.k - 1, -1, -1):
        if pos > 0:
            row = Q[j]
            top = row[pos]
            r = bisect.bisect_left(rng, nB, lo=0, hi=pos + 1, key=lambda a: -(top - row[a]))
            lim = 0 if ch.M is None else int(ch.mem_windows(j)[0][pos])
            if r > lim:
                event = min(event, float(top - row[r - 1]))
            else:
                r = lim
            if r > 0 and next_ok is not None:
                c = int(next_ok[r])
                if c > r:
                    event = min(event, float(cut[r:c].min()))
                r = c
            pos = min(pos, r)
        G.append(pos)
    G.reverse()
    return G, event


def greedy_probe(ch: Chain, B: float):
    """(feasible, bounds or None, next_event): exact for stage mode with empty boards allowed."""
    F, event = forward_sweep(ch, B, True)
    if F[-1] == ch.m:
        return True, F, INF
    return False, None, event


def bands(ch: Chain, B: float):
    """(ok, F, G, event): every position after i boards in a split under B lies in
    [G[i], F[i]] (a relaxation: links only where they are stage-mode stages of their own).
    ok is False when even the relaxation has no split; event as for probes."""
    links = ch.link_mode == "stage"
    F, ev1 = forward_sweep(ch, B, links)
    if F[-1] < ch.m:
        return False, F, None, ev1
    G, ev2 = backward_sweep(ch, B, links)
    event = min(ev1, ev2)
    if not ch.allow_empty:
        k, m = ch.k, ch.m
        F = [min(f, m - (k - i)) for i, f in enumerate(F)]
        G = [max(g, i) for i, g in enumerate(G)]
        if any(g > f for g, f in zip(G, F)):
            return False, F, G, event
    return True, F, G, event


# -- reachability DP probe ---------------------------------------------------------------------

def _h(ch: Chain, j: int, cache: dict) -> np.ndarray:
    key = float(ch.speeds[j])
    got = cache.get(key)
    if got is None:
        got = ch.cut - ch.Q[j]
        cache[key] = got
    return got


def dp_probe(ch: Chain, B: float, cache: dict | None = None):
    """(feasible, bounds or None, next_event) for any mode, with or without empty boards.
    Work is confined to the bands [G[i], F[i]] of the relaxation."""
    m, Q, cut = ch.m, ch.Q, ch.cut
    cache = {} if cache is None else cache
    ok_b, F, G, event = bands(ch, B)
    if not ok_b:
        return False, None, event
    merged = ch.link_mode == "merged"
    R = np.zeros(m + 1, dtype=bool)
    R[0] = True
    reach = [R]
    for j in range(ch.k):
        ga, fa = G[j], F[j]
        gb, fb = G[j + 1], F[j + 1]
        newR = np.zeros(m + 1, dtype=bool)
        lo_b = max(gb, ga + 1)
        if lo_b <= fb:
            row = Q[j]
            b = np.arange(lo_b, fb + 1)
            top = min(fa, fb - 1)                      # starts a in [ga, top]
            win = ch.mem_windows(j)
            memlo = None if win is None else np.maximum(win[0][lo_b: fb + 1], ga)
            Rs = R[ga: top + 1]
            if merged:
                h = np.where(Rs, _h(ch, j, cache)[ga: top + 1], INF)
                if memlo is None:
                    pm = np.minimum.accumulate(h)
                    best = pm[np.minimum(b - 1, top) - ga]
                else:
                    best = sliding_min_float(h, memlo - ga, np.minimum(b, top + 1) - ga)
                val = (best + row[b]) + cut[b]
                some = best < INF
                ok = some & (val <= B)
                fail = some & ~ok
            else:
                last = np.maximum.accumulate(np.where(Rs, np.arange(ga, top + 1), -1))
                la = last[np.minimum(b - 1, top) - ga]
                valid = la >= (ga if memlo is None else memlo)
                a = np.maximum(la, 0)
                val = np.where(valid, row[b] - row[a], INF)
                ok = valid & (val <= B)
                fail = valid & ~ok
                if ch.max_link > B:
                    linked = cut[b] <= B
                    link_fail = ok & ~linked
                    if link_fail.any():
                        event = min(event, float(cut[b][link_fail].min()))
                    ok &= linked
            if fail.any():
                event = min(event, float(val[fail].min()))
            newR[lo_b: fb + 1] = ok
        if ch.allow_empty:
            newR[gb: fb + 1] |= R[gb: fb + 1]
        R = newR
        reach.append(R)
    if not R[m]:
        return False, None, event
    return True, _trace(ch, B, reach), INF


def _trace(ch: Chain, B: float, reach) -> list[int]:
    """One split under B from the reachable sets: back from m, each board takes the start
    that makes its own stage shortest (or stays empty when it must)."""
    m, Q, cut = ch.m, ch.Q, ch.cut
    merged = ch.link_mode == "merged"
    bounds = [m]
    b = m
    for j in range(ch.k - 1, -1, -1):
        Rp = reach[j]
        lo = 0 if ch.M is None else int(ch.mem_windows(j)[0][b])
        a_cand = np.flatnonzero(Rp[lo:b]) + lo
        if a_cand.size and (merged or b == m or cut[b] <= B):
            row = Q[j]
            if merged:
                v = ((cut[a_cand] - row[a_cand]) + row[b]) + cut[b]
            else:
                v = row[b] - row[a_cand]
            good = v <= B
            if good.any():
                a = int(a_cand[good][np.argmin(v[good])])
                bounds.append(a)
                b = a
                continue
        if not (ch.allow_empty and Rp[b]):
            raise AssertionError("partition probe: no predecessor while tracing a feasible split")
        bounds.append(b)
    bounds.reverse()
    if bounds[0] != 0:
        raise AssertionError("partition probe: traced split does not start at layer 0")
    return bounds


# -- the search -----------------------------------------------------------------------------------

def min_bottleneck(ch: Chain) -> tuple[float, list[int], int]:
    """(B*, a split achieving it, number of probes)."""
    cache: dict = {}
    probe = greedy_probe if uses_greedy(ch) else (lambda c, B: dp_probe(c, B, cache))
    ok, bounds, _ = probe(ch, INF)
    if not ok:
        raise diagnose(ch)
    hi = ch.evaluate(bounds).bottleneck
    probes = 1
    lo_bits = -1
    # first guess: perfect balance of the compute (a lower bound up to rounding)
    guess = max(float(ch.P[-1]) / float(ch.speeds.sum()), float(ch.costs.max()) / float(ch.speeds.max()))
    guess = min(guess * (1 - 1e-12), hi)
    first = True
    while f2b(hi) - lo_bits > 1:
        if first and 0.0 <= guess < hi and f2b(guess) > lo_bits:
            mid = f2b(guess)
        else:
            mid = (lo_bits + f2b(hi)) // 2
        first = False
        B = b2f(mid)
        ok, got, event = probe(ch, B)
        probes += 1
        if ok:
            hi = ch.evaluate(got).bottleneck
            bounds = got
        else:
            lo_bits = max(mid, min(f2b(event), f2b(hi)) - 1)
    return hi, bounds, probes


# -- why nothing fits --------------------------------------------------------------------------------

def diagnose(ch: Chain) -> PlanError:
    m, k = ch.m, ch.k
    if not ch.allow_empty and k > m:
        return PlanError(
            f"allow_empty=False needs k <= number of layers: {k} boards cannot each get one of "
            f"{m} layers; use at most {m} boards or allow_empty=True")
    if ch.M is not None:
        mem = ch.memory
        cmax = float(ch.cap.max())
        big = np.flatnonzero(mem > cmax)
        if big.size:
            i = int(big[0])
            return PlanError(
                f"layer {i} needs {fmt_bytes(mem[i])} of weights, more than any board's capacity "
                f"({fmt_bytes(cmax)}); every layer must fit on one board")
        total = float(ch.M[-1])
        room = float(ch.cap.sum())
        if total > room:
            return PlanError(
                f"the {m} layers need {fmt_bytes(total)} of weights in all, more than the {k} boards "
                f"hold together ({fmt_bytes(room)})")
        empty = "" if ch.allow_empty else " with every board non-empty"
        return PlanError(
            f"no split of the {m} layers onto the {k} boards in chain order{empty} fits every board's "
            f"memory (capacities {', '.join(fmt_bytes(c) for c in ch.cap)}, weights "
            f"{fmt_bytes(total)} in all); larger or more boards, or a different board order, are needed")
    return PlanError(f"no split of the {m} layers onto the {k} boards satisfies the constraints")
