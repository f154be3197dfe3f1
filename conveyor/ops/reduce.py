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


def trailing_mean(shape, dtype, start: int, out_shape, mean: bool = True):
    """The float kernel of a sum (or mean) of a float32/float64 array over its axes from `start`
    on (global pooling): one matrix-vector product with ones, then one division by the count,
    a float sum in the input's dtype as np.mean's (in another order). np.mean costs 10-35 us
    per call at efficientnet_b0's 64 px shapes ((1, 1152, 2, 2): 34 us), this 2-3."""
    m = int(np.prod(shape[:start], dtype=np.int64))
    k = int(np.prod(shape[start:], dtype=np.int64))
    ones = np.ones(k, dtype)
    count = np.asarray(k, dtype)

    def run(arrays):
        y = arrays[0].reshape(m, k) @ ones
        if mean:
            y /= count
        return (y.reshape(out_shape),)
    return run


def _prepare(node, ins):
    """`OpDef.prepare` for ReduceMean and ReduceSum over trailing axes of a float input."""
    x = ins[0]
    if node.op_type == "ReduceMax" or x.dtype not in (np.float32, np.float64) or 0 in x.shape:
        return None
    value = ins[1].value if len(ins) > 1 and ins[1] is not None else None
    if node.opset >= _AXES_INPUT_FROM[node.op_type] and len(ins) > 1 and ins[1] is not None and value is None:
        return None
    axes = _axes(node, len(x.shape), value)
    if not axes or axes != tuple(range(axes[0], len(x.shape))):
        return None
    (out_shape, _), = _infer(node, ins)
    return trailing_mean(x.shape, x.dtype, axes[0], out_shape, node.op_type == "ReduceMean")


def _macs(node, ins, outs):
    return 0  # additions and comparisons, no multipliers


for _op in _NUMPY:
    register(OpDef(_op, infer=_infer, run=_run, macs=_macs, run_fixed=fixed.exact_then_cast(_run),
                   prepare=_prepare))
