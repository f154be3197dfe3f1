"""The chain model: validated inputs, the `Split` result, and the one definition of every time.

Every time is evaluated from per-board prefix sums, the same way in the planner and in
the brute force, so that "optimal" means optimal for these exact floating-point values:

- ``P[0] = 0``, ``P[i+1] = P[i] + costs[i]`` (summed left to right, float64);
  ``Q[j] = P / speeds[j]`` (one row per board; ``Q[j] is P`` scaled, rounded once).
- ``cut[p]`` is the link cost of a cut at position ``p`` (between layer ``p-1`` and
  layer ``p``): ``link_costs[p-1]`` for ``0 < p < m``; ``cut[0] = cut[m] = 0``.
- compute time of board ``j`` on layers ``[a, b)``: ``Q[j][b] - Q[j][a]`` (0 when empty).
- merged stage time of a non-empty board ``j`` on ``[a, b)``:
  ``((cut[a] - Q[j][a]) + Q[j][b]) + cut[b]`` evaluated in that order.  With no links
  this is exactly the compute time.
- latency: ``L = 0``; for each non-empty board in chain order
  ``L = ((L - Q[j][a]) + Q[j][b]) + cut[b]``.

In exact arithmetic these are the obvious quantities (compute = cost sum / speed;
merged = incoming link + compute + outgoing link; latency = all compute + every link
crossed once).  In floating point each differs from a direct sum by a few ulp of the
total cost; the prefix form is what makes the optimisation decompose exactly.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from conveyor.errors import PlanError

LINK_MODES = ("stage", "merged")


@dataclass(frozen=True)
class Split:
    """One contiguous layer range per board, and the times that split achieves.

    stages:        ``(start, end)`` half-open layer range per board, in board order;
                   an empty board is ``(i, i)``.
    bottleneck:    largest stage time (stage mode: boards and used links; merged mode:
                   boards, each including its links).
    latency:       end-to-end time of one item: all compute plus every link crossed once.
    stage_times:   per board: compute time (``link_mode="stage"``) or incoming link +
                   compute + outgoing link (``"merged"``); 0.0 for an empty board.
    compute_times: per board, compute time only.
    cuts:          positions of the used cuts (a cut at ``p`` sends layer ``p-1``'s output).
    link_times:    per used cut, the link cost paid there.
    link_mode:     ``"stage"`` or ``"merged"``.
    """

    stages: tuple[tuple[int, int], ...]
    bottleneck: float
    latency: float
    stage_times: tuple[float, ...]
    compute_times: tuple[float, ...]
    cuts: tuple[int, ...]
    link_times: tuple[float, ...]
    link_mode: str

    @property
    def boards(self) -> int:
        return len(self.stages)

    @property
    def balance(self) -> tuple[int, ...]:
        """Number of layers per board (torchgpipe's ``balance`` list)."""
        return tuple(e - s for s, e in self.stages)


def _vector(name: str, values, length: int | None, *, noun: str, per: str = "",
            positive: bool = False, allow_inf: bool = False) -> np.ndarray:
    """A validated 1-D array of finite numbers, >= 0 (or > 0); errors name the argument and index."""
    if isinstance(values, (str, bytes)):
        raise PlanError(f"{name} must be a sequence of numbers, got a string")
    try:
        arr = np.asarray(values)
    except Exception as exc:  # ragged input and the like
        raise PlanError(f"{name} must be a 1-D sequence of numbers: {exc}") from None
    if arr.ndim != 1:
        raise PlanError(f"{name} must be a 1-D sequence of numbers, got an array of shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        what = "complex values" if arr.dtype.kind == "c" else f"dtype {arr.dtype}"
        raise PlanError(f"{name} must hold real numbers, got {what}")
    if length is not None and arr.shape[0] != length:
        raise PlanError(f"{name} has {arr.shape[0]} entries; expected {length} ({per})")
    as_f = arr.astype(np.float64)
    bad = (np.isnan(as_f) if allow_inf else ~np.isfinite(as_f)) | ((arr <= 0) if positive else (arr < 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        need = ("" if allow_inf else "finite and ") + ("> 0" if positive else ">= 0")
        raise PlanError(f"{name}[{i}] is {arr[i].item()!r}; {noun} must be {need}")
    return arr


def fmt_bytes(x: float) -> str:
    x = float(x)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= scale:
            return f"{x / scale:.4g} {unit}"
    return f"{x:.4g} bytes"


class Chain:
    """Validated inputs of one partition problem, with the prefix arrays every algorithm uses."""

    def __init__(self, costs, k, *, speeds=None, link_costs=None, link_mode="stage",
                 memory=None, capacity=None, allow_empty=True):
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise PlanError(f"k must be a positive integer (the number of boards), got {k!r}")
        k = int(k)
        if link_mode not in LINK_MODES:
            raise PlanError(f"link_mode {link_mode!r} is not known; expected 'stage' or 'merged'")
        if not isinstance(allow_empty, (bool, np.bool_)):
            raise PlanError(f"allow_empty must be True or False, got {allow_empty!r}")
        c = _vector("costs", costs, None, noun="layer costs").astype(np.float64)
        m = int(c.shape[0])
        if m == 0:
            raise PlanError("costs is empty; the chain needs at least one layer")
        if speeds is None:
            s = np.ones(k)
        else:
            s = _vector("speeds", speeds, k, positive=True, noun="board speeds", per="one per board").astype(np.float64)
        if link_costs is None:
            lk = np.zeros(m - 1)
        else:
            lk = _vector("link_costs", link_costs, None, noun="link costs").astype(np.float64)
            if lk.shape[0] not in (m - 1, m):
                raise PlanError(
                    f"link_costs has {lk.shape[0]} entries; expected {m - 1} (one per layer boundary) "
                    f"or {m} (one per layer; the last is never used)")
        if (memory is None) != (capacity is None):
            given, missing = ("memory", "capacity") if capacity is None else ("capacity", "memory")
            raise PlanError(f"{given} was given without {missing}; pass both (weight bytes per layer and "
                            f"bytes per board) or neither")

        self.m, self.k = m, k
        self.link_mode = link_mode
        self.allow_empty = bool(allow_empty)
        self.costs = c
        self.speeds = s
        P = np.concatenate(([0.0], np.cumsum(c)))
        self.P = P
        self.equal_speeds = bool(np.all(s == s[0]))
        if self.equal_speeds:
            row = P / s[0]
            self.Q = np.broadcast_to(row, (k, m + 1))
        else:
            self.Q = P[None, :] / s[:, None]
        cut = np.zeros(m + 1)
        cut[1:m] = lk[: m - 1]
        self.cut = cut
        self.max_link = float(cut.max())

        # Memory: integer bytes are summed exactly (int64); float bytes by prefix differences.
        if memory is not None:
            mem = _vector("memory", memory, m, noun="weight bytes", per="one per layer")
            if np.isscalar(capacity) or np.ndim(capacity) == 0:
                cap = _vector("capacity", [capacity], None, noun="board capacities (bytes)", allow_inf=True)
                cap = np.full(k, float(cap[0]))
            else:
                cap = _vector("capacity", capacity, k, noun="board capacities (bytes)",
                              per="a scalar, or one per board", allow_inf=True).astype(np.float64)
            if np.issubdtype(mem.dtype, np.integer) or mem.dtype == bool:
                M = np.concatenate(([0], np.cumsum(mem.astype(np.int64))))
            else:
                M = np.concatenate(([0.0], np.cumsum(mem.astype(np.float64))))
            self.memory = mem
            self.M = M
            self.cap = cap
        else:
            self.memory = None
            self.M = None
            self.cap = None
        self._mem_windows: dict = {}

    # -- memory windows (independent of the bottleneck, cached per capacity value) -------------

    def mem_windows(self, j: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo, hi) for board j: lo[b] = first a with mem[a:b] <= cap, hi[a] = last b with mem[a:b] <= cap."""
        if self.M is None:
            return None
        cap = float(self.cap[j])
        got = self._mem_windows.get(cap)
        if got is None:
            M = self.M
            idx = np.arange(self.m + 1)
            if np.isinf(cap):
                lo, hi = np.zeros(self.m + 1, dtype=np.int64), np.full(self.m + 1, self.m, dtype=np.int64)
            else:
                fits = lambda a, b: (M[b] - M[a]) <= cap  # noqa: E731 (used twice just below)
                lo = first_true(M, fits, idx, M - cap)
                hi = last_true(M, fits, idx, M + cap)
            got = (lo, hi)
            self._mem_windows[cap] = got
        return got

    # -- the one evaluation of a split ---------------------------------------------------------

    def evaluate(self, bounds) -> Split:
        """The Split for boundaries ``0 = bounds[0] <= ... <= bounds[k] = m`` (no checks of constraints)."""
        Q, cut, m = self.Q, self.cut, self.m
        stages, stage_t, comp_t, cuts, links = [], [], [], [], []
        lat = 0.0
        for j in range(self.k):
            a, b = int(bounds[j]), int(bounds[j + 1])
            stages.append((a, b))
            if a == b:
                stage_t.append(0.0)
                comp_t.append(0.0)
                continue
            qa, qb = Q[j, a], Q[j, b]
            t = float(qb - qa)
            comp_t.append(t)
            if self.link_mode == "merged":
                stage_t.append(float(((cut[a] - qa) + qb) + cut[b]))
            else:
                stage_t.append(t)
            lat = float(((lat - qa) + qb) + cut[b])
            if b < m:
                cuts.append(b)
                links.append(float(cut[b]))
        bott = max(stage_t)
        if self.link_mode == "stage" and links:
            bott = max(bott, max(links))
        return Split(tuple(stages), bott + 0.0, lat + 0.0, tuple(stage_t), tuple(comp_t),
                     tuple(cuts), tuple(links), self.link_mode)

    def memory_ok(self, bounds) -> bool:
        if self.M is None:
            return True
        M, cap = self.M, self.cap
        return all((M[bounds[j + 1]] - M[bounds[j]]) <= cap[j] for j in range(self.k))


# -- exact searches over monotone predicates, vectorised ------------------------------------------
#
# Each takes a non-decreasing key array, an exact predicate that depends on the candidate
# index only through its key (so runs of equal keys answer alike), and an approximate
# threshold for np.searchsorted.  The guess is then corrected run by run with the exact
# predicate, so no result depends on rounding in the guess.

def first_true(keys, pred, b, guess, anchor=None):
    """For each query b: the smallest a in [0, anchor] with pred(a, b), where pred is
    false...false true...true in a and pred(anchor, b) holds (anchor defaults to b)."""
    b = np.asarray(b, dtype=np.int64)
    if anchor is None:
        anchor = b
    a = np.minimum(np.searchsorted(keys, guess, side="left").astype(np.int64), anchor)
    while True:                                  # right while pred(a) is false
        ia = np.flatnonzero(~pred(a, b))
        if ia.size == 0:
            break
        a[ia] = np.minimum(np.searchsorted(keys, keys[a[ia]], side="right"), anchor[ia])
    while True:                                  # left while pred(a - 1) holds
        ia = np.flatnonzero(a > 0)
        if ia.size:
            ia = ia[pred(a[ia] - 1, b[ia])]
        if ia.size == 0:
            break
        a[ia] = np.searchsorted(keys, keys[a[ia] - 1], side="left")
    return a


def last_true(keys, pred, a, guess):
    """For each query a: the largest b in [a, n-1] with pred(a, b), where pred is
    true...true false...false in b and pred(a, a) holds."""
    a = np.asarray(a, dtype=np.int64)
    n = keys.shape[0]
    b = np.searchsorted(keys, guess, side="right").astype(np.int64) - 1
    b = np.minimum(np.maximum(b, a), n - 1)
    while True:                                  # left while pred(b) is false
        ib = np.flatnonzero(~pred(a, b))
        if ib.size == 0:
            break
        b[ib] = np.maximum(np.searchsorted(keys, keys[b[ib]], side="left") - 1, a[ib])
    while True:                                  # right while pred(b + 1) holds
        ib = np.flatnonzero(b < n - 1)
        if ib.size:
            ib = ib[pred(a[ib], b[ib] + 1)]
        if ib.size == 0:
            break
        b[ib] = np.searchsorted(keys, keys[b[ib] + 1], side="right") - 1
    return b


def count_true(keys, pred, q, guess):
    """For each query q: how many leading entries of keys satisfy pred(p, q), where pred is
    true...true false...false in p (possibly none, possibly all)."""
    q = np.asarray(q, dtype=np.int64)
    n = keys.shape[0]
    r = np.searchsorted(keys, guess, side="right").astype(np.int64)
    while True:                                  # right while pred(r) holds
        ir = np.flatnonzero(r < n)
        if ir.size:
            ir = ir[pred(r[ir], q[ir])]
        if ir.size == 0:
            break
        r[ir] = np.searchsorted(keys, keys[r[ir]], side="right")
    while True:                                  # left while pred(r - 1) fails
        ir = np.flatnonzero(r > 0)
        if ir.size:
            ir = ir[~pred(r[ir] - 1, q[ir])]
        if ir.size == 0:
            break
        r[ir] = np.searchsorted(keys, keys[r[ir] - 1], side="left")
    return r
