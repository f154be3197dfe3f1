"""Cutting a convex set of nodes out of a graph (a pipeline stage, a device's share)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from conveyor.errors import ModelError
from conveyor.graph.tensor import Node

if TYPE_CHECKING:
    from conveyor.graph.ir import Graph


def subgraph(graph: "Graph", nodes: Iterable[Node | str], name: str | None = None) -> "Graph":
    """The sub-graph of `nodes`, which must be convex: no path leaves the set and re-enters it.

    Its inputs are the non-constant tensors it reads from outside (graph inputs or other
    nodes' outputs); its outputs are the tensors it produces that are read outside or are
    outputs of the whole graph. Weights travel with the nodes that use them.
    """
    from conveyor.graph.ir import Graph

    chosen = [graph.node(n) if isinstance(n, str) else graph.node(n.name) for n in nodes]
    names = {n.name for n in chosen}
    if not names:
        raise ModelError(f"subgraph of '{graph.name}': the node set is empty")
    _check_convex(graph, names)
    ordered = [n for n in graph.nodes if n.name in names]
    produced = {o for n in ordered for o in n.outputs if o}
    inputs: dict[str, None] = {}
    for n in ordered:
        for t in n.inputs:
            if t and t not in produced and not graph.is_weight(t):
                inputs[t] = None
    outputs: dict[str, None] = {}
    graph_outputs = set(graph.output_names)
    for n in ordered:
        for o in n.outputs:
            if o and (o in graph_outputs or any(c.name not in names for c in graph.consumers(o))):
                outputs[o] = None
    weights = {t: graph.weights[t] for n in ordered for t in n.inputs if t and graph.is_weight(t)}
    return Graph.build(
        name or f"{graph.name}[{ordered[0].name}..{ordered[-1].name}]",
        ordered,
        [graph.tensors[t] for t in inputs],
        list(outputs),
        weights,
    )


def _check_convex(graph: "Graph", names: set[str]) -> None:
    """Reject a set with an outside node that depends on the set and feeds back into it."""
    # In topological order, mark outside nodes that depend on a set node ("downstream");
    # the set is convex iff no set node reads from a downstream node.
    downstream: set[str] = set()
    for n in graph.nodes:
        preds = {p.name for t in n.inputs if t and (p := graph.producer(t)) is not None}
        if n.name in names:
            bad = sorted(preds & downstream)
            if bad:
                raise ModelError(
                    f"subgraph of '{graph.name}': node set is not convex: '{bad[0]}' lies on a path "
                    f"from the set back into it (at '{n.name}'); include it or cut elsewhere"
                )
        elif preds & (names | downstream):
            downstream.add(n.name)
