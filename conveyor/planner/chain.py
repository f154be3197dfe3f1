"""The facts a chain planner needs about a graph on a cluster, computed once.

Layers are the graph's nodes in topological order; a cut after position i sends every
tensor produced at or before i and read after i (skip connections included).
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.cost.fpga import LayerOption, Resources, board_budget, dataflow_options
from conveyor.cost.work import LayerWork, layer_work
from conveyor.errors import PlanError
from conveyor.hardware.cluster import Cluster


@dataclass(frozen=True)
class Cut:
    position: int              # the cut falls after layer `position`
    tensors: tuple[str, ...]
    bytes: int


@dataclass(frozen=True)
class ChainProblem:
    layer_names: tuple[str, ...]
    works: tuple[LayerWork, ...]
    devices: tuple[str, ...]                                  # FPGA boards in chain order
    clocks: tuple[float, ...]
    budgets: tuple[Resources, ...]
    options: tuple[tuple[tuple[LayerOption, ...], ...], ...]  # [board][layer] -> options, slowest first
    cuts: tuple[Cut, ...]                                     # cuts[i]: after layer i (i < m-1)
    link_seconds: tuple[tuple[float, ...], ...]               # [board j][i]: cut i sent from j to j+1
    link_names: tuple[str, ...]                               # [board j]: link j -> j+1

    @property
    def m(self) -> int:
        return len(self.layer_names)

    @property
    def k(self) -> int:
        return len(self.devices)


def crossing_cuts(graph, works: list[LayerWork]) -> list[Cut]:
    """Bytes and tensors crossing each cut position, at each tensor's producer's bit width."""
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    bits = {w.node: w.act_bits for w in works}
    m = len(graph.nodes)
    last_read: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            if t and not graph.is_weight(t):
                last_read[t] = i
    for t in graph.output_names:
        last_read[t] = m  # graph outputs leave from the last stage
    produced_at = {t: index[n.name] for n in graph.nodes for t in n.outputs if t}
    for t in graph.input_names:
        produced_at[t] = -1
    cuts = []
    for pos in range(m - 1):
        crossing = [t for t, p in produced_at.items() if p <= pos < last_read.get(t, -2)]
        nbytes = 0
        for t in crossing:
            producer = graph.producer(t)
            b = bits[producer.name] if producer is not None else 32
            nbytes += -(-graph.tensors[t].size * b // 8)
        cuts.append(Cut(pos, tuple(crossing), nbytes))
    return cuts


def chain_problem(graph, cluster: Cluster, precision=None) -> ChainProblem:
    fpgas = [d for d in cluster.devices if d.kind == "fpga"]
    if not fpgas:
        raise PlanError(f"cluster '{cluster.name}' has no FPGA board; the dataflow planner places layers on FPGAs")
    works = layer_work(graph, precision)
    cuts = crossing_cuts(graph, works)
    options = tuple(tuple(tuple(dataflow_options(w, d.board)) for w in works) for d in fpgas)
    link_seconds, link_names = [], []
    for j, d in enumerate(fpgas):
        if j + 1 < len(fpgas):
            link = cluster.link_between(d.name, fpgas[j + 1].name)
            link_names.append(link.name)
            link_seconds.append(tuple(link.transfer_time_s(c.bytes) for c in cuts))
        else:
            link_names.append("")
            link_seconds.append(tuple(float("inf") for _ in cuts))
    return ChainProblem(
        layer_names=tuple(n.name for n in graph.nodes),
        works=tuple(works),
        devices=tuple(d.name for d in fpgas),
        clocks=tuple(d.board.clock_hz for d in fpgas),
        budgets=tuple(board_budget(d.board) for d in fpgas),
        options=options,
        cuts=tuple(cuts),
        link_seconds=tuple(link_seconds),
        link_names=tuple(link_names),
    )
