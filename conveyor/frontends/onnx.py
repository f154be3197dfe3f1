"""ONNX -> Graph.

Reads a model with the `onnx` package, turns Constant nodes and initializers into
weights, gives every tensor a static shape (symbolic batch dimensions become 1 unless
`input_shapes` says otherwise), checks that every op is supported before anything
else, and by default runs the graph passes.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from conveyor import ops
from conveyor.errors import ModelError
from conveyor.frontends import qdq, qoperator
from conveyor.graph.ir import Graph
from conveyor.graph.passes import optimize as run_passes
from conveyor.graph.tensor import Node, Tensor

_DEFAULT_DOMAINS = ("", "ai.onnx")


def load(
    path: str | os.PathLike,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    optimize: bool = True,
    requant: str = "integer",
) -> Graph:
    """Load an `.onnx` file (or a Keras 3 `.keras` / `.h5` file) into a Graph.

    `requant` (quantized models with float scales, docs/numerics-quantized.md): "integer" (the
    default) runs the integer pipeline (int32 sums, Q31 multiplier + shift per Requant node) where
    the model allows it, else takes the nearest power of two; "nearest" keeps the float graph and
    takes the nearest power-of-two format per quantizer (for precisions of your own: the integer
    domain's graph holds stored integers, which only the model's own precision reads right)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    from conveyor.frontends.keras import KERAS_SUFFIXES, load_keras

    if path.endswith(KERAS_SUFFIXES):
        return load_keras(path, input_shapes=input_shapes, optimize=optimize)
    if not path.endswith(".onnx"):
        raise ModelError(f"{path}: not an ONNX or Keras file; conveyor.load reads .onnx, .keras and .h5 files "
                         "(use from_torch for PyTorch)")
    try:
        model = onnx.load(path)
    except Exception as e:
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    name = model.graph.name or os.path.splitext(os.path.basename(path))[0]
    return from_model(model, name=name, input_shapes=input_shapes, optimize=optimize, source=path, requant=requant)


def from_model(
    model: onnx.ModelProto,
    *,
    name: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    optimize: bool = True,
    source: str = "<model>",
    requant: str = "integer",
    constants: Mapping[str, np.ndarray] | None = None,
) -> Graph:
    """Convert an in-memory `onnx.ModelProto` into a Graph.

    `constants` pins graph inputs to fixed values (e.g. a Reshape's target shape fed as
    an input): they become weights, so that every shape is static.
    """
    found = None
    if qoperator.is_qoperator(model):  # onnxruntime's QLinear* ops: written as QDQ (frontends/qoperator.py)
        model = qoperator.to_qdq(model, source)
    if qdq.is_quantized(model):  # its quantizers become graph.model_precision (frontends/qdq.py)
        model, found = qdq.strip(model, source, requant)
    opset = _default_opset(model, source)
    g = model.graph
    _check_supported(g, source)
    weights: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    if constants:
        unknown = set(constants) - {vi.name for vi in g.input}
        if unknown:
            raise ModelError(f"{source}: constants name {sorted(unknown)}, which are not graph inputs")
        weights.update({k: np.asarray(v) for k, v in constants.items()})
    nodes: list[Node] = []
    used_names: set[str] = set()
    for i, pn in enumerate(g.node):
        node_name = _node_name(pn, i, used_names)
        attrs = {a.name: _attr_value(a, node_name, source) for a in pn.attribute}
        if pn.op_type == "Constant":
            weights[pn.output[0]] = _constant_value(attrs, node_name, source)
            continue
        nodes.append(Node(node_name, pn.op_type, tuple(pn.input), tuple(pn.output), attrs, opset))
    inputs = [
        _input_tensor(vi, input_shapes or {}, source)
        for vi in g.input
        if vi.name not in weights
    ]
    if input_shapes:
        unknown = set(input_shapes) - {t.name for t in inputs}
        if unknown:
            raise ModelError(f"{source}: input_shapes names {sorted(unknown)}; the model's inputs are {[t.name for t in inputs]}")
    graph = Graph.build(name or g.name or "model", nodes, inputs, [o.name for o in g.output], weights)
    if found is None:
        return run_passes(graph) if optimize else graph
    precision = qdq.attach(graph, found, source)  # by node name: the passes qdq keeps preserve them
    graph = run_passes(graph, qdq.PASSES) if optimize else graph
    return replace(graph, model_precision=precision)


