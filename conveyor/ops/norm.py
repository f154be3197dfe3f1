"""Normalisation: ONNX BatchNormalization (inference only; opsets 1, 6, 7, 9, 14, 15)
and LRN (opsets 1, 13). Bit-accurate kernels: hls4ml's `normalize` for an unfolded
BatchNormalization, and conveyor's own table-based LRN (docs/numerics.md)."""

from __future__ import annotations

import math

import numpy as np

from conveyor.errors import ModelError, PrecisionError
from conveyor.numerics.cast import cast, frac_bits, is_fixed
from conveyor.numerics.fixed import FixedType
from conveyor.ops import lut
from conveyor.ops.fixed import result_axis
from conveyor.ops.registry import OpDef, attr_error, register

# ---- BatchNormalization --------------------------------------------------------------


def _bn_check(node) -> None:
    extra = [o for o in node.outputs[1:] if o]
    if extra:
        raise ModelError(
            f"{node}: outputs {extra} are training-mode statistics; conveyor implements "
            "inference only; accepted: the single output Y"
        )
    if node.opset >= 14 and node.attr("training_mode", 0) != 0:
        raise attr_error(node, "training_mode", node.attr("training_mode"), "0 (inference only)")
    if node.opset < 7 and node.attr("is_test", 0) != 1:
        # Before opset 7, is_test=0 (the default) means normalising with batch statistics.
        raise attr_error(node, "is_test", node.attr("is_test", 0), "1 (inference only)")
    if node.opset < 9 and node.attr("spatial", 1) != 1:
        raise attr_error(node, "spatial", node.attr("spatial"), "1 (per-channel statistics)")


def _bn_infer(node, ins):
    x = ins[0]
    if len(x.shape) < 2:
        raise ModelError(f"{node}: input X must be (N, C, ...), got shape {tuple(x.shape)}")
    c = x.shape[1]
    names = ("scale", "B", "mean", "var")
    for slot, name in enumerate(names, start=1):
        if slot >= len(ins) or ins[slot] is None:
            raise ModelError(f"{node}: input {slot} ({name}) is required")
        if tuple(ins[slot].shape) != (c,):
            raise ModelError(f"{node}: input {slot} ({name}) must have shape ({c},) for X {tuple(x.shape)}, "
                             f"got {tuple(ins[slot].shape)}")
    return [(tuple(x.shape), x.dtype)]


def bn_coefficients(node, scale, bias, mean, var):
    """(a, b) per channel such that Y = a * X + b (computed in float64)."""
    eps = float(node.attr("epsilon", 1e-5))
    a = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    b = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * a
    return a, b


def _bn_run(node, arrays):
    x = arrays[0]
    a, b = bn_coefficients(node, *arrays[1:5])
    work = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = np.asarray(x, work) * a.astype(work).reshape(shape) + b.astype(work).reshape(shape)
    return (y.astype(x.dtype, copy=False),)


def _bn_macs(node, ins, outs):
    # One multiply-add per element (Y = a * X + b); usually folded into the previous conv.
    return int(np.prod(ins[0].shape, dtype=np.int64))


def _bn_fixed_params(node, consts, prec):
    """hls4ml's BatchNormalization: scale = gamma / sqrt(var + eps) and bias = beta - mean * scale
    in float64, then scale in the weight format, bias in the bias format (slots 1 and 2)."""
    if any(c is None for c in consts[1:5]):
        raise PrecisionError(f"{node}: scale, B, mean and var must be constants for a bit-accurate kernel")
    a, b = bn_coefficients(node, *consts[1:5])
    return {1: (cast(a, prec.weight, -1), prec.weight), 2: (cast(b, prec.bias, -1), prec.bias)}


