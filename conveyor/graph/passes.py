"""Graph passes. Each has one contract, `apply(graph) -> (graph, changed)` (qonnx's),
and `optimize` applies them all until none changes the graph.

- `drop_passthrough`: remove Identity, Cast to the same dtype and inference-mode Dropout;
- `fold_constants`: evaluate nodes whose inputs are all constants;
- `fold_batchnorm`: fold BatchNormalization into the Conv / Gemm / Dense before it;
- `fuse_dense`: MatMul(x, W) + B  ->  Dense(x, W, B);
- `drop_dead`: remove nodes whose outputs nobody reads.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from conveyor import ops
from conveyor.graph.ir import Graph, load_time_values
from conveyor.graph.tensor import Node

Pass = Callable[[Graph], "tuple[Graph, bool]"]


def _rebuild(graph: Graph, nodes: list[Node], weights: dict[str, np.ndarray]) -> Graph:
    return Graph.build(graph.name, nodes, graph.inputs, graph.output_names, weights)


def _rename_inputs(node: Node, mapping: dict[str, str]) -> Node:
    if not any(t in mapping for t in node.inputs):
        return node
    return replace(node, inputs=tuple(mapping.get(t, t) for t in node.inputs))


def _sole_reader(graph: Graph, tensor: str) -> Node | None:
    """The one node reading `tensor`, if exactly one does and it is not a graph output."""
    readers = graph.consumers(tensor)
    if len(readers) != 1 or tensor in graph.output_names:
        return None
    return readers[0]


def _unique_name(graph: Graph, base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in graph.tensors or name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


# ---- passes --------------------------------------------------------------------------

def _is_passthrough(graph: Graph, n: Node) -> bool:
    if n.op_type == "Identity":
        return True
    if n.op_type == "Cast":  # to the dtype it already has (Keras' exports write many)
        return graph.tensors[n.inputs[0]].dtype == graph.tensors[n.outputs[0]].dtype
    if n.op_type != "Dropout":  # (training-mode Dropout is rejected when the graph is built)
        return False
    mask = n.outputs[1] if len(n.outputs) > 1 else ""
    return not mask or (not graph.consumers(mask) and mask not in graph.output_names)


def drop_passthrough(graph: Graph) -> tuple[Graph, bool]:
    """Identity, and Dropout whose mask nobody reads, become wires."""
    mapping: dict[str, str] = {}
    outputs_kept: dict[str, str] = {}  # graph output name -> tensor to rename into it
    keep: list[Node] = []
    for n in graph.nodes:
        passthrough = _is_passthrough(graph, n)
        src, dst = mapping.get(n.inputs[0], n.inputs[0]), n.outputs[0]
        if passthrough and dst in graph.output_names:
            # The graph output keeps its name: rename the producer's tensor instead.
            if graph.producer(src) is None or src in graph.output_names or src in outputs_kept.values():
                keep.append(n)
                continue
            outputs_kept[dst] = src
            continue
        if passthrough:
            mapping[dst] = src
            continue
        keep.append(n)
    if not mapping and not outputs_kept:
        return graph, False
    back = {src: dst for dst, src in outputs_kept.items()}
    nodes = []
    for n in keep:
        n = _rename_inputs(n, mapping)
        n = _rename_inputs(n, back)
        if any(o in back for o in n.outputs):
            n = replace(n, outputs=tuple(back.get(o, o) for o in n.outputs))
        nodes.append(n)
    return _rebuild(graph, nodes, dict(graph.weights)), True


def fold_constants(graph: Graph) -> tuple[Graph, bool]:
    """Evaluate every node whose outputs are known at load time (all inputs constant, or
    shape arithmetic on static shapes: Shape, Size); its outputs become weights."""
    weights = dict(graph.weights)
    keep: list[Node] = []
    changed = False
    for n in graph.nodes:
        values = None
        if not any(o in graph.output_names for o in n.outputs):
            values = load_time_values(n, graph.tensors, weights, limit=None)
        if values is None:
            keep.append(n)
            continue
        for t, v in zip(n.outputs, values):
            if t:
                weights[t] = v
        changed = True
    return (_rebuild(graph, keep, weights), True) if changed else (graph, False)


def _bn_scale_shift(graph: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    params = bn.inputs[1:5]
    if len(params) != 4 or not all(graph.is_weight(t) for t in params):
        return None
    scale, bias, mean, var = (graph.weights[t].astype(np.float64) for t in params)
    s = scale / np.sqrt(var + bn.attr("epsilon", 1e-5))
    return s, bias - mean * s


def fold_batchnorm(graph: Graph) -> tuple[Graph, bool]:
    """Fold an inference BatchNormalization into the Conv, Gemm or Dense that alone feeds it."""
    weights = dict(graph.weights)
    replaced: dict[str, Node] = {}  # producer name -> rewritten producer
    dropped: set[str] = set()
    taken: set[str] = set()
    for bn in graph.nodes:
        if bn.op_type != "BatchNormalization" or len([o for o in bn.outputs if o]) != 1:
            continue
        prod = graph.producer(bn.inputs[0])
        if prod is None or prod.name in replaced or _sole_reader(graph, bn.inputs[0]) is not bn:
            continue
        folded = _bn_scale_shift(graph, bn)
        if folded is None:
            continue
        new = _fold_into(graph, prod, *folded, weights, taken)
        if new is None:
            continue
        replaced[prod.name] = replace(new, outputs=(bn.outputs[0],) + new.outputs[1:])
        dropped.add(bn.name)
    if not replaced:
        return graph, False
    nodes = [replaced.get(n.name, n) for n in graph.nodes if n.name not in dropped]
    return _rebuild(graph, nodes, weights), True


def _fold_into(graph: Graph, prod: Node, s: np.ndarray, shift: np.ndarray,
               weights: dict[str, np.ndarray], taken: set[str]) -> Node | None:
    """Rewrite `prod` so that it computes BN(prod(x)); None when it cannot be folded."""
    w_name = prod.inputs[1] if len(prod.inputs) > 1 else ""
    if not w_name or not graph.is_weight(w_name):
        return None
    w = graph.weights[w_name].astype(np.float64)
    b_name = prod.inputs[2] if len(prod.inputs) > 2 and prod.inputs[2] else ""
    if b_name and not graph.is_weight(b_name):
        return None
    out_rank = len(graph.tensors[prod.outputs[0]].shape)
    if prod.op_type == "Conv":
        channels = w.shape[0]
        new_w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        b = graph.weights[b_name].astype(np.float64) if b_name else np.zeros(channels)
        new_b = b * s + shift
    elif prod.op_type in ("Gemm", "Dense") and out_rank == 2:
        if prod.op_type == "Gemm" and prod.attr("transA", 0) not in (0, 1):
            return None
        alpha = prod.attr("alpha", 1.0) if prod.op_type == "Gemm" else 1.0
        beta = prod.attr("beta", 1.0) if prod.op_type == "Gemm" else 1.0
        trans_b = prod.op_type == "Gemm" and prod.attr("transB", 0)
        channels = w.shape[0] if trans_b else w.shape[1]
        new_w = alpha * (w * s[:, None] if trans_b else w * s[None, :])
        b = beta * graph.weights[b_name].astype(np.float64) if b_name else np.zeros(channels)
        try:
            new_b = np.broadcast_to(b, np.broadcast_shapes(b.shape, (channels,))) * s + shift
        except ValueError:
            return None
    else:
        return None
    if s.shape != (channels,):
        return None
    dtype = graph.weights[w_name].dtype
    nw = _unique_name(graph, f"{prod.name}.weight_bnfold", taken)
    nb = _unique_name(graph, f"{prod.name}.bias_bnfold", taken)
    weights[nw] = new_w.astype(dtype)
    weights[nb] = new_b.astype(dtype)
    attrs = dict(prod.attrs)
    if prod.op_type == "Gemm":
        attrs["alpha"], attrs["beta"] = 1.0, 1.0
    return replace(prod, inputs=(prod.inputs[0], nw, nb), attrs=attrs)


def fuse_dense(graph: Graph) -> tuple[Graph, bool]:
    """MatMul(x, W) followed by Add with a constant bias over the output features -> Dense."""
    fused: dict[str, Node] = {}
    dropped: set[str] = set()
    for mm in graph.nodes:
        if mm.op_type != "MatMul" or not graph.is_weight(mm.inputs[1]):
            continue
        w = graph.weights[mm.inputs[1]]
        add = _sole_reader(graph, mm.outputs[0])
        if w.ndim != 2 or add is None or add.op_type != "Add" or len(graph.tensors[mm.inputs[0]].shape) < 1:
            continue
        other = add.inputs[1] if add.inputs[0] == mm.outputs[0] else add.inputs[0]
        if other == mm.outputs[0] or not graph.is_weight(other):
            continue
        if graph.weights[other].shape not in ((w.shape[1],), (1, w.shape[1])):
            continue
        fused[mm.name] = Node(mm.name, "Dense", (mm.inputs[0], mm.inputs[1], other), (add.outputs[0],), {}, mm.opset)
        dropped.add(add.name)
    if not fused:
        return graph, False
    nodes = [fused.get(n.name, n) for n in graph.nodes if n.name not in dropped]
    return _rebuild(graph, nodes, dict(graph.weights)), True


def drop_dead(graph: Graph) -> tuple[Graph, bool]:
    """Remove nodes none of whose outputs reaches a graph output."""
    live = set(graph.output_names)
    keep: list[Node] = []
    for n in reversed(graph.nodes):
        if any(o in live for o in n.outputs if o):
            keep.append(n)
            live.update(t for t in n.inputs if t)
    if len(keep) == len(graph.nodes):
        return graph, False
    return _rebuild(graph, keep[::-1], dict(graph.weights)), True


DEFAULT_PASSES: tuple[Pass, ...] = (drop_passthrough, fold_constants, fold_batchnorm, fuse_dense, drop_dead)


def optimize(graph: Graph, passes: tuple[Pass, ...] = DEFAULT_PASSES, max_rounds: int = 20) -> Graph:
    """Apply `passes` in turn until a whole round changes nothing."""
    for _ in range(max_rounds):
        changed = False
        for p in passes:
            graph, c = p(graph)
            changed |= c
        if not changed:
            return graph
    return graph