def _default_opset(model: onnx.ModelProto, source: str) -> int:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            return int(imp.version)
    raise ModelError(f"{source}: the model imports no default-domain opset; it needs an ai.onnx opset_import")


def _check_supported(g: onnx.GraphProto, source: str) -> None:
    """One ModelError naming every unsupported op type, with one node of each, and whether
    that node reads only shapes and constants (it would fold at load once the input shapes
    are static: `input_shapes=`) or computes on data."""
    first: dict[tuple[str, str], tuple[str, int]] = {}
    count: dict[tuple[str, str], int] = {}
    for i, pn in enumerate(g.node):
        if pn.op_type != "Constant" and (pn.domain not in _DEFAULT_DOMAINS or not ops.is_supported(pn.op_type)):
            key = (pn.domain or "ai.onnx", pn.op_type)
            first.setdefault(key, (pn.name or f"#{i}", i))
            count[key] = count.get(key, 0) + 1
    if not first:
        return
    data = _data_dependence(g)
    parts = []
    for (d, op), (n, i) in first.items():
        reads = sorted({t for x in g.node[i].input if x for t in data.get(x, ())})
        fold = (f"reads the values of {reads}: computes on data" if reads else
                "reads only shapes and constants: would fold with static input_shapes= if conveyor had its kernel")
        where = "" if d == "ai.onnx" else f", domain {d}"
        parts.append(f"{op} x{count[(d, op)]} (e.g. node '{n}'{where}; {fold})")
    raise ModelError(
        f"{source}: {len(first)} unsupported op types: {'; '.join(parts)}; supported: {', '.join(ops.supported_ops())}"
    )


def _data_dependence(g: onnx.GraphProto) -> dict[str, set[str]]:
    """For each tensor, the graph inputs whose *values* (not just shapes) it depends on."""
    init = {t.name for t in g.initializer}
    dep: dict[str, set[str]] = {vi.name: {vi.name} for vi in g.input if vi.name not in init}
    for pn in g.node:
        reads = set() if pn.op_type in ("Shape", "Size") else {t for x in pn.input if x for t in dep.get(x, ())}
        for o in pn.output:
            dep[o] = reads
    return dep


def _node_name(pn: onnx.NodeProto, index: int, used: set[str]) -> str:
    base = pn.name or f"{pn.op_type.lower()}_{index}"
    name, k = base, 1
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def _attr_value(a: onnx.AttributeProto, node: str, source: str):
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        raise ModelError(f"{source}: node '{node}' has sub-graph attribute '{a.name}'; control flow is not supported")
    if a.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(a.t)
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode("utf-8") for s in v]
    return v


def _constant_value(attrs: dict, node: str, source: str) -> np.ndarray:
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise ModelError(
        f"{source}: Constant node '{node}' has attributes {sorted(attrs)}; "
        "supported: value, value_float(s), value_int(s)"
    )


def _input_tensor(vi: onnx.ValueInfoProto, input_shapes: Mapping[str, Sequence[int]], source: str) -> Tensor:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise ModelError(f"{source}: input '{vi.name}' is not a tensor; conveyor takes tensor inputs")
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    if vi.name in input_shapes:
        return Tensor(vi.name, tuple(int(d) for d in input_shapes[vi.name]), dtype)
    if not tt.HasField("shape"):
        raise ModelError(f"{source}: input '{vi.name}' has no shape; pass input_shapes={{'{vi.name}': [...]}}")
    dims = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif axis == 0:
            dims.append(1)  # a symbolic batch dimension: conveyor plans for batch 1
        else:
            raise ModelError(
                f"{source}: input '{vi.name}' dimension {axis} is symbolic ('{d.dim_param}'); "
                f"pass input_shapes={{'{vi.name}': [...]}} with static sizes"
            )
    return Tensor(vi.name, tuple(dims), dtype)