def _bn_fixed(node, args, fmts, prec, ctx):
    """nnet::normalize: res = (res_T)(data * scale + bias), product and sum exact (no accumulator).

    Exactness is first proved from x's format (the Emulator's values lie inside it) and the
    parameters' cached ranges, and only when that falls short from a scan of x. A following
    Relu the Emulator fuses (`ctx.relu_next`, its cast the identity) is applied in the result
    cast; the same values the Relu's kernel computes from this result."""
    x, a, b = args[0], args[1], args[2]
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    grids = [frac_bits(f) for f in fmts[:3]]
    if None not in grids:
        frac = max(grids[0] + grids[1], grids[2])
        rng = getattr(ctx, "value_range", None) or (lambda v: (float(np.min(v)), float(np.max(v))))
        a_lo, a_hi = rng(a) if a.size else (0.0, 0.0)
        b_lo, b_hi = rng(b) if b.size else (0.0, 0.0)
        amax, bmax = max(-a_lo, a_hi), max(-b_lo, b_hi)
        fx = fmts[0]
        bound = max(-fx.min_value, fx.max_value) * amax + bmax if is_fixed(fx) else math.inf
        if bound * 2.0 ** frac >= 2.0 ** 53:  # the format's range is too wide a proof: scan x
            bound = float(np.max(np.abs(x), initial=0.0)) * amax + bmax
        lut.require_exact(node, bound, frac, "data * scale + bias")
    y = _affine_fixed(x, a, b, shape)
    relu = not getattr(ctx, "observe", False) and getattr(ctx, "relu_next", False)
    y = ctx.cast(node, y, prec.result, result_axis(y.ndim), inplace=True, **({"relu": True} if relu else {}))
    if relu:
        ctx.relu_done = True
    return (y,), (prec.result,)


def _affine_fixed(x, a, b, shape):
    """x * a + b per channel (axis 1): one compiled pass (`act_float._affine`) over a
    C-contiguous float64 x, else np.multiply then +=; the same values (both roundings exact)."""
    from conveyor.ops import act_float

    if (act_float._affine is not None and x.dtype == np.float64 and x.ndim >= 2 and x.flags.c_contiguous
            and a.dtype == np.float64 and b.dtype == np.float64 and a.size == b.size == x.shape[1]):
        y = np.empty_like(x)
        n, c = x.shape[0], x.shape[1]
        act_float._affine(x.reshape(n, c, -1), np.ascontiguousarray(a).reshape(-1),
                          np.ascontiguousarray(b).reshape(-1), y.reshape(n, c, -1))
        return y
    y = np.multiply(x, a.reshape(shape))
    y += b.reshape(shape)
    return y


_bn_fixed.fuses_relu = True  # the Emulator may ask it to apply the Relu after it (`_relu_after`)


def _bn_prepare(node, ins):
    """`OpDef.prepare`: with constant parameters, (a, b) computed once in the work dtype; a run
    is then one product and one in-place sum, the values of `_bn_run`."""
    x = ins[0]
    if any(v is None or v.value is None for v in ins[1:5]) or x.dtype not in (np.float32, np.float64):
        return None
    from conveyor.ops import act_float

    a, b = bn_coefficients(node, *(v.value for v in ins[1:5]))
    # np.multiply then += (compiled in one pass where it can be: conveyor.ops.act_float)
    affine, affine_into = act_float.channel_affine(a.astype(x.dtype).reshape(-1), b.astype(x.dtype).reshape(-1))

    def run(arrays):
        return (affine(arrays[0]),)

    # the same values written into x of the work dtype (graph.float_plan owns it)
    run.into = affine_into
    return run


register(OpDef("BatchNormalization", infer=_bn_infer, run=_bn_run, macs=_bn_macs, check=_bn_check,
               param_slots=(1, 2, 3, 4), run_fixed=_bn_fixed, fixed_params=_bn_fixed_params,
               prepare=_bn_prepare))


# ---- LRN -----------------------------------------------------------------------------


def _lrn_check(node) -> None:
    size = node.attr("size")
    if size is None:
        raise ModelError(f"{node}: attribute size is required; accepted: a positive int")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise attr_error(node, "size", size, "a positive int")


def _lrn_infer(node, ins):
    x = ins[0]
    if len(x.shape) < 3:
        raise ModelError(f"{node}: input X must be (N, C, D1, ...), got shape {tuple(x.shape)}")
    return [(tuple(x.shape), x.dtype)]


