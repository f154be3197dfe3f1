"""Softmax, with both of ONNX's axis semantics."""

from __future__ import annotations

import numpy as np

from conveyor.errors import ModelError
from conveyor.ops.registry import OpDef, register


def _axis(node, rank):
    default = -1 if node.opset >= 13 else 1
    axis = node.attr("axis", default)
    if not -rank <= axis < max(rank, 1):
        raise ModelError(f"{node}: axis={axis} out of range for rank {rank}; accepted: [{-rank}, {rank - 1}]")
    return axis % max(rank, 1)


def _softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _run(node, x):
    a = x[0]
    axis = _axis(node, a.ndim)
    if node.opset >= 13:
        return (_softmax(a, axis).astype(a.dtype, copy=False),)
    # Before opset 13 the input is coerced to 2-D [prod(dims[:axis]), prod(dims[axis:])].
    flat = a.reshape(int(np.prod(a.shape[:axis], dtype=np.int64)), -1)
    return (_softmax(flat, 1).reshape(a.shape).astype(a.dtype, copy=False),)


def _infer(node, ins):
    _axis(node, len(ins[0].shape))
    return [(ins[0].shape, ins[0].dtype)]


register(OpDef("Softmax", infer=_infer, run=_run))
