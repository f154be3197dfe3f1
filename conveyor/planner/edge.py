"""Edge-cloud splitting (Neurosurgeon, Kang et al., ASPLOS 2017): run the first layers on
the edge device, send the cut's tensors up the link, run the rest in the cloud, send the
outputs back; pick the split point of least end-to-end latency. Either side may be empty:
all-edge sends nothing; all-cloud sends the inputs up."""

from __future__ import annotations

from conveyor.cost.fpga import Resources
from conveyor.errors import PlanError
from conveyor.planner.chain import ChainProblem
from conveyor.planner.joint import BoardAssignment, JointResult, _evaluate, _Tables, spend_leftover


def edge_cloud(graph, prob: ChainProblem) -> JointResult:
    if prob.k != 2:
        raise PlanError(f"the edge-cloud objective takes a cluster of two devices (edge, cloud); "
                        f"this one has {prob.k}: {', '.join(prob.devices)}")
    t = _Tables(prob)
    m = prob.m
    in_bytes = sum(graph.tensors[n].nbytes for n in graph.input_names)
    out_bytes = sum(graph.tensors[n].nbytes for n in graph.output_names)
    uplink = _link_time(prob, in_bytes)
    downlink = _link_time(prob, out_bytes)
    best, best_lat = None, float("inf")
    for p in range(m + 1):
        edge = _side(prob, t, 0, 0, p)
        cloud = _side(prob, t, 1, p, m)
        if edge is False or cloud is False:
            continue  # that side cannot hold its layers
        if p == m:
            up, down = 0.0, 0.0
        else:
            up = uplink if p == 0 else prob.link_seconds[0][p - 1]
            down = downlink
        latency = (edge.latency_s if edge else 0.0) + up + (cloud.latency_s if cloud else 0.0) + down
        if latency < best_lat:
            best_lat = latency
            boards = []
            if edge:
                boards.append(BoardAssignment(0, 0, p, edge.option_index, edge.compute_interval_s, edge.stage_time_s,
                                              edge.latency_s, edge.resources, False,
                                              "merged" if cloud else None, up if cloud else 0.0, 0))
            if cloud:
                boards.append(BoardAssignment(1, p, m, cloud.option_index, cloud.compute_interval_s,
                                              cloud.stage_time_s + (up if edge else 0.0), cloud.latency_s,
                                              cloud.resources, bool(edge), None, 0.0, 0))
            interval = max([b.stage_time_s for b in boards] + [up + down])
            best = JointResult(tuple(boards), interval, latency)
    if best is None:
        raise PlanError("neither device can hold the model's layers on either side of any split")
    return best


def _link_time(prob: ChainProblem, nbytes: int) -> float:
    """A transfer of `nbytes` on the edge-cloud link, from its latency and its rate."""
    if not prob.cuts:
        return 0.0
    # link_seconds = latency + bytes / bandwidth: recover both from two cuts of different sizes
    times = prob.link_seconds[0]
    sizes = [c.bytes for c in prob.cuts]
    lo, hi = min(range(len(sizes)), key=sizes.__getitem__), max(range(len(sizes)), key=sizes.__getitem__)
    if sizes[hi] == sizes[lo]:
        return times[lo]
    per_byte = (times[hi] - times[lo]) / (sizes[hi] - sizes[lo])
    return times[lo] + (nbytes - sizes[lo]) * per_byte


def _side(prob: ChainProblem, t: _Tables, j: int, s: int, e: int):
    """The fastest way device j runs layers [s, e): None when empty, False when they do not fit."""
    if e <= s:
        return None
    ev = _evaluate(t, j, s, e, float("inf"), 0)
    if ev is None:
        return False
    picks, res, interval, lat = ev
    board = BoardAssignment(j, s, e, picks, interval, interval, lat, Resources(*res), False, None, 0.0, 0)
    upgraded = spend_leftover(prob, t, JointResult((board,), interval, lat)).boards[0]
    return upgraded
