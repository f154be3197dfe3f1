"""QONNX's BipolarQuant, the one quantizer that is not a cast (frontends/qdq.py reads the others
into formats): y = scale where x / scale >= 0, else -scale
(qonnx.custom_op.general.bipolar_quant.binary_quant). Its fixed kernel selects among exact
values and casts them to the node's result format, which the frontend sets from the scale."""

from __future__ import annotations

import numpy as np

from conveyor.ops import fixed
from conveyor.ops.registry import OpDef, register


def _infer(node, ins):
    return [(ins[0].shape, ins[0].dtype)]


def _run(node, args):
    x, scale = args[0], np.asarray(args[1], dtype=args[0].dtype)
    return (np.where(x / scale >= 0, scale, -scale).astype(x.dtype),)


register(OpDef("BipolarQuant", infer=_infer, run=_run, run_fixed=fixed.exact_then_cast(_run)))


# ---- Requant: float-scale QDQ as integer-only pipelines run it ---------------------------
#
# frontends/qdq.py writes a QDQ model whose scales are not powers of two (onnxruntime's
# quantize_static) in the integer domain: every quantized tensor holds q - zero_point, the
# weights their stored integers, Conv/MatMul/Gemm sum integers (exactly: int32 accumulator),
# and one Requant per activation quantizer maps the accumulator to the next integer:
#     q = clamp(round_half_even(acc * M0 / 2^shift) + zero_point, qmin, qmax)
# with M = in_scale / scale = M0 * 2^-shift, M0 an int32 in [2^30, 2^31) (Q31, as TFLite's
# QuantizeMultiplier and gemmlowp's fixed-point multipliers; Jacob et al., "Quantization and
# Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018,
# section 2.2). Ties round half to even, as onnxruntime's QuantizeLinear does. A Requant with
# no in_scale quantizes a float tensor (the graph input: the host's job) as onnxruntime does,
# in float32. `dequantize` = 1 on a graph output: it writes (q - zero_point) * scale in float32.


def _req_shape(node, x):
    """Per-axis values shaped to broadcast over x: along `axis`, or with `spatial` = 1 one per
    spatial position of an (N, C, *spatial) x (an AveragePool's per-window tap counts)."""
    axis = node.attr("axis", 1)
    spatial = node.attr("spatial", 0)
    def shaped(v, dtype):
        v = np.asarray(v, dtype)
        if v.size == 1:
            return v.reshape(())
        if spatial:
            return v.reshape((1, 1) + tuple(x.shape[2:]))
        shape = [1] * x.ndim
        shape[axis % x.ndim] = v.size
        return v.reshape(shape)
    return shaped


def _req_finish(node, q, shaped):
    zp = shaped(node.attr("zero_point"), np.float32)
    q = np.clip(q + zp, node.attr("qmin"), node.attr("qmax")) - zp
    if node.attr("dequantize", 0):
        return (q.astype(np.float32) * shaped(node.attr("scale"), np.float32)).astype(np.float32)
    return q.astype(np.float32)


def _req_run(node, args):
    """Float reference: onnxruntime's float32 arithmetic (each accumulator times its scale, summed
    for an Add, then divided by the output scale)."""
    x = np.asarray(args[0], np.float32)
    shaped = _req_shape(node, x)
    in_scale = node.attr("in_scale", [])
    if len(args) > 1:   # a sum of per-tensor inputs: dq(a) + dq(b)
        x = np.float32(0)
        for a, s in zip(args, in_scale):
            x = (x + (np.asarray(a, np.float32) * np.float32(s)).astype(np.float32)).astype(np.float32)
    elif len(in_scale):
        x = (x * shaped(in_scale, np.float32)).astype(np.float32)
    q = np.rint((x / shaped(node.attr("scale"), np.float32)).astype(np.float32))
    return (_req_finish(node, q, shaped).astype(args[0].dtype),)


