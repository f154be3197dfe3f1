"""LayerNormalization (opset 17): normalise over the axes from `axis` on, then scale and shift.

Float reference kernel (float64 inside) and the bit-accurate kernel of hls4ml 1.3.0's
`nnet::layernorm_1d` (nnet_layernorm.h): mean and variance in `accum_t` (the node's `accum`),
1/sqrt(variance) from hls4ml's inverse-square-root table (`tables.layernorm`), then
`res = data_diff * inv * scale + bias` (docs/numerics.md, "LayerNormalization").
"""

from __future__ import annotations

import math

import numpy as np

from conveyor.errors import ModelError, PrecisionError
from conveyor.numerics.fixed import FixedType
from conveyor.ops import fixed, lut
from conveyor.ops.registry import OpDef, register


def _axis(node, rank):
    axis = node.attr("axis", -1)
    if not -rank <= axis < rank:
        raise ModelError(f"{node}: axis={axis} out of range for rank {rank}")
    return axis % rank


def _infer(node, ins):
    rank = len(ins[0].shape)
    norm = ins[0].shape[_axis(node, rank):]
    stat = tuple(ins[0].shape[:_axis(node, rank)]) + (1,) * (rank - _axis(node, rank))
    for slot, what in ((1, "scale"), (2, "bias")):
        if slot < len(ins) and ins[slot] is not None:
            try:
                np.broadcast_shapes(ins[slot].shape, norm)
            except ValueError:
                raise ModelError(f"{node}: {what} shape {ins[slot].shape} does not broadcast to {norm}") from None
    return [(ins[0].shape, ins[0].dtype), (stat, np.dtype(np.float32)), (stat, np.dtype(np.float32))]


def _run(node, x):
    # float32 inputs compute in float32 (onnxruntime's float kernel), float64 ones in float64
    work = np.float64 if np.asarray(x[0]).dtype == np.float64 else np.float32
    data = np.asarray(x[0], dtype=work)
    axes = tuple(range(_axis(node, data.ndim), data.ndim))
    mean = data.mean(axis=axes, keepdims=True)
    y = data - mean
    var = np.mean(np.square(y), axis=axes, keepdims=True)
    inv = np.sqrt(var + work(node.attr("epsilon", 1e-5)))
    np.reciprocal(inv, out=inv)
    y *= inv  # in place on the fresh difference: the same values
    if len(x) > 1 and x[1] is not None:
        y *= np.asarray(x[1], work)
    if len(x) > 2 and x[2] is not None:
        y += np.asarray(x[2], work)
    return y.astype(x[0].dtype, copy=False), mean.astype(np.float32), inv.astype(np.float32)


def _macs(node, ins, outs):
    # per element: the squared difference, the normalising multiply and the scale (hls4ml's layernorm_1d)
    return 3 * int(np.prod(ins[0].shape, dtype=np.int64))


# ---- bit-accurate kernel: hls4ml's layernorm_1d ------------------------------------------

def epsilon_power_of_10(node) -> int:
    """hls4ml's converters: epsilon_power_of_10 = -round(log10(epsilon)), refused unless > 0.
    The table starts at 10^-p (hls4ml adds no epsilon to the variance)."""
    eps = float(node.attr("epsilon", 1e-5))
    if eps <= 0:
        raise PrecisionError(f"{node}: epsilon {eps:g} must be positive (hls4ml's table starts at epsilon)")
    p = -round(math.log10(eps))
    if p <= 0:
        raise PrecisionError(f"{node}: epsilon {eps:g} must be below 0.1 (hls4ml: epsilon_power_of_10 = "
                             f"-round(log10(epsilon)) = {p} must be positive)")
    return p


def auto_accum(fx: FixedType, dim: int) -> FixedType:
    """The `accum: auto` type of a LayerNorm (hls4ml has no 'auto'): integer bits for the sum
    of `dim` squared differences (|x - mean| < 2^I), twice the input's fraction bits (squares of
    the input grid exact), AP_RND_CONV and AP_SAT as hls4ml's default LayerNorm accum_t."""
    lg = max(1, math.ceil(math.log2(max(dim, 2))))
    i = max(2 * fx.integer, fx.integer) + lg + 1   # the sum of the inputs too, for I < 0
    f = 2 * max(fx.frac_bits, 0)
    return FixedType(i + f, i, True, "RND_CONV", "SAT")


