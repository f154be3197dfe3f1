"""Baselines for reports: ways people split a network before tuning each board.

- `equal`: equal numbers of compute layers per board (what a first attempt does);
- `dichotomy`: the multi-FPGA paper's "task dichotomy iteration": a binary search on the
  stage bound over fixed per-layer times (each layer at its smallest engine), board-to-board
  delay folded into the stages; then each board's loops are unrolled separately;
- `greedy`: fill each board in order with as many layers as its resources hold at their
  smallest engines, then unroll.
All three then tune each board's parallelism on its own (`tune_split`), the paper's third step.
"""

from __future__ import annotations

from conveyor.errors import PlanError
from conveyor.planner.chain import ChainProblem
from conveyor.planner.evaluate import tune_split
from conveyor.planner.joint import JointResult, _evaluate, _Tables
from conveyor.planner.partition import balance

BASELINES = ("equal", "dichotomy", "greedy")


def equal_split(prob: ChainProblem) -> list[tuple[int, int]]:
    """Every board gets the same number of compute (non-movement) layers (+-1); movement
    layers ride with the compute layer before them."""
    compute = [i for i, w in enumerate(prob.works) if not w.is_movement]
    n = len(compute)
    k = min(prob.k, max(1, n))
    bounds = [0] + [compute[(j + 1) * n // k] for j in range(k - 1)] + [prob.m]
    return [(bounds[j], bounds[j + 1]) for j in range(k)]


def dichotomy_split(prob: ChainProblem) -> list[tuple[int, int]]:
    """The paper's binary search on the stage bound (here exact: `balance`) over each layer's
    time at its smallest engine on board 0, links merged into the stages."""
    t = _Tables(prob)
    costs = [t.secs[0][i][0] if t.secs[0][i] else 0.0 for i in range(prob.m)]
    links = [prob.link_seconds[0][i] for i in range(prob.m - 1)] if prob.k > 1 else None
    split = balance(costs, prob.k, link_costs=links, link_mode="merged", allow_empty=True)
    return [(s, e) for s, e in split.stages]


def greedy_split(prob: ChainProblem) -> list[tuple[int, int]]:
    """Fill boards in order with as many layers as fit at their smallest engines."""
    t = _Tables(prob)
    ranges, s = [], 0
    for j in range(prob.k):
        if s >= prob.m:
            break
        e = s
        while e < prob.m and _evaluate(t, j, s, e + 1, float("inf"), 0) is not None:
            e += 1
        if e == s:
            raise PlanError(f"greedy: layer '{prob.layer_names[s]}' fits no board at its smallest engine")
        ranges.append((s, e))
        s = e
    if s < prob.m:
        raise PlanError(f"greedy: the boards fill up before layer '{prob.layer_names[s]}'")
    return ranges


def run_baseline(prob: ChainProblem, name: str) -> JointResult:
    splits = {"equal": equal_split, "dichotomy": dichotomy_split, "greedy": greedy_split}
    if name not in splits:
        raise PlanError(f"unknown baseline '{name}'; known: {', '.join(BASELINES)}")
    return tune_split(prob, splits[name](prob))
