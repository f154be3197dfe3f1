"""The joint planner's probe, vectorised: one numpy pass per (board, weights mode, replicas,
incoming-link mode) over every stage [s, e) the board could run.

A layer's engine at a limit L is its slowest option with interval <= L (1 + tol). That choice
depends on L only through how many of the board's distinct option intervals ("levels") are
<= L (1 + tol): with U the sorted levels, q = searchsorted(U, L (1 + tol), "right") picks the
same engine for every layer as L does. So for each q the picks, and prefix sums over the
layers of their resources, latency, interval and streamed bytes, are computed once per board
kind (they do not depend on the probed interval T). Any stage [s, e) at any limit is then
O(1): X[q, e] - X[q, s]. Each constraint is monotone in e for a fixed start and limit, so the
last feasible end of every start is one `searchsorted` on the row-offset flattened prefix
table; the candidate stages (s, e) are laid out flat, scored, and reduced per start.

The result is the same DP as `joint.probe_reference` (tests check them against each other and
against brute force): the same feasibility, the same latency, the same tie-breaks (pinned
before streamed, fewer replicas first, the earliest end, a "stage" link before "merged").
"""

from __future__ import annotations

import numpy as np

INF = float("inf")


class Levels:
    """Per-level prefix tables of one device's options (one table kind: pinned or streamed)."""

    def __init__(self, options, clock: float):
        m = len(options)
        self.m = m
        self.clock = clock
        U = np.unique(np.array([o.interval_cycles / clock for layer in options for o in layer], dtype=np.float64))
        self.U = U
        nq = U.size + 1
        nmax = max((len(layer) for layer in options), default=0)
        picks = np.zeros((nq, m), dtype=np.int64)
        qs = np.arange(nq)
        # per layer, option columns padded with a "none qualifies" column (zero cost, flagged bad)
        vals = np.zeros((7, m, nmax + 1), dtype=np.int64)
        n_opts = np.zeros(m, dtype=np.int64)
        for i, layer in enumerate(options):
            n = len(layer)
            n_opts[i] = n
            if not n:
                continue
            ranks = np.searchsorted(U, np.array([o.interval_cycles / clock for o in layer]))  # descending
            # the options whose level index is >= q do not qualify at q: the pick skips them all
            picks[:, i] = np.searchsorted(-ranks, -qs, side="right")
            vals[:, i, :n] = np.array([(o.resources.dsp, o.resources.bram18k, o.resources.lut, o.resources.ff,
                                        o.latency_cycles, o.interval_cycles, o.offchip_bytes) for o in layer],
                                      dtype=np.int64).T
        self.picks = picks
        self.single = bool((n_opts <= 1).all())
        bad = picks >= n_opts[None, :]
        cols = np.where(bad, nmax, picks)
        rows = np.arange(m)[None, :]
        zero = np.zeros((nq, 1), dtype=np.int64)

        def prefix(x):
            return np.concatenate((zero, np.cumsum(x, axis=1)), axis=1)

        self.D, self.B, self.LUT, self.FF, self.LAT, self.IV, self.W = (
            prefix(vals[n][rows, cols]) for n in range(7))
        self.BAD = prefix(bad.astype(np.int64))
        self._flat: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def flat(self, name: str):
        """(row-offset flattened prefix table, per-row offsets): sorted as one array, so a
        batch of per-row searches is one searchsorted."""
        got = self._flat.get(name)
        if got is None:
            X = getattr(self, name)
            step = int(X.max()) + 1 if X.size else 1
            off = np.arange(X.shape[0], dtype=np.int64) * step
            got = ((X + off[:, None]).ravel(), off)
            self._flat[name] = got
        return got

    def q_of(self, limit: np.ndarray, tol: float) -> np.ndarray:
        return np.searchsorted(self.U, limit * (1 + tol), side="right")

    def last_end(self, name: str, q: np.ndarray, s: np.ndarray, cap) -> np.ndarray:
        """For each start s at level q: the largest e with X[q, e] - X[q, s] <= cap."""
        F, off = self.flat(name)
        X = getattr(self, name)
        w = self.m + 1
        target = X[q, s] + off[q] + cap
        return np.searchsorted(F, target, side="right") - 1 - q * w


