"""The exact chain partition: contiguous layer ranges onto boards in a fixed chain order,
minimising the pipeline bottleneck, then the end-to-end latency among optimal splits.

See docs/partition.md for the model, the algorithms and their exactness argument.
"""

from __future__ import annotations

from conveyor.planner.partition_brute import brute_force_chain, count_splits
from conveyor.planner.partition_latency import min_latency_bounds
from conveyor.planner.partition_model import Chain, Split
from conveyor.planner.partition_search import diagnose, min_bottleneck

__all__ = ["Split", "balance", "brute_force", "count_splits"]


def balance(costs, k, *, speeds=None, link_costs=None, link_mode="stage", memory=None,
            capacity=None, allow_empty=True) -> Split:
    """Split the chain of layers ``costs`` onto ``k`` boards (in board order) so that the
    slowest pipeline stage is as fast as possible; among such splits, one of least latency.

    costs[i]       time of layer i on a speed-1 board (finite, >= 0)
    speeds[j]      speed of board j; board j runs its layers in (cost sum) / speeds[j]
    link_costs[i]  time to send layer i's output to the next board when a cut falls after
                   layer i (m-1 entries, or m with the last unused); default 0
    link_mode      "stage": every used link is a pipeline stage of its own;
                   "merged": a board's stage is incoming link + compute + outgoing link
    memory[i], capacity
                   weight bytes of layer i, bytes per board (scalar or one per board);
                   a board's layers must fit
    allow_empty    whether a board may get no layer (it is then skipped: data crosses one
                   link per cut whichever board it lands on)

    Raises PlanError naming the constraint that cannot be met, or the malformed argument.
    """
    ch = Chain(costs, k, speeds=speeds, link_costs=link_costs, link_mode=link_mode,
               memory=memory, capacity=capacity, allow_empty=allow_empty)
    return solve(ch)


def solve(ch: Chain) -> Split:
    if not ch.allow_empty and ch.k > ch.m:
        raise diagnose(ch)
    if ch.k == 1:
        bounds = [0, ch.m]
        if not ch.memory_ok(bounds):
            raise diagnose(ch)
        return ch.evaluate(bounds)
    best, _, _ = min_bottleneck(ch)
    bounds = min_latency_bounds(ch, best)
    split = ch.evaluate(bounds)
    if split.bottleneck != best or not ch.memory_ok(bounds):
        raise AssertionError(f"partition: latency pass broke the bottleneck ({split.bottleneck} != {best})")
    return split


def brute_force(costs, k, *, speeds=None, link_costs=None, link_mode="stage", memory=None,
                capacity=None, allow_empty=True) -> Split:
    """Same contract as balance(), by enumerating every split (small cases only: at most
    2,000,000 splits; with empty boards there are C(m+k-1, k-1), without C(m-1, k-1))."""
    ch = Chain(costs, k, speeds=speeds, link_costs=link_costs, link_mode=link_mode,
               memory=memory, capacity=capacity, allow_empty=allow_empty)
    return brute_force_chain(ch)