def _acc_sum(cols: np.ndarray, acc: FixedType) -> np.ndarray:
    """`accum_t s = 0; for i: s += cols[..., i]` (each sum assigned to accum_t); cols are on
    acc's grid, so a sum only changes by overflowing: exact when no partial sum leaves the range."""
    part = np.cumsum(cols, axis=-1)
    if part.size == 0 or (part.min() >= acc.min_value and part.max() <= acc.max_value):
        return part[..., -1] if part.shape[-1] else np.zeros(cols.shape[:-1])
    s = np.zeros(cols.shape[:-1])
    for i in range(cols.shape[-1]):
        s = acc.quantize(s + cols[..., i])
    return s


def _fixed(node, args, fmts, prec, ctx):
    x = args[0]
    why = "is computed in ap_fixed arithmetic (hls4ml's layernorm_1d)"
    fin = lut.require_fixed(node, fmts[0], why=why)
    axis = _axis(node, x.ndim)
    lead, dim = x.shape[:axis], int(np.prod(x.shape[axis:], dtype=np.int64))
    rows = x.reshape(-1, dim)
    acc = prec.accum if prec.accum is not None else auto_accum(fin, dim)
    acc = lut.require_fixed(node, acc, "accum", why)
    spec = lut.settings(prec, "layernorm")
    size, p2 = int(spec["size"]), int(spec["range_power2"])
    tfmt = lut.fixed_format(spec["format"], f"{node}: tables.layernorm.format")
    table = lut.invert_sqrt_table(size, p2, epsilon_power_of_10(node), tfmt)
    scale = np.ones(dim) if len(args) < 2 or args[1] is None else np.broadcast_to(args[1], x.shape[axis:]).reshape(-1)
    bias = np.zeros(dim) if len(args) < 3 or args[2] is None else np.broadcast_to(args[2], x.shape[axis:]).reshape(-1)
    for f, what in ((fmts[1] if len(fmts) > 1 else None, "scale"), (fmts[2] if len(fmts) > 2 else None, "bias")):
        if f is not None:
            lut.require_fixed(node, f, what, why)
    q = acc.quantize
    k_inv = float(q(np.array(1.0 / dim)))                     # const accum_t k_inv = 1.0 / dim
    xa = q(rows)                                               # static_cast<accum_t>(data[i])
    f2 = 2 * acc.frac_bits

    def times_k_inv(s):  # product<accum_t, accum_t>::product(s, k_inv), exact, then accum_t
        lut.require_exact(node, float(np.max(np.abs(s), initial=0.0)) * abs(k_inv), f2, "sums times 1/dim")
        return q(s * k_inv)

    lut.require_exact(node, dim * float(np.max(np.abs(xa), initial=0.0)), acc.frac_bits, "sums")
    mean = times_k_inv(_acc_sum(xa, acc))
    diff = q(xa - mean[:, None])                               # data_diff[i]
    dmax = float(np.max(np.abs(diff), initial=0.0))
    lut.require_exact(node, dmax * dmax, f2, "squared differences")
    sq = q(diff * diff)                                        # diff = data_diff[i] * data_diff[i]
    lut.require_exact(node, dim * float(np.max(sq, initial=0.0)), acc.frac_bits, "sums of squares")
    var = times_k_inv(_acc_sum(sq, acc))
    # int index = var * table_size * (1 << range_power2): exact, to_int() truncates (low 32 bits)
    t = np.trunc(np.ldexp(var * size, p2)).astype(np.int64)
    idx = np.clip(((t + 2 ** 31) & 0xFFFFFFFF) - 2 ** 31, 0, size - 1)
    inv = table[idx]
    frac_s = fmts[1].frac_bits if len(fmts) > 1 and fmts[1] is not None else 0
    bmax = float(np.max(np.abs(bias))) if bias.size else 0.0
    lut.require_exact(node, dmax * float(np.max(inv, initial=0.0))
                      * float(np.max(np.abs(scale), initial=0.0)) + bmax,
                      acc.frac_bits + tfmt.frac_bits + frac_s, "data_diff * inv * scale + bias")
    y = diff * inv[:, None] * scale + bias                     # exact, then res_T
    y = ctx.cast(node, y.reshape(x.shape), prec.result, fixed.result_axis(x.ndim))
    stat = tuple(lead) + (1,) * (x.ndim - axis)
    return (y, mean.reshape(stat), inv.reshape(stat)), (prec.result, acc, tfmt)


register(OpDef("LayerNormalization", infer=_infer, run=_run, macs=_macs, param_slots=(1, 2), bias_slots=(2,),
               run_fixed=_fixed))