def _lrn_run(node, arrays):
    x = arrays[0]
    size = int(node.attr("size"))
    alpha = float(node.attr("alpha", 1e-4))
    beta = float(node.attr("beta", 0.75))
    bias = float(node.attr("bias", 1.0))
    work = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    xw = np.asarray(x, work)
    sq = xw * xw
    # Channel window [c - floor((size-1)/2), c + ceil((size-1)/2)], clipped to [0, C).
    before, after = (size - 1) // 2, math.ceil((size - 1) / 2)
    c = x.shape[1]
    padded = np.zeros((x.shape[0], c + before + after) + x.shape[2:], dtype=work)
    padded[:, before:before + c] = sq
    square_sum = padded[:, 0:c].copy()
    for j in range(1, size):
        square_sum += padded[:, j:j + c]
    scale = np.asarray(bias, work) + np.asarray(alpha / size, work) * square_sum
    y = xw / np.power(scale, np.asarray(beta, work))
    return (y.astype(x.dtype, copy=False),)


def _lrn_macs(node, ins, outs):
    # `size` multiply-adds per element for the windowed sum of squares; the power and
    # the divide are not counted.
    return int(np.prod(ins[0].shape, dtype=np.int64)) * int(node.attr("size"))


def _lrn_fixed(node, args, fmts, prec, ctx):
    """conveyor's LRN (hls4ml has none): the windowed square sum in `accum` (exact when 'auto';
    an explicit accum_t adds the window's squares one by one, each sum assigned to accum_t), a
    lookup of (bias + alpha / size * sum)^-beta addressed like the sigmoid table
    (tables.lrn), then res = (res_T)(data * table[index])."""
    x = args[0]
    fin = lut.require_fixed(node, fmts[0])
    n, lo, hi, tfmt = lut.range_spec(node, prec, "lrn")
    size = int(node.attr("size"))
    alpha = float(node.attr("alpha", 1e-4))
    beta = float(node.attr("beta", 0.75))
    bias = float(node.attr("bias", 1.0))
    table = lut.lrn_table(n, lo, hi, tfmt, bias, alpha / size, beta)
    xmax = float(np.max(np.abs(x), initial=0.0))
    lut.require_exact(node, size * xmax * xmax, 2 * fin.frac_bits, "square sums")
    sq = x * x
    before, after = (size - 1) // 2, math.ceil((size - 1) / 2)
    c = x.shape[1]
    padded = np.zeros((x.shape[0], c + before + after) + x.shape[2:], dtype=np.float64)
    padded[:, before:before + c] = sq
    acc = prec.accum
    if acc is None:
        total = padded[:, 0:c].copy()
        for j in range(1, size):
            total += padded[:, j:j + c]
        sum_frac = 2 * fin.frac_bits
    else:
        acc = lut.fixed_format(acc, f"{node}: accum")
        total = np.zeros_like(x)
        for j in range(size):  # accum_t sum = 0; sum += x[k] * x[k] (adding 0 outside the channels is a no-op)
            total = acc.quantize(total + padded[:, j:j + c])
        sum_frac = acc.frac_bits
    t = table.lookup(total, sum_frac)
    if fin.width + tfmt.width > 53:
        raise PrecisionError(f"{node}: the product of {fin} and the table's {tfmt} exceeds 53 bits")
    y = ctx.cast(node, x * t, prec.result, result_axis(x.ndim))
    return (y,), (prec.result,)


def lrn_sum_format(fin: FixedType, size: int) -> FixedType:
    """The exact type of the window's square sum ('auto' accum): x*x widened by ceil(log2 size) bits."""
    g = max(size - 1, 0).bit_length()
    return FixedType(2 * fin.width + g, 2 * fin.integer + g, fin.signed)


register(OpDef("LRN", infer=_lrn_infer, run=_lrn_run, macs=_lrn_macs, check=_lrn_check, run_fixed=_lrn_fixed))
