"""Elementwise arithmetic and activations: Add, Sub, Mul, Div, Relu, LeakyRelu,
Sigmoid, Tanh, Clip. Binary ops broadcast numpy-style (ONNX multidirectional)."""

from __future__ import annotations

import numpy as np

from conveyor.errors import ModelError, PrecisionError
from conveyor.numerics.cast import cast, frac_bits
from conveyor.ops import fixed, lut
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

# ---- Div: by a constant only, as a product with its reciprocal (docs/numerics.md) ---------

def _div_fixed_params(node, consts, prec):
    """The divisor B must be a constant: its reciprocal 1.0 / B (double) is quantized once to
    the node's weight format, and A / B is computed as (result_t)(A * recip)."""
    if len(consts) < 2 or consts[1] is None or (consts[0] is not None):
        raise PrecisionError(
            f"{node}: only division of a tensor by a constant (an initializer) has a bit-accurate kernel; "
            "accepted: Div(A, B) with B constant, computed as A * (weight_t)(1 / B)")
    b = consts[1]
    if np.any(b == 0):
        raise PrecisionError(f"{node}: the constant divisor holds 0; accepted: a divisor without zeros")
    return {1: (cast(1.0 / b, prec.weight, -1), prec.weight)}


def _div_fixed(node, args, fmts, prec, ctx):
    a, recip = args[0], args[1]
    _require_exact_product(node, a, recip, fmts[0], fmts[1])
    y = a * recip
    y = ctx.cast(node, np.asarray(y, np.float64), prec.result, fixed.result_axis(y.ndim))
    return (y,), (prec.result,)


def _require_exact_product(node, a, b, fa, fb) -> None:
    fr = [frac_bits(f) for f in (fa, fb)]
    if None in fr:
        return  # block formats: few significant bits, products exact in float64
    # the Emulator's values lie inside their formats (each is a cast's result, the parameters
    # quantized to theirs): when the formats' largest values give an exact product, so do the
    # data, without a scan of them (a Div of 4,096 values: 14 -> 8 us)
    if (max(-fa.min_value, fa.max_value) * max(-fb.min_value, fb.max_value)) * 2.0 ** (fr[0] + fr[1]) < 2.0 ** 53:
        return
    amax = float(np.max(np.abs(a))) if np.size(a) else 0.0
    bmax = float(np.max(np.abs(b))) if np.size(b) else 0.0
    lut.require_exact(node, amax * bmax, fr[0] + fr[1], "products")


for _op, _fn in _BINARY.items():
    _run = (lambda node, x, _fn=_fn: (_fn(x[0], x[1]),))
    register(OpDef(
        _op,
        infer=_broadcast_infer,
        run=_run,
        macs=_elementwise_macs,
        # Add, Sub, Mul of grid values are exact in float64; Div multiplies by a reciprocal.
        run_fixed=_div_fixed if _op == "Div" else fixed.exact_then_cast(_run),
        fixed_params=_div_fixed_params if _op == "Div" else None,
    ))


def _same_infer(node, ins):
    return [(ins[0].shape, ins[0].dtype)]


def _sigmoid(x):
    # e = exp(-|x|) never overflows: 1 / (1 + e) for x >= 0, e * (1 / (1 + e)) below, the factor
    # e (or 1) being exp(min(x, 0)). Whole-array passes in place: boolean-mask indexing (and
    # np.where) cost efficientnet_b0 39 ms at 224x224, this 3.
    r = np.exp(-np.abs(x))
    r += np.ones((), r.dtype)
    np.reciprocal(r, out=r)
    r *= np.exp(np.minimum(x, np.zeros((), x.dtype)))
    return r


def _clip_bounds(node, x):
    lo, hi = None, None
    if node.opset < 11:
        lo, hi = node.attr("min"), node.attr("max")
    else:
        if len(x) > 1 and x[1] is not None:
            lo = x[1]
        if len(x) > 2 and x[2] is not None:
            hi = x[2]
    dt = x[0].dtype
    return (None if lo is None else np.asarray(lo, dtype=dt)), (None if hi is None else np.asarray(hi, dtype=dt))


def _clip_exact(node, x):
    """min(max(x, lo), hi), the fixed-point path's (and ONNX's) definition."""
    lo, hi = _clip_bounds(node, x)
    y = x[0]
    if lo is not None:
        y = np.maximum(y, lo)
    if hi is not None:
        y = np.minimum(y, hi)
    return (np.asarray(y, dtype=x[0].dtype),)


def _clip(node, x):
    """The float kernel: one np.clip pass where lo <= hi (the same values; a -0.0 input may stay
    -0.0), else `_clip_exact`."""
    lo, hi = _clip_bounds(node, x)
    if lo is None or hi is None or not bool(np.all(lo <= hi)):
        return _clip_exact(node, x)
    return (np.clip(x[0], lo, hi),)


_UNARY = {
    "Relu": lambda node, x: (np.maximum(x[0], np.zeros((), x[0].dtype)),),
    "LeakyRelu": lambda node, x: (
        np.where(x[0] >= 0, x[0], x[0] * np.asarray(node.attr("alpha", 0.01), x[0].dtype)).astype(x[0].dtype),
    ),
    "Sigmoid": lambda node, x: (_sigmoid(x[0]),),
    "Tanh": lambda node, x: (np.tanh(x[0]),),
    "Clip": _clip,
}

# ---- fixed-point kernels of LeakyRelu, Sigmoid, Tanh (docs/numerics.md) ---------------------

def _leaky_relu_fixed(node, args, fmts, prec, ctx):
    """hls4ml's leaky_relu: x > 0 ? x : alpha * x, alpha held in the weight format (param_t);
    the product is exact, then one cast to result."""
    x = args[0]
    alpha = cast(np.asarray(float(node.attr("alpha", 0.01)), np.float64), prec.weight, -1)
    _require_exact_product(node, x, alpha, fmts[0], prec.weight)
    y = np.where(x > 0, x, x * alpha)
    y = ctx.cast(node, y, prec.result, fixed.result_axis(y.ndim))
    return (y,), (prec.result,)


def _range_lut_fixed(name: str, make_table):
    """hls4ml's sigmoid / tanh: res = (res_T) table[index(data)] (lut.RangeTable)."""

    def run_fixed(node, args, fmts, prec, ctx):
        fin = lut.require_fixed(node, fmts[0])
        table = make_table(*lut.range_spec(node, prec, name))
        v = table.lookup(args[0], fin.frac_bits)  # a fresh array (fancy indexing)
        if not getattr(ctx, "observe", False) and fixed._inside([table.fmt], prec.result):
            return (v,), (prec.result,)  # the table's entries are values of result: the cast is the identity
        y = ctx.cast(node, v, prec.result, fixed.result_axis(v.ndim), inplace=True)
        return (y,), (prec.result,)

    return run_fixed


# Relu and Clip select among exact values; the others go through lookup tables or one product.
_FIXED_UNARY = {
    "Relu": fixed.exact_then_cast(_UNARY["Relu"], selects=True),
    "Clip": fixed.exact_then_cast(_clip_exact),
    "LeakyRelu": _leaky_relu_fixed,
    "Sigmoid": _range_lut_fixed("sigmoid", lut.sigmoid_table),
    "Tanh": _range_lut_fixed("tanh", lut.tanh_table),
}
for _op, _fn in _UNARY.items():
    register(OpDef(_op, infer=_same_infer, run=_fn, run_fixed=_FIXED_UNARY[_op]))