def requantize(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """round_half_even(acc * m0 / 2^shift) in int64 (acc an int32 accumulator, m0 < 2^31)."""
    prod = acc.astype(np.int64) * m0.astype(np.int64)
    shift = shift.astype(np.int64)
    y = prod >> shift
    rem = prod - (y << shift)
    half = np.left_shift(np.int64(1), shift - 1)
    return y + ((rem > half) | ((rem == half) & (y % 2 == 1)))


def _req_fixed(node, args, fmts, prec, ctx):
    from conveyor.errors import PrecisionError

    x = np.asarray(args[0], np.float64)
    shaped = _req_shape(node, x)
    if not len(node.attr("in_scale", [])):   # the input quantizer: float32, as onnxruntime does it
        out = _req_run(node, [x.astype(np.float32)])[0].astype(np.float64)
        return (ctx.cast(node, out, prec.result, fixed.result_axis(out.ndim)),), (prec.result,)
    accs = [np.rint(np.asarray(a, np.float64)) for a in args]
    if any(a.size and (np.max(np.abs(a - np.asarray(v, np.float64))) > 0 or np.max(np.abs(a)) >= 2**31)
           for a, v in zip(accs, args)):
        raise PrecisionError(f"{node}: the accumulator is not an int32 integer; Requant reads the integer "
                             "domain frontends/qdq.py writes")
    m0, shift = node.attr("multiplier"), node.attr("shift")
    if len(args) > 1:   # a sum: each term on the finest shift's grid, one rounding
        n = max(shift)
        total = sum(a.astype(np.int64) * (np.int64(m) << np.int64(n - k)) for a, m, k in zip(accs, m0, shift))
        q = requantize(total, np.ones((), np.int64), np.full((), n, np.int64))
    else:
        q = requantize(accs[0].astype(np.int64), shaped(m0, np.int64), shaped(shift, np.int64))
    out = _req_finish(node, q.astype(np.float64), shaped).astype(np.float64)
    # the result format holds every value (frontends/qdq.py: q - z's integers, or on a graph
    # output every float32 (q - z) * scale): the cast only records statistics
    return (ctx.cast(node, out, prec.result, fixed.result_axis(out.ndim)),), (prec.result,)


def _req_infer(node, ins):
    return [(tuple(np.broadcast_shapes(*[i.shape for i in ins])), ins[0].dtype)]


register(OpDef("Requant", infer=_req_infer, run=_req_run, run_fixed=_req_fixed))


# ---- SumPool: an AveragePool's window sum in the integer domain ---------------------------
#
# frontends/qdq.py writes a quantized AveragePool as SumPool, the exact integer sum of each
# window (zero padding), and the division by the window's tap count k moves into the next
# Requant's multiplier (M = s_x / (k s_y); one per output position, `spatial` = 1, where the
# border windows count fewer taps), as GlobalAveragePool's sum (ReduceSum) does. Attributes:
# kernel_shape, strides, pads (explicit), ceil_mode, as AveragePool's.


def _sum_geometry(node, shape):
    from conveyor.errors import ModelError
    from conveyor.ops.conv import int_list, window_geometry

    kernel = int_list(node, "kernel_shape")
    if kernel is None or len(shape) != len(kernel) + 2:
        raise ModelError(f"{node}: SumPool needs kernel_shape over the input's spatial axes, got {kernel} "
                         f"for input shape {tuple(shape)}")
    return window_geometry(node, tuple(shape[2:]), kernel, ceil_mode=bool(node.attr("ceil_mode", 0)),
                           dilations=[1] * len(kernel))


def _sum_infer(node, ins):
    x = ins[0]
    return [(tuple(int(d) for d in x.shape[:2]) + _sum_geometry(node, x.shape).out, x.dtype)]


def _sum_run(node, args):
    """The sum of every window's taps, padding 0 (float32 sums of the integers below 2^24 are exact)."""
    from conveyor.ops.conv import pad_for_windows
    from conveyor.ops.pool import _taps

    x = args[0]
    geo = _sum_geometry(node, x.shape)
    xp = pad_for_windows(x, geo, 0)
    total = None
    for _, sl in _taps(geo):
        total = xp[sl].copy() if total is None else total + xp[sl]
    return (total.astype(x.dtype, copy=False),)


def _sum_macs(node, ins, outs):
    # one accumulate per window tap, as AveragePool counts them (ops/pool.py)
    return int(np.prod(outs[0][0], dtype=np.int64)) * int(np.prod(node.attr("kernel_shape")))


register(OpDef("SumPool", infer=_sum_infer, run=_sum_run, macs=_sum_macs,
               run_fixed=fixed.exact_then_cast(_sum_run)))
