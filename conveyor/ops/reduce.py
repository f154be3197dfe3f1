"""ReduceMean, ReduceSum, ReduceMax (the dynamo exporter writes global pooling as ReduceMean).

Fixed point: the max of grid values is a grid value and a sum of grid values is exact in
float64 (below 2^53 units); the mean divides that exact sum by the count, as
GlobalAveragePool does; each result is cast to the node's `result` format
(docs/numerics.md, "Reductions").
"""

from __future__ import annotations

import numpy as np

from conveyor.errors import ModelError
from conveyor.ops import fixed
from conveyor.ops.registry import OpDef, register, require_const

#: the opset from which each op takes its axes as an input instead of an attribute
_AXES_INPUT_FROM = {"ReduceMean": 18, "ReduceSum": 13, "ReduceMax": 18}
_NUMPY = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max}


def _axes(node, rank, value):
    axes = node.attr("axes") if node.opset < _AXES_INPUT_FROM[node.op_type] else value
    if axes is None or np.size(axes) == 0:
        return None if node.attr("noop_with_empty_axes", 0) else tuple(range(rank))
    out = []
    for a in np.asarray(axes).reshape(-1):
        a = int(a)
        if not -rank <= a < rank:
            raise ModelError(f"{node}: axes value {a} out of range for rank {rank}")
        out.append(a % rank)
    return tuple(sorted(set(out)))


def _reduce(node, x, axes):
    if axes is None:  # noop_with_empty_axes=1 and no axes: the identity
        return np.array(x)
    keep = bool(node.attr("keepdims", 1))
    if node.op_type == "ReduceMax" and x.size == 0:  # ONNX: the max of nothing is the lowest value
        low = -np.inf if x.dtype.kind == "f" else (False if x.dtype == bool else np.iinfo(x.dtype).min)
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes)
        return np.full(shape, low, dtype=x.dtype)
    if x.dtype.kind == "f":
        # float32 (and float16) in float32, as onnxruntime's float kernels; float64 (the
        # emulator's grid values, whose sums are exact) in float64
        work = np.float64 if x.dtype == np.float64 else np.float32
        if node.op_type == "ReduceMean" and work == np.float64 and x.size:
            # np.mean's own steps (np.add.reduce, then one division by the count), without its
            # Python-level wrappers: the same bits
            out = np.add.reduce(x, axis=axes, keepdims=keep)
            count = x.size // max(1, out.size)
            return np.true_divide(out, count, out=out) if isinstance(out, np.ndarray) else \
                np.asarray(out / count, dtype=x.dtype)
        out = _NUMPY[node.op_type](x.astype(work, copy=False), axis=axes, keepdims=keep)
        return np.asarray(out).astype(x.dtype, copy=False)
    return np.asarray(_NUMPY[node.op_type](x, axis=axes, keepdims=keep)).astype(x.dtype, copy=False)


def _infer(node, ins):
    rank = len(ins[0].shape)
    value = require_const(node, ins, 1, "axes") if node.opset >= _AXES_INPUT_FROM[node.op_type] else None
    axes = _axes(node, rank, value)
    if axes is None:
        return [(ins[0].shape, ins[0].dtype)]
    keep = bool(node.attr("keepdims", 1))
    shape = tuple(1 if i in axes else d for i, d in enumerate(ins[0].shape) if keep or i not in axes)
    return [(shape, ins[0].dtype)]


def _run(node, x):
    value = x[1] if len(x) > 1 else None
    return (_reduce(node, x[0], _axes(node, x[0].ndim, value)),)


def _macs(node, ins, outs):
    return 0  # additions and comparisons, no multipliers


for _op in _NUMPY:
    register(OpDef(_op, infer=_infer, run=_run, macs=_macs, run_fixed=fixed.exact_then_cast(_run)))
