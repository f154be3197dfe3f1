"""Graph -> ONNX, so that onnxruntime can run a graph or any cut of it (the CPU/GPU
backends, per-layer profiling). conveyor's own ops are written back as ONNX ops:
Dense(x, W, B) becomes MatMul + Add."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from conveyor.graph.ir import Graph

#: The opset every exported model declares. Nodes imported at an older opset keep
#: semantics that this opset still has for the attributes they use.
EXPORT_OPSET = 17


def to_onnx(graph: Graph, opset: int | None = None) -> onnx.ModelProto:
    """An ONNX model computing what `graph` computes, named and shaped as it is."""
    opset = opset or max([EXPORT_OPSET] + [n.opset for n in graph.nodes])
    from conveyor.frontends import qdq

    nodes, extra = [], []
    for n in graph.nodes:
        if n.op_type in qdq.ONNX_LOWERED:   # conveyor's integer-domain ops, as ONNX ops (frontends/qdq.py)
            more, consts = qdq.to_onnx_nodes(n, graph)
            nodes += more
            extra += consts
            continue
        if n.op_type == "Dense":
            mid = f"{n.outputs[0]}__matmul"
            nodes.append(helper.make_node("MatMul", [n.inputs[0], n.inputs[1]], [mid], name=n.name))
            nodes.append(helper.make_node("Add", [mid, n.inputs[2]], [n.outputs[0]], name=f"{n.name}__bias"))
            continue
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in n.attrs.items()}
        attrs = {k: (numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}
        nodes.append(helper.make_node(n.op_type, list(n.inputs), list(n.outputs), name=n.name, **attrs))
    g = helper.make_graph(
        nodes,
        graph.name,
        [_value_info(graph, t) for t in graph.input_names],
        [_value_info(graph, t) for t in graph.output_names],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in graph.weights.items()] + extra,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="conveyor")
    model.ir_version = 8
    return model


def _value_info(graph: Graph, name: str) -> onnx.ValueInfoProto:
    t = graph.tensors[name]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)), list(t.shape))
