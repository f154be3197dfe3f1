"""Per-layer counters: MACs, parameter bytes, activation bytes in and out.

MACs come from each op's own counter; bytes are derived from the tensors the
node touches: constant inputs are parameters, the rest are activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor import ops
from conveyor.graph.tensor import Node
from conveyor.ops.registry import ValueInfo

if TYPE_CHECKING:
    from conveyor.graph.ir import Graph


@dataclass(frozen=True)
class LayerCounters:
    node: str
    op_type: str
    output_shape: tuple[int, ...]
    macs: int
    params: int
    param_bytes: int
    act_in_bytes: int
    act_out_bytes: int
    layer: str = ""  # the short layer name (conveyor.graph.names)


def node_counters(graph: "Graph", node: Node) -> LayerCounters:
    ins = [
        ValueInfo(graph.tensors[t].shape, graph.tensors[t].dtype, graph.weights.get(t)) if t else None
        for t in node.inputs
    ]
    outs = [(graph.tensors[t].shape, graph.tensors[t].dtype) for t in node.outputs if t]
    params = [graph.tensors[t] for t in dict.fromkeys(node.inputs) if t and graph.is_weight(t)]
    acts = [graph.tensors[t] for t in dict.fromkeys(node.inputs) if t and not graph.is_weight(t)]
    first_out = next(t for t in node.outputs if t)
    return LayerCounters(
        node=node.name,
        op_type=node.op_type,
        output_shape=graph.tensors[first_out].shape,
        macs=int(ops.get(node.op_type, node).macs(node, ins, outs)),
        params=sum(p.size for p in params),
        param_bytes=sum(p.nbytes for p in params),
        act_in_bytes=sum(a.nbytes for a in acts),
        act_out_bytes=sum(graph.tensors[t].nbytes for t in node.outputs if t),
        layer=graph.layer_names[node.name],
    )


def layer_counters(graph: "Graph") -> list[LayerCounters]:
    return [node_counters(graph, n) for n in graph.nodes]
