"""Elementwise arithmetic and activations: Add, Sub, Mul, Div, Relu, LeakyRelu,
Sigmoid, Tanh, Clip. Binary ops broadcast numpy-style (ONNX multidirectional)."""

from __future__ import annotations

import numpy as np

from conveyor.errors import ModelError
from conveyor.ops import fixed
from conveyor.ops.registry import OpDef, register


def _broadcast_infer(node, ins):
    a, b = ins[0], ins[1]
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ModelError(
            f"{node} : input shapes {a.shape} and {b.shape} do not broadcast"
        ) from None
    return [(tuple(int(d) for d in shape), a.dtype)]


def _elementwise_macs(node, ins, outs):
    # One arithmetic operation per output element; counted as a MAC-equivalent
    # only for Mul (scale layers), since Add/Sub/Div do not use multipliers.
    if node.op_type == "Mul":
        return int(np.prod(outs[0][0], dtype=np.int64))
    return 0


def _div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        # ONNX integer Div truncates toward zero (C semantics), unlike numpy's floor.
        return (np.trunc(a.astype(np.float64) / b.astype(np.float64))).astype(a.dtype)
    return (a / b).astype(a.dtype)


_BINARY = {
    "Add": lambda a, b: (a + b).astype(a.dtype, copy=False),
    "Sub": lambda a, b: (a - b).astype(a.dtype, copy=False),
    "Mul": lambda a, b: (a * b).astype(a.dtype, copy=False),
    "Div": _div,
}

for _op, _fn in _BINARY.items():
    _run = (lambda node, x, _fn=_fn: (_fn(x[0], x[1]),))
    register(OpDef(
        _op,
        infer=_broadcast_infer,
        run=_run,
        macs=_elementwise_macs,
        # Add, Sub, Mul of grid values are exact in float64; Div is not (no kernel yet).
        run_fixed=None if _op == "Div" else fixed.exact_then_cast(_run),
    ))


def _same_infer(node, ins):
    return [(ins[0].shape, ins[0].dtype)]


def _sigmoid(x):
    # Split by sign so that exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _clip(node, x):
    lo, hi = None, None
    if node.opset < 11:
        lo, hi = node.attr("min"), node.attr("max")
    else:
        if len(x) > 1 and x[1] is not None:
            lo = x[1]
        if len(x) > 2 and x[2] is not None:
            hi = x[2]
    y = x[0]
    if lo is not None:
        y = np.maximum(y, np.asarray(lo, dtype=y.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi, dtype=y.dtype))
    return (np.asarray(y, dtype=x[0].dtype),)


_UNARY = {
    "Relu": lambda node, x: (np.maximum(x[0], np.zeros((), x[0].dtype)),),
    "LeakyRelu": lambda node, x: (
        np.where(x[0] >= 0, x[0], x[0] * np.asarray(node.attr("alpha", 0.01), x[0].dtype)).astype(x[0].dtype),
    ),
    "Sigmoid": lambda node, x: (_sigmoid(x[0]),),
    "Tanh": lambda node, x: (np.tanh(x[0]),),
    "Clip": _clip,
}

# Relu and Clip select among exact values; the others need lookup tables (no kernel yet).
_EXACT_UNARY = {"Relu", "Clip"}
for _op, _fn in _UNARY.items():
    register(OpDef(_op, infer=_same_infer, run=_fn,
                   run_fixed=fixed.exact_then_cast(_fn) if _op in _EXACT_UNARY else None))
