"""Elementwise math the exporters write for modern nets: Sqrt, Reciprocal, Exp, Erf, Pow
(LayerNorm and GELU written out), HardSigmoid, HardSwish (MobileNetV3), Gelu (opset 20).

Float reference kernels only for now: none has a fixed-point kernel yet, so a graph that
keeps one at run time is refused under a precision with a PrecisionError naming the op
(`conveyor.graph.quantized`). On constants they fold at load like any other op.
"""

from __future__ import annotations

import math

import numpy as np

from conveyor.errors import ModelError
from conveyor.ops.registry import OpDef, attr_error, no_fixed_kernel, register

_erf = np.frompyfunc(math.erf, 1, 1)


def _same(node, ins):
    return [(ins[0].shape, ins[0].dtype)]


def _f64(fn):
    """Compute in float64 and return the input's dtype (float32 results then round once)."""
    def run(node, x):
        return (np.asarray(fn(node, np.asarray(x[0], dtype=np.float64))).astype(x[0].dtype, copy=False),)

    return run


def _hard_sigmoid(node, x):
    return np.clip(node.attr("alpha", 0.2) * x + node.attr("beta", 0.5), 0.0, 1.0)


def _gelu(node, x):
    if node.attr("approximate", "none") == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def _gelu_check(node):
    if node.attr("approximate", "none") not in ("none", "tanh"):
        raise attr_error(node, "approximate", node.attr("approximate"), "'none', 'tanh'")


_UNARY = {
    "Sqrt": lambda node, x: np.sqrt(x),
    "Reciprocal": lambda node, x: 1.0 / x,
    "Exp": lambda node, x: np.exp(x),
    "Erf": lambda node, x: _erf(x).astype(np.float64),
    "HardSigmoid": _hard_sigmoid,
    # HardSwish is x * HardSigmoid(x) with alpha = 1/6, beta = 0.5 (ONNX)
    "HardSwish": lambda node, x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "Gelu": _gelu,
}

for _op, _fn in _UNARY.items():
    register(OpDef(_op, infer=_same, run=_f64(_fn), run_fixed=no_fixed_kernel("float reference only"),
                   **({"check": _gelu_check} if _op == "Gelu" else {})))


def _pow_infer(node, ins):
    try:
        shape = np.broadcast_shapes(ins[0].shape, ins[1].shape)
    except ValueError:
        raise ModelError(f"{node}: input shapes {ins[0].shape} and {ins[1].shape} do not broadcast") from None
    return [(tuple(int(d) for d in shape), ins[0].dtype)]


def _pow_run(node, x):
    a, b = x
    if a.dtype.kind == "f":
        return (np.power(a.astype(np.float64), np.asarray(b, dtype=np.float64)).astype(a.dtype),)
    return (np.power(a, b.astype(a.dtype)),)


register(OpDef("Pow", infer=_pow_infer, run=_pow_run, run_fixed=no_fixed_kernel("float reference only")))
