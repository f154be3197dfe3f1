"""Tuning a fixed split: each board's parallelism chosen for the smallest interval its
resources allow, as the multi-FPGA paper did after partitioning. Used by the baselines
(partition first, tune after), never by the joint planner itself."""

from __future__ import annotations

from conveyor.cost.fpga import Resources
from conveyor.errors import PlanError
from conveyor.planner.chain import ChainProblem
from conveyor.planner.joint import _REL_TOL, BoardAssignment, JointResult, _evaluate, _Tables


def tune_split(prob: ChainProblem, ranges: list[tuple[int, int]], link_mode: str = "stage") -> JointResult:
    """The fastest pipeline for the given board ranges (consecutive boards from board 0).

    Each used link is a pipeline stage when `link_mode="stage"` and its double buffer fits
    the sending board, else merged into the sender's stage."""
    t = _Tables(prob)
    used = [(j, s, e) for j, (s, e) in enumerate(ranges) if e > s]
    if len(ranges) > prob.k:
        raise PlanError(f"split uses {len(ranges)} boards; the cluster has {prob.k}")

    def at(T: float) -> JointResult | None:
        boards, latency, merged_in = [], 0.0, False
        for n, (j, s, e) in enumerate(used):
            last = n == len(used) - 1
            t_in = prob.link_seconds[used[n - 1][0]][s - 1] if merged_in else 0.0
            t_out = 0.0 if last else prob.link_seconds[j][e - 1]
            choice = None
            for mode in ((None,) if last else (("stage", "merged") if link_mode == "stage" else ("merged",))):
                buffer = t.link_buffer(j, e - 1) if mode == "stage" else 0
                if mode == "stage" and t_out > T * (1 + _REL_TOL):
                    continue
                limit = T - t_in - (t_out if mode == "merged" else 0.0)
                ev = _evaluate(t, j, s, e, limit, buffer) if limit > 0 else None
                if ev is not None:
                    choice = (mode, buffer, ev)
                    break
            if choice is None:
                return None
            mode, buffer, (picks, res, interval, lat) = choice
            stage_time = interval + t_in + (t_out if mode == "merged" else 0.0)
            boards.append(BoardAssignment(j, s, e, picks, interval, stage_time, lat, Resources(*res), merged_in,
                                          mode, t_out if mode else 0.0, buffer))
            latency += lat + (t_out if mode else 0.0)
            merged_in = mode == "merged"
        worst = max(max(b.stage_time_s for b in boards),
                    max((b.link_out_s for b in boards if b.link_out_mode == "stage"), default=0.0))
        return JointResult(tuple(boards), worst, latency)

    hi = 1.0
    found = at(hi)
    while found is None and hi < 1e6:
        hi *= 4
        found = at(hi)
    if found is None:
        raise PlanError(_misfit(prob, t, used))
    lo, best = 0.0, found
    hi = found.interval_s
    while hi - lo > _REL_TOL * hi:
        mid = (lo + hi) / 2
        r = at(mid)
        if r is None:
            lo = mid
        else:
            hi = min(mid, r.interval_s)
            if r.interval_s < best.interval_s:
                best = r
    return best


def _misfit(prob: ChainProblem, t: _Tables, used) -> str:
    """Name the first board whose layers exceed its budget even at their smallest engines."""
    for j, s, e in used:
        need = [0, 0, 0, 0]
        for i in range(s, e):
            if t.res[j][i]:
                need = [a + b for a, b in zip(need, t.res[j][i][0])]
        for label, used_, have in zip(("DSP", "BRAM18K", "LUT", "FF"), need, t.budget[j]):
            if used_ > have:
                return (f"board {prob.devices[j]} cannot hold layers {prob.layer_names[s]}..{prob.layer_names[e - 1]}: "
                        f"they need {used_:,} {label} at their smallest engines, the budget is {have:,}")
    return "the split's links are slower than any interval the boards reach"