def _level_T(lv: Levels, q: np.ndarray, extra: np.ndarray, r: int, tol: float) -> float:
    """The least T at which (r T - extra) (1 + tol) reaches the next level above q (inf: none)."""
    up = q < lv.U.size
    if not up.any():
        return INF
    return float(((lv.U[q[up]] / (1 + tol) + extra[up]) / r).min())


def _min(x) -> float:
    return float(x.min()) if x.size else INF


def board_batch(t, lv: Levels, j: int, r: int, merged_in: bool, T: float, nxt, link_modes, tol: float,
                events: list | None = None):
    """For every start s on device j (r replicas, tables t): (latency to the end, end, mode)
    of the best stage from s, mode 0 = last stage, 1 = "stage" link, 2 = "merged" link;
    latency inf where none. `nxt` = (best latencies of device j + r entered by a stage link,
    by a merged link) indexed by layer, or None when j + r is past the last device.

    `events` gets, for every comparison with T that failed, the least T at which it would
    pass: below the smallest of them (over the whole probe) no outcome changes, so an
    infeasible probe stays infeasible up to there."""
    prob = t.prob
    m = prob.m
    total = np.full(m, INF)
    ends = np.zeros(m, dtype=np.int64)
    modes = np.zeros(m, dtype=np.int8)
    ev = events if events is not None else []
    if merged_in:
        if j == 0:
            return total, ends, modes
        s_all = np.arange(1, m)
        t_in = np.asarray(prob.link_seconds[j - 1][:m - 1], dtype=np.float64)
    else:
        s_all = np.arange(m)
        t_in = np.zeros(m)
    limit0 = r * T - t_in
    keep = limit0 > 0
    ev.append(_min(t_in[~keep]) / r)
    s_all, limit0, t_in = s_all[keep], limit0[keep], t_in[keep]
    if s_all.size == 0:
        return total, ends, modes
    q0 = lv.q_of(limit0, tol)
    bd, bb, bl, bf = t.budget[j]
    emax = np.minimum(lv.last_end("BAD", q0, s_all, 0), m)
    for name, cap in (("D", bd), ("B", bb), ("LUT", bl), ("FF", bf)):
        emax = np.minimum(emax, lv.last_end(name, q0, s_all, cap))
    off_cap = min(t.bandwidth[j] * r * T * (1 + tol), t.capacity[j]) if t.is_streamed else 0
    emax = np.minimum(emax, lv.last_end("W", q0, s_all, off_cap))
    sequential = t.sequential[j]
    clock = lv.clock
    if sequential:  # a sequential device's time is the sum of its layers'
        if lv.single:   # one option per layer: the row where all qualify has the sums wherever none is bad
            iv = lv.IV[-1]
            emax = np.minimum(emax, np.searchsorted(iv, iv[s_all] + limit0 * (1 + tol) * clock, side="right") - 1)
        else:
            emax = np.minimum(emax, lv.last_end("IV", q0, s_all, limit0 * (1 + tol) * clock))
    # the first end past each start's reach: what would let it in
    short = np.flatnonzero(emax < m)
    if short.size:
        sb, eb, qb = s_all[short], emax[short] + 1, q0[short]
        fail = lv.BAD[qb, eb] != lv.BAD[qb, sb]
        for X, cap in ((lv.D, bd), (lv.B, bb), (lv.LUT, bl), (lv.FF, bf)):
            fail |= X[qb, eb] - X[qb, sb] > cap
        ev.append(_level_T(lv, qb[fail], t_in[short][fail], r, tol))
        if t.is_streamed:
            w = lv.W[qb, eb] - lv.W[qb, sb]
            w = w[(w > off_cap) & (w <= t.capacity[j])]
            ev.append(_min(w) / (t.bandwidth[j] * r * (1 + tol)) if t.bandwidth[j] > 0 else INF)
        if sequential:
            need = (lv.IV[qb, eb] - lv.IV[qb, sb]) / clock
            over = need > limit0[short] * (1 + tol)
            ev.append(_min((need[over] / (1 + tol) + t_in[short][over]) / r))
    cnt = np.maximum(emax - s_all, 0)
    P = int(cnt.sum())
    if P == 0:
        return total, ends, modes
    starts = np.concatenate(([0], np.cumsum(cnt)[:-1]))
    S = np.repeat(s_all, cnt)
    E = S + 1 + (np.arange(P) - np.repeat(starts, cnt))
    Q0 = np.repeat(q0, cnt)
    lat = (lv.LAT[Q0, E] - lv.LAT[Q0, S]) / clock
    val = np.where(E == m, lat, INF)
    mode = np.zeros(P, dtype=np.int8)
    if nxt is not None and m > 1:
        nxt_stage, nxt_merged = nxt
        inner = E < m
        Ei = np.where(inner, E, m - 1)          # a valid index where e == m (masked below)
        last_dev = j + r - 1
        t_out = np.asarray(prob.link_seconds[last_dev], dtype=np.float64)[Ei - 1]
        T_in = np.repeat(t_in, cnt)
        if "stage" in link_modes:
            buffer = 0 if sequential else np.asarray(t.buffer, dtype=np.int64)[Ei - 1]
            live = inner & np.isfinite(nxt_stage[Ei])
            fits = lv.B[Q0, E] - lv.B[Q0, S] + buffer <= bb
            fast = t_out <= T * (1 + tol)
            ev.append(_min(t_out[live & ~fast]) / (1 + tol))
            full = live & ~fits
            ev.append(_level_T(lv, Q0[full], T_in[full], r, tol))
            ok = live & fits & fast
            cand = np.where(ok, lat + t_out + nxt_stage[Ei], INF)
            better = cand < val
            val = np.where(better, cand, val)
            mode[better] = 1
        if "merged" in link_modes:
            limit_m = np.repeat(limit0, cnt) - t_out
            live = inner & np.isfinite(nxt_merged[Ei])
            pos = limit_m > 0
            ev.append(_min((T_in + t_out)[live & ~pos]) / r)
            live = np.flatnonzero(live & pos)   # only these can be a merged stage: work on them alone
            Es, Ss, lim, ext = E[live], S[live], limit_m[live], (T_in + t_out)[live]
            qm = lv.q_of(lim, tol)
            w = m + 1
            ie, is_ = qm * w + Es, qm * w + Ss

            def diff(X):
                X = X.ravel()
                return X.take(ie) - X.take(is_)

            fits = diff(lv.BAD) == 0
            for X, cap in ((lv.D, bd), (lv.B, bb), (lv.LUT, bl), (lv.FF, bf)):
                fits &= diff(X) <= cap
            ev.append(_level_T(lv, qm[~fits], ext[~fits], r, tol))
            ok = fits
            wm = diff(lv.W)
            if t.is_streamed and t.bandwidth[j] > 0:
                wfail = ok & (wm > off_cap) & (wm <= t.capacity[j])
                ev.append(_min(wm[wfail]) / (t.bandwidth[j] * r * (1 + tol)))
            ok &= wm <= off_cap
            if sequential:
                need = diff(lv.IV) / clock
                slow = ok & (need > lim * (1 + tol))
                ev.append(_min((need[slow] / (1 + tol) + ext[slow]) / r))
                ok &= ~slow
            cand = np.full(P, INF)
            sub = live[ok]
            cand[sub] = diff(lv.LAT)[ok] / clock + t_out[sub] + nxt_merged[Ei[sub]]
            better = cand < val
            val = np.where(better, cand, val)
            mode[better] = 2
    nonempty = cnt > 0
    seg = starts[nonempty]
    mins = np.minimum.reduceat(val, seg)
    hit = np.flatnonzero(val == np.repeat(mins, cnt[nonempty]))
    first = hit[np.searchsorted(hit, seg)]      # the earliest end achieving each start's minimum
    sel = s_all[nonempty]
    found = np.isfinite(mins)
    total[sel[found]] = mins[found]
    ends[sel[found]] = E[first[found]]
    modes[sel[found]] = mode[first[found]]
    return total, ends, modes
