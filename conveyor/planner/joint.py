"""The joint planner: cut points, every layer's parallelism and each link's structure,
chosen together under every board's resource budget.

For a target interval T, a layer's cheapest engine is its slowest option that still
meets T; a board can hold layers [s, e) when their cheapest engines (plus the buffer a
"stage" link needs) fit its budget. A dynamic program over (board, first layer, how the
incoming link entered) finds, for that T, a feasible assignment of minimum latency;
feasibility only grows with T, so bisection on T finds the smallest feasible interval.
This is what the multi-FPGA paper did in three separate steps (partition, link
structure, in-board unrolling), done at once.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from conveyor.cost.fpga import Resources
from conveyor.errors import PlanError
from conveyor.hardware.specs import BRAM18K_BITS
from conveyor.planner.chain import ChainProblem

LINK_MODES = ("stage", "merged")
_REL_TOL = 1e-9
INF = float("inf")


@dataclass(frozen=True)
class BoardAssignment:
    board: int
    start: int
    end: int
    option_index: tuple[int, ...]   # per layer in [start, end): index into the board's options
    compute_interval_s: float
    stage_time_s: float
    latency_s: float
    resources: Resources
    link_in_merged: bool
    link_out_mode: str | None       # None for the last used board
    link_out_s: float
    buffer_bram18k: int
    replicas: int = 1               # devices board..board+replicas-1 each run every replicas-th item
    split: bool = False             # ...or, when True, each holds 1/replicas of the (single) layer
    weights_in: str = "on_chip"     # where the stage's weights live: on_chip | dram | hbm (streamed)
    offchip_bytes: int = 0          # bytes the stage moves to/from there per item (weights + spilled activations)
    activations_in: str = "on_chip"  # on_chip, or (spill) the memory its large activation buffers live in


@dataclass(frozen=True)
class JointResult:
    boards: tuple[BoardAssignment, ...]
    interval_s: float
    latency_s: float


class _Tables:
    """Per (device, layer): option intervals in seconds (slowest first) and resources.

    A dataflow board's stage interval is its slowest engine's (engines run concurrently);
    a sequential device (an overlay FPGA, a CPU, a GPU) runs its layers in turn, so its
    stage time is their sum. Sequential devices have one option per layer and carry their
    weight bytes in the second resource slot, against a budget of on-chip bytes (overlay:
    weights pinned, Brainwave's persistent mode) or memory bytes (hosts).

    `streamed=True` builds the tables of the boards streaming their weights from DDR/HBM
    (`prob.stream_options`; a device that cannot has no options); a pinned table keeps the
    streamed one in `.streamed` (None when no device can stream)."""

    def __init__(self, prob: ChainProblem, streamed: bool = False, spill: bool = False):
        self.prob = prob
        self.sequential = [a != "dataflow" for a in prob.archs]
        self.activations_in = [(prob.stream_memory[j] or "on_chip") if spill else "on_chip" for j in range(prob.k)]
        if streamed:
            source = prob.spill_options if spill else prob.stream_options
            options = [source[j] or tuple(() for _ in range(prob.m)) for j in range(prob.k)]
            self.weights_in = [prob.stream_memory[j] or "on_chip" for j in range(prob.k)]
            self.bandwidth = list(prob.stream_Bps)
            self.capacity = list(prob.stream_bytes)
        else:
            options = prob.options
            self.weights_in = ["on_chip"] * prob.k
            self.bandwidth = self.capacity = None
        self.is_streamed = streamed
        self.options = options
        # identical devices share their option tuples: build each device kind's lists once
        memo: dict[tuple[int, float], tuple] = {}
        per = []
        for j in range(prob.k):
            key = (id(options[j]), prob.clocks[j])
            if key not in memo:
                clock = prob.clocks[j]
                secs = [[o.interval_cycles / clock for o in opts] for opts in options[j]]
                memo[key] = (
                    [[o.offchip_bytes for o in opts] for opts in options[j]], secs,
                    [[-x for x in layer] for layer in secs],    # bisect needs ascending keys
                    [[(o.resources.dsp, o.resources.bram18k, o.resources.lut, o.resources.ff) for o in opts]
                     for opts in options[j]],
                    [[o.latency_cycles / clock for o in opts] for opts in options[j]])
            per.append(memo[key])
        self.off, self.secs, self.neg, self.res, self.lat = (list(x) for x in zip(*per))
        self._levels: dict[tuple[int, float], object] = {}
        self.budget = [(b.dsp, b.bram18k, b.lut, b.ff) for b in prob.budgets]
        if streamed and prob.stream_reserve:
            self.budget = [(d, b - (prob.stream_reserve[j] if self.sequential[j] else 0), l, f)
                           for j, (d, b, l, f) in enumerate(self.budget)]
        self.buffer = [2 * math.ceil(c.bytes * 8 / BRAM18K_BITS) for c in prob.cuts]
        can_stream = not streamed and any(o is not None for o in prob.stream_options)
        self.streamed = _Tables(prob, streamed=True) if can_stream else None
        can_spill = not streamed and any(o is not None for o in prob.spill_options)
        self.spilled = _Tables(prob, streamed=True, spill=True) if can_spill else None
        self.use_spill = True   # plan_joint probes without the spill mode first (see there)
        self._splits: dict[int, tuple[int, ...]] = {}

    def levels(self, j: int):
        """Device j's per-level prefix tables (joint_levels.Levels), shared by identical devices."""
        from conveyor.planner.joint_levels import Levels

        key = (id(self.options[j]), self.prob.clocks[j])
        got = self._levels.get(key)
        if got is None:
            got = self._levels[key] = Levels(self.options[j], self.prob.clocks[j])
        return got

    def split_starts(self, j: int) -> tuple[int, ...]:
        """The layers that need splitting on device j (see needs_split)."""
        got = self._splits.get(j)
        if got is None:
            got = self._splits[j] = tuple(i for i in range(self.prob.m) if self.needs_split(j, i))
        return got

    def modes(self) -> tuple["_Tables", ...]:
        """Pinned first: on a tie the DP keeps the first, so weights stream only when that is
        strictly better (or the only way) for the objective."""
        spill = self.spilled if self.use_spill else None
        return tuple(x for x in (self, self.streamed, spill) if x is not None)

    def stream_floor(self, j: int, offchip_bytes: int, r: int) -> float:
        """The least stage time at which device j's memory delivers `offchip_bytes` per item
        (r replicas: each takes one item in r)."""
        return offchip_bytes / (self.bandwidth[j] * r) if self.is_streamed and offchip_bytes else 0.0

    def for_board(self, b: "BoardAssignment") -> "_Tables":
        if b.activations_in != "on_chip" and self.spilled is not None:
            return self.spilled
        return self if b.weights_in == "on_chip" or self.streamed is None else self.streamed

    def needs_split(self, j: int, i: int) -> bool:
        """A MAC layer whose smallest engine alone exceeds dataflow device j's budget."""
        from conveyor.planner.split import SPLITTABLE

        if self.sequential[j] or self.prob.works[i].op_type not in SPLITTABLE or not self.res[j][i]:
            return False
        return any(x > cap for x, cap in zip(self.res[j][i][0], self.budget[j]))

    def link_buffer(self, j: int, i: int) -> int:
        """BRAM18K a "stage" link's double buffer takes on sending device j (hosts: none)."""
        return 0 if self.sequential[j] else self.buffer[i]

    def combine(self, j: int, interval: float, layer_interval: float) -> float:
        return interval + layer_interval if self.sequential[j] else max(interval, layer_interval)

    def pick(self, j: int, i: int, limit: float) -> int:
        """Index of the cheapest option of layer i on board j with interval <= limit, or -1."""
        neg = self.neg[j][i]
        idx = bisect.bisect_left(neg, -limit * (1 + _REL_TOL))
        return idx if idx < len(neg) else -1


def _evaluate(t: _Tables, j: int, s: int, e: int, limit: float, base_bram: int):
    """(option indices, resources tuple, compute interval, latency) of layers [s, e) on board j
    with every engine's interval <= limit, or None when they do not fit."""
    bd, bb, bl, bf = t.budget[j]
    d = b = l = f = 0
    b += base_bram
    picks, interval, lat = [], 0.0, 0.0
    for i in range(s, e):
        k = t.pick(j, i, limit)
        if k < 0:
            return None
        rd, rb, rl, rf = t.res[j][i][k]
        d, b, l, f = d + rd, b + rb, l + rl, f + rf
        if d > bd or b > bb or l > bl or f > bf:
            return None
        picks.append(k)
        interval = t.combine(j, interval, t.secs[j][i][k])
        if interval > limit * (1 + _REL_TOL):
            return None
        lat += t.lat[j][i][k]
    return tuple(picks), (d, b, l, f), interval, lat


def _identical_run(prob: ChainProblem, j: int) -> int:
    """How many consecutive devices from j on are identical to j."""
    r = 1
    while j + r < prob.k and prob.signatures and prob.signatures[j + r] == prob.signatures[j]:
        r += 1
    return r


def _split_layers(prob: ChainProblem, t: _Tables, j: int, s: int, r: int) -> list:
    """T-independent facts of splitting layer s r ways on device j (cached on t): per possible
    end e, (e, gather seconds, per layer: (negated intervals, resources, latencies))."""
    from conveyor.planner.split import CHANNELWISE, gather_seconds, split_options

    key = (j if not prob.signatures else prob.signatures[j], s, r)
    cache = t.__dict__.setdefault("_split_cache", {})
    got = cache.get(key)
    if got is None:
        clock = prob.clocks[j]
        got, layers = [], []
        for e in range(s + 1, prob.m + 1):
            i = e - 1
            if i > s and prob.works[i].op_type not in CHANNELWISE:
                break
            opts = split_options(prob.works[i], prob.specs[j], r)
            layers.append(([-o.interval_cycles / clock for o in opts],
                           [(o.resources.dsp, o.resources.bram18k, o.resources.lut, o.resources.ff) for o in opts],
                           [o.latency_cycles / clock for o in opts]))
            got.append((e, gather_seconds(prob.works[s], prob.links[j], r, out_bytes=prob.works[i].out_bytes),
                        tuple(layers)))
        cache[key] = got
    return got


def _split_stage(prob: ChainProblem, t: _Tables, best: dict, j: int, s: int, merged_in: bool, T: float,
                 r: int, link_modes, events: list | None = None) -> tuple[float, tuple | None]:
    """Layer s split r ways by output channel over devices j..j+r-1 (conveyor.planner.split),
    with the channel-wise layers after it (ReLU, pooling...) split the same way. `events` as
    for joint_levels.board_batch: for each failed comparison, the least T that passes it."""
    ev = events if events is not None else []
    INF = float("inf")
    result: tuple[float, tuple | None] = (INF, None)
    if prob.links[j] is None:
        return result
    budget, m = t.budget[j], prob.m
    t_in = prob.link_seconds[j - 1][s - 1] if merged_in else 0.0
    last_dev = j + r - 1
    for e, gather, layers in _split_layers(prob, t, j, s, r):
        i = e - 1
        outs = [(None, 0.0)] if e == m else [(mode, prob.link_seconds[last_dev][i]) for mode in link_modes
                                             if last_dev + 1 < prob.k]
        for mode, t_out in outs:
            nxt = (0.0, None) if mode is None else best.get((last_dev + 1, e, mode == "merged"))
            if nxt is None or nxt[0] == INF:
                continue
            if mode == "stage" and t_out > T * (1 + _REL_TOL):
                ev.append(t_out / (1 + _REL_TOL))
                continue
            base = t_in + gather + (t_out if mode == "merged" else 0.0)
            limit = (T - base) * (1 + _REL_TOL)
            buffer = t.link_buffer(j, i) if mode == "stage" else 0
            picks, res, interval, lat = [], [0, buffer, 0, 0], 0.0, gather
            for neg, res_o, lat_o in layers:  # each layer's slowest (cheapest) engine meeting the limit
                idx = bisect.bisect_left(neg, -limit)
                if idx >= len(neg):
                    ev.append(-neg[-1] / (1 + _REL_TOL) + base)
                    break
                picks.append(idx)
                res = [x + y for x, y in zip(res, res_o[idx])]
                interval = max(interval, -neg[idx])
                lat += lat_o[idx]
            else:
                if any(x > cap for x, cap in zip(res, budget)):
                    # a slower, cheaper engine for any of the layers
                    ev.extend(-neg[k - 1] / (1 + _REL_TOL) + base for (neg, _, _), k in zip(layers, picks) if k)
                    continue
                total = lat + (t_out if mode else 0.0) + nxt[0]
                if total < result[0]:
                    stage_time = t_in + gather + interval + (t_out if mode == "merged" else 0.0)
                    result = (total, (e, mode, tuple(picks), tuple(res), interval, stage_time, lat, t_out, buffer, r, True))
    return result


def _replica_limit(prob: ChainProblem, j: int) -> int:
    """How many devices from j on may run one stage as replicas: identical devices on a
    switch (every pair one hop apart), so that items can go round-robin to them."""
    if not prob.replicable:
        return 1
    r = 1
    while j + r < prob.k and prob.signatures[j + r] == prob.signatures[j]:
        r += 1
    return r


def _best_stage(prob: ChainProblem, t: _Tables, best: dict, j: int, s: int, merged_in: bool, T: float,
                r: int, link_modes) -> tuple[float, tuple | None]:
    """The least-latency way to run a stage starting at layer s on devices j..j+r-1 (r replicas,
    each doing every r-th item) and finish the chain from there, with every stage <= T."""
    m, k = prob.m, prob.k
    INF = float("inf")
    slack = T * (1 + _REL_TOL)
    bd, bb, bl, bf = t.budget[j]
    t_in = prob.link_seconds[j - 1][s - 1] if merged_in else 0.0
    limit0 = r * T - t_in   # r replicas: each may take r intervals per item
    result: tuple[float, tuple | None] = (INF, None)
    if limit0 <= 0:
        return result
    last_dev = j + r - 1
    # Streamed weights: each replica's memory delivers the stage's weight bytes once per item,
    # one item every r intervals (the sum over its layers of bytes / interval <= bandwidth).
    off_cap = (min(t.bandwidth[j] * r * T * (1 + _REL_TOL), t.capacity[j]) if t.is_streamed else 0)
    w = 0
    # Layers [s, e) at limit0, grown one layer at a time (picks do not depend on e).
    d = b = l = f = 0
    picks: list[int] = []
    interval = lat = 0.0
    for e in range(s + 1, m + 1):
        i = e - 1
        kk = t.pick(j, i, limit0)
        if kk < 0:
            break
        rd, rb, rl, rf = t.res[j][i][kk]
        d, b, l, f = d + rd, b + rb, l + rl, f + rf
        w += t.off[j][i][kk]
        if d > bd or b > bb or l > bl or f > bf or w > off_cap:
            break  # more layers only need more
        picks.append(kk)
        interval = t.combine(j, interval, t.secs[j][i][kk])
        if interval > limit0 * (1 + _REL_TOL):
            break  # a sequential device's time only grows with more layers
        lat += t.lat[j][i][kk]
        if e == m:
            if lat < result[0]:
                stage_time = max((interval + t_in) / r, t.stream_floor(j, w, r))
                result = (lat, (e, None, tuple(picks), (d, b, l, f), interval, stage_time, lat, 0.0, 0, r),
                          t.weights_in[j], w, t.activations_in[j])
            continue
        if last_dev + 1 >= k:
            continue
        t_out = prob.link_seconds[last_dev][i]
        for mode in link_modes:
            nxt = best.get((last_dev + 1, e, mode == "merged"))
            if nxt is None or nxt[0] == INF:
                continue
            if mode == "stage":
                buffer = t.link_buffer(j, i)
                if t_out > slack or b + buffer > bb:
                    continue
                cand = (tuple(picks), (d, b + buffer, l, f), interval, lat)
                stage_time = (interval + t_in) / r
            else:
                buffer = 0
                limit_m = limit0 - t_out
                if limit_m <= 0:
                    continue
                if interval <= limit_m * (1 + _REL_TOL):
                    cand = (tuple(picks), (d, b, l, f), interval, lat)
                else:
                    cand = _evaluate(t, j, s, e, limit_m, 0)
                    if cand is None:
                        continue
                stage_time = (cand[2] + t_in + t_out) / r
            total = cand[3] + t_out + nxt[0]
            stage_time = max(stage_time, t.stream_floor(j, w, r))
            if total < result[0]:
                result = (total, (e, mode, cand[0], cand[1], cand[2], stage_time, cand[3], t_out, buffer, r),
                          t.weights_in[j], w, t.activations_in[j])
    return result


def probe_reference(prob: ChainProblem, t: _Tables, T: float, link_modes=LINK_MODES) -> JointResult | None:
    """`probe`, one state and one end at a time: the plain statement of the DP, kept as the
    reference the vectorised probe is tested against."""
    m, k = prob.m, prob.k
    INF = float("inf")
    # best[(j, s, merged_in)] = (latency from layer s to the end, choice made at this state)
    best: dict[tuple[int, int, bool], tuple[float, tuple | None]] = {}
    for j in range(k - 1, -1, -1):
        rmax = _replica_limit(prob, j)
        for s in range(m - 1, -1, -1):
            for merged_in in ((False, True) if (s > 0 and j > 0) else (False,)):
                result: tuple[float, tuple | None] = (INF, None)
                for tm in t.modes():
                    for r in range(1, rmax + 1):
                        cand = _best_stage(prob, tm, best, j, s, merged_in, T, r, link_modes)
                        if cand[0] < result[0]:
                            result = cand
                if t.needs_split(j, s):
                    for r in range(2, _identical_run(prob, j) + 1):
                        cand = _split_stage(prob, t, best, j, s, merged_in, T, r, link_modes)
                        if cand[0] < result[0]:
                            result = cand
                best[(j, s, merged_in)] = result
    start = best.get((0, 0, False))
    if start is None or start[0] == INF:
        return None
    boards, j, s, merged_in = [], 0, 0, False
    while s < m:
        _, choice, *where = best[(j, s, merged_in)]
        e, mode, picks, res, interval, stage_time, lat, t_out, buffer, r, *split = choice
        weights_in, offchip, acts_in = where if where else ("on_chip", 0, "on_chip")
        boards.append(BoardAssignment(j, s, e, picks, interval, stage_time, lat, Resources(*res), merged_in,
                                      mode, t_out if mode else 0.0, buffer, r, bool(split), weights_in, offchip,
                                      acts_in))
        j, s, merged_in = j + r, e, mode == "merged"
    worst = max(max(bd.stage_time_s for bd in boards),
                max((bd.link_out_s for bd in boards if bd.link_out_mode == "stage"), default=0.0))
    return JointResult(tuple(boards), worst, start[0])


class _BestView:
    """`best.get((device, layer, merged_in))` over the vectorised probe's arrays, for _split_stage."""

    def __init__(self, best):
        self.best = best

    def get(self, key):
        j, e, merged_in = key
        arr = self.best[j][int(merged_in)] if j < len(self.best) else None
        return None if arr is None or e >= arr.size else (float(arr[e]),)


def probe(prob: ChainProblem, t: _Tables, T: float, link_modes=LINK_MODES,
          events: list | None = None) -> JointResult | None:
    """A minimum-latency assignment whose every stage (and link stage) takes <= T, or None.
    When None, `events` (if given) gets values whose minimum is a T' > T below which every
    probe is infeasible too (see joint_levels.board_batch).

    best[j][merged_in][s] = least latency from layer s to the end when device j runs the stage
    starting at s; a device depends only on later ones, so each device's every start is one
    vectorised pass per (weights mode, replicas, incoming link) (conveyor.planner.joint_levels)."""
    import numpy as np

    from conveyor.planner.joint_levels import board_batch

    m, k = prob.m, prob.k
    tables = t.modes()
    best: list[list] = [[None, None] for _ in range(k)]
    choice: list[list] = [[None, None] for _ in range(k)]
    split_won: dict[tuple[int, int, bool], tuple] = {}
    view = _BestView(best)
    for j in range(k - 1, -1, -1):
        rmax = _replica_limit(prob, j)
        for mi in (False, True):
            tot = np.full(m, INF)
            c_t = np.zeros(m, dtype=np.int8)
            c_r = np.ones(m, dtype=np.int64)
            c_e = np.zeros(m, dtype=np.int64)
            c_mode = np.zeros(m, dtype=np.int8)
            for ti, tm in enumerate(tables):
                lv = tm.levels(j)
                for r in range(1, rmax + 1):
                    nxt = (best[j + r][0], best[j + r][1]) if j + r < k else None
                    v, e, md = board_batch(tm, lv, j, r, mi, T, nxt, link_modes, _REL_TOL, events)
                    better = v < tot
                    if better.any():
                        tot[better] = v[better]
                        c_t[better], c_r[better], c_e[better], c_mode[better] = ti, r, e[better], md[better]
            for s in t.split_starts(j):
                if mi and (s == 0 or j == 0):
                    continue
                for r in range(2, _identical_run(prob, j) + 1):
                    cand = _split_stage(prob, t, view, j, s, mi, T, r, link_modes, events)
                    if cand[0] < tot[s]:
                        tot[s] = cand[0]
                        split_won[(j, s, mi)] = cand[1]
            best[j][int(mi)] = tot
            choice[j][int(mi)] = (c_t, c_r, c_e, c_mode)
    if not np.isfinite(best[0][0][0]):
        return None
    boards, j, s, merged_in = [], 0, 0, False
    while s < m:
        won = split_won.get((j, s, merged_in))
        if won is not None:  # compared after every unsplit stage: recorded only when strictly better
            e, mode, picks, res, interval, stage_time, lat, t_out, buffer, r, _ = won
            boards.append(BoardAssignment(j, s, e, picks, interval, stage_time, lat, Resources(*res), merged_in,
                                          mode, t_out if mode else 0.0, buffer, r, True))
        else:
            c_t, c_r, c_e, c_mode = choice[j][int(merged_in)]
            tm, r, e, md = tables[int(c_t[s])], int(c_r[s]), int(c_e[s]), int(c_mode[s])
            boards.append(_assignment(prob, tm, j, s, e, md, r, merged_in, T))
            mode = boards[-1].link_out_mode
        j, s, merged_in = j + r, e, mode == "merged"
    worst = max(max(bd.stage_time_s for bd in boards),
                max((bd.link_out_s for bd in boards if bd.link_out_mode == "stage"), default=0.0))
    return JointResult(tuple(boards), worst, float(best[0][0][0]))


def _assignment(prob: ChainProblem, t: _Tables, j: int, s: int, e: int, md: int, r: int, merged_in: bool,
                T: float) -> BoardAssignment:
    """The stage [s, e) on device j chosen by the vectorised probe, with its figures."""
    lv = t.levels(j)
    t_in = prob.link_seconds[j - 1][s - 1] if merged_in else 0.0
    limit = r * T - t_in
    last_dev = j + r - 1
    t_out = prob.link_seconds[last_dev][e - 1] if md else 0.0
    if md == 2:
        limit -= t_out
    q = int(lv.q_of(limit, _REL_TOL))
    picks = tuple(int(x) for x in lv.picks[q, s:e])
    res = [int(X[q, e] - X[q, s]) for X in (lv.D, lv.B, lv.LUT, lv.FF)]
    w = int(lv.W[q, e] - lv.W[q, s])
    lat = float(lv.LAT[q, e] - lv.LAT[q, s]) / lv.clock
    interval = 0.0
    for i, kk in zip(range(s, e), picks):
        interval = t.combine(j, interval, t.secs[j][i][kk])
    buffer = t.link_buffer(j, e - 1) if md == 1 else 0
    res[1] += buffer
    stage_time = (interval + t_in + (t_out if md == 2 else 0.0)) / r
    stage_time = max(stage_time, t.stream_floor(j, w, r))
    mode = (None, "stage", "merged")[md]
    return BoardAssignment(j, s, e, picks, interval, stage_time, lat, Resources(*res), merged_in, mode,
                           t_out if mode else 0.0, buffer, r, False, t.weights_in[j], w, t.activations_in[j])


def plan_joint(prob: ChainProblem, link_modes=LINK_MODES, upgrade: bool = True) -> JointResult:
    """The smallest feasible interval (bisection to a relative 1e-9). Among assignments at that
    interval, the DP picks the lowest latency with every layer at its cheapest qualifying
    engine; `upgrade` then spends each board's leftover resources on faster engines.

    Spilling activations is a third mode per board, and it rarely wins: the bisection runs
    without it, then two probes with it settle whether it does (one just below the interval
    found: infeasible means no plan with spills is faster; one at it: the least latency there
    over every mode). Only when the first succeeds does the bisection rerun with all modes."""
    t = _Tables(prob)
    spill = t.spilled is not None
    t.use_spill = not spill
    best = _bisect(prob, t, link_modes)
    if spill:
        t.use_spill = True
        if best is None:
            best = _bisect(prob, t, link_modes)
        elif probe(prob, t, best.interval_s * (1 - 4 * _REL_TOL), link_modes) is not None:
            best = _bisect(prob, t, link_modes)
        else:
            at = probe(prob, t, best.interval_s, link_modes)
            if at is not None and (at.interval_s, at.latency_s) < (best.interval_s, best.latency_s):
                best = at
    if best is None:
        raise PlanError(_why_infeasible(prob, t))
    return spend_leftover(prob, t, best) if upgrade else best


def _bisect(prob: ChainProblem, t: _Tables, link_modes) -> JointResult | None:
    """plan_joint's bisection over the modes `t` offers now; None when none is feasible."""
    hi = _upper_bound(prob, t)
    found = probe(prob, t, hi, link_modes)
    if found is None:
        return None
    lo = _lower_bound(prob, t) * (1 - 1e-12)   # every T <= lo is infeasible
    best = found
    hi = found.interval_s
    while hi - lo > _REL_TOL * hi:
        # far apart: halve the ratio (a loose probe scores the most stages); near: halve the gap
        mid = math.sqrt(lo * hi) if lo > 0 and hi > 4 * lo else (lo + hi) / 2
        events: list = []
        r = probe(prob, t, mid, link_modes, events)
        if r is None:
            # nothing changes below the next event: jump there (a hair below, against rounding)
            lo = max(mid, min(min(events, default=INF), hi) * (1 - 1e-12))
        else:
            hi = min(mid, r.interval_s)  # mid is feasible; the plan may do better than asked
            if r.interval_s < best.interval_s or (r.interval_s == best.interval_s and r.latency_s < best.latency_s):
                best = r
    return best


def _upgrade(t: _Tables, b: BoardAssignment, plain: bool = False) -> tuple[list[int], list[int]]:
    """spend_leftover's greedy on one board: (picks, resources used). Each step takes, among the
    moves that still fit, the one of most latency saved per share of the binding resource (ties:
    the earliest layer, then the slowest engine). A move's ratio does not depend on what the board
    uses, and what it uses only grows, so a move that no longer fits never will: a heap of every
    layer's moves from its current engine finds each step's move without rescanning (`plain`:
    the rescanning loop, which also serves option tables that are not monotone)."""
    import heapq

    j = b.board
    picks = list(b.option_index)
    used = [b.resources.dsp, b.resources.bram18k, b.resources.lut, b.resources.ff]
    budget = t.budget[j]
    layers = list(range(b.start, b.end))

    def moves(n: int):
        i, cur = layers[n], picks[n]
        res, lat = t.res[j][i], t.lat[j][i]
        for nxt in range(cur + 1, len(res)):
            delta = [x - y for x, y in zip(res[nxt], res[cur])]
            gain = lat[cur] - lat[nxt]
            cost = max([d / cap for d, cap in zip(delta, budget) if cap > 0] + [1e-12])
            if gain > 0:
                yield gain / cost, nxt, delta

    monotone = all(x <= y for i in layers for a, c in zip(t.res[j][i], t.res[j][i][1:]) for x, y in zip(a, c))
    if plain or not monotone:
        while True:
            best_gain, best_move = 0.0, None
            for n in range(len(layers)):
                for ratio, nxt, delta in moves(n):
                    if ratio > best_gain and not any(u + d > cap for u, d, cap in zip(used, delta, budget)):
                        best_gain, best_move = ratio, (n, nxt, delta)
            if best_move is None:
                return picks, used
            n, nxt, delta = best_move
            picks[n] = nxt
            used = [u + d for u, d in zip(used, delta)]
    heap = [(-ratio, n, nxt, picks[n], delta) for n in range(len(layers)) for ratio, nxt, delta in moves(n)]
    heapq.heapify(heap)
    while heap:
        _, n, nxt, cur, delta = heapq.heappop(heap)
        if picks[n] != cur or any(u + d > cap for u, d, cap in zip(used, delta, budget)):
            continue   # stale (the layer moved since), or it no longer fits (and never will)
        picks[n] = nxt
        used = [u + d for u, d in zip(used, delta)]
        for ratio, nxt2, delta2 in moves(n):
            heapq.heappush(heap, (-ratio, n, nxt2, nxt, delta2))
    return picks, used


def spend_leftover(prob: ChainProblem, t: _Tables, result: JointResult) -> JointResult:
    """Greedy: on each board, move the layer whose next faster engine saves the most latency
    per unit of the binding resource, while it fits. Intervals only shrink, so the pipeline
    interval never gets worse; latency is a heuristic optimum (docs/cost-model.md)."""
    boards = []
    pinned = t
    for b in result.boards:
        if b.split:
            boards.append(b)
            continue
        t = pinned.for_board(b)
        picks, used = _upgrade(t, b)
        rng = range(b.start, b.end)
        interval = 0.0
        for i, k in zip(rng, picks):
            interval = t.combine(b.board, interval, t.secs[b.board][i][k])
        lat = sum(t.lat[b.board][i][k] for i, k in zip(rng, picks))
        merged_out = b.link_out_s if b.link_out_mode == "merged" else 0.0
        t_in = prob.link_seconds[b.board - 1][b.start - 1] if b.link_in_merged else 0.0
        stage_time = max((interval + t_in + merged_out) / b.replicas, t.stream_floor(b.board, b.offchip_bytes, b.replicas))
        boards.append(BoardAssignment(b.board, b.start, b.end, tuple(picks), interval, stage_time, lat,
                                      Resources(*used), b.link_in_merged, b.link_out_mode, b.link_out_s,
                                      b.buffer_bram18k, b.replicas, False, b.weights_in, b.offchip_bytes,
                                      b.activations_in))
    worst = max(max(bd.stage_time_s for bd in boards),
                max((bd.link_out_s for bd in boards if bd.link_out_mode == "stage"), default=0.0))
    latency = sum(bd.latency_s + (bd.link_out_s if bd.link_out_mode else 0.0) for bd in boards)
    return JointResult(tuple(boards), worst, latency)


def _lower_bound(prob: ChainProblem, t: _Tables) -> float:
    """No plan has an interval below this: some stage runs each layer, at best at its fastest
    engine anywhere, shared by at most k replicas (a split layer's slice is no faster)."""
    return max((min((min(tm.secs[j][i]) for tm in t.modes() for j in range(prob.k) if tm.secs[j][i]),
                    default=0.0) for i in range(prob.m)), default=0.0) / prob.k


def _upper_bound(prob: ChainProblem, t: _Tables) -> float:
    """An interval at which every layer's slowest engine qualifies, a sequential device may
    run every layer, and every link fits."""
    total = sum(max((t.secs[j][i][0] for j in range(prob.k) if t.secs[j][i]), default=0.0) for i in range(prob.m))
    links = [x for row in prob.link_seconds for x in row if x != float("inf")]
    # streaming every weight through the slowest memory there is
    streams = [bw for bw, o in zip(prob.stream_Bps, prob.stream_options) if o is not None and bw > 0]
    moved = sum(w.weight_bytes for w in prob.works)
    for table in prob.spill_options or ():   # spilling moves more: its traffic, not just the weights
        if table is not None:
            moved = max(moved, sum(max((o.offchip_bytes for o in layer), default=0) for layer in table))
    stream = moved / min(streams) if streams else 0.0
    return (total + stream + 2 * max(links, default=0.0)) * 2 + 1e-9


def _why_infeasible(prob: ChainProblem, t: _Tables) -> str:
    from conveyor.planner.split import split_options

    for i, name in enumerate(prob.layer_names):
        alone = any(_evaluate(tm, j, i, i + 1, float("inf"), 0) is not None for j in range(prob.k) for tm in t.modes())
        split = any(
            t.needs_split(j, i) and any(
                all(x <= cap for x, cap in zip(split_options(prob.works[i], prob.specs[j], r)[0].resources.as_dict().values(),
                                               t.budget[j]))
                for r in range(2, _identical_run(prob, j) + 1))
            for j in range(prob.k))
        if not alone and not split:
            w = prob.works[i]
            return (f"layer '{name}' ({w.op_type}, {w.params:,} parameters at {w.weight_bits} bits) fits no device "
                    f"of the cluster even at its smallest engine, nor split across the identical boards there are; "
                    "more or larger boards, or narrower weights, would be needed")
    return (f"the {prob.m} layers do not fit on {prob.k} devices at any interval: their combined resources "
            "(with the layers too big for one board split across several) are too small; add boards or narrow "
            "the precision")
