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
from conveyor.ops import fixed, intdot, lut
from conveyor.ops.intdot import njit
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


if njit is not None:
    from conveyor.ops.intdot import _cast, _to_result

    @njit(cache=True, nogil=True)
    def _rows_int(x, xscale, dx, ap, kinv, fa, size, p2, table, sc, bs, yshift, fuse, rp, back, y, mean_out,
                  inv_out, peaks):
        """`_fixed_numpy`'s arithmetic on raw integers, one row of `dim` values at a time: x [M, D]
        float64 on its 2^-f grid (xscale = 2^f, dx = f - fa), ap = accum_t's (rounding, how,
        width, signed, lo, hi) for `_to_result`, kinv the raw 1/dim, table the raw 1/sqrt
        entries, sc and bs the raw scale and the bias on the grid of y (yshift: the left shift
        of diff * inv * scale onto it); fuse: y cast to res_t (rp, back = 2^-fr) here, else y
        exact (back = 2^-grid). Out: y [M, D], mean and inv [M] as raws; peaks[k] = the
        largest |value| of each stage (the caller's exactness checks)."""
        M, D = x.shape
        rm, how, wd, sg, lo, hi = ap[0], ap[1], ap[2], ap[3] != 0, ap[4], ap[5]
        xa = np.empty(D, np.int64)
        df = np.empty(D, np.int64)
        for m in range(M):
            s = np.int64(0)
            for i in range(D):
                v = _to_result(np.int64(x[m, i] * xscale), dx, rm, how, wd, sg, lo, hi)  # (accum_t) data[i]
                xa[i] = v
                peaks[0] = max(peaks[0], abs(v))
                s = _cast(s + v, how, wd, sg, lo, hi)                     # sum += ..., in accum_t
            peaks[1] = max(peaks[1], abs(s))
            mu = _to_result(s * kinv, fa, rm, how, wd, sg, lo, hi)          # (accum_t)(sum * k_inv)
            s2 = np.int64(0)
            for i in range(D):
                d = _cast(xa[i] - mu, how, wd, sg, lo, hi)                 # data_diff[i]
                df[i] = d
                peaks[2] = max(peaks[2], abs(d))
                q = _to_result(d * d, fa, rm, how, wd, sg, lo, hi)          # (accum_t)(diff * diff)
                peaks[3] = max(peaks[3], abs(q))
                s2 = _cast(s2 + q, how, wd, sg, lo, hi)
            peaks[4] = max(peaks[4], abs(s2))
            var = _to_result(s2 * kinv, fa, rm, how, wd, sg, lo, hi)
            peaks[5] = max(peaks[5], abs(var))
            p = var * size                                                # index = var * N * 2^p2, to_int()
            e = p2 - fa
            if e >= 0:
                t = p << e
            else:
                t = -((-p) >> -e) if p < 0 else p >> -e                   # towards zero
            t = ((t + 2147483648) & 0xFFFFFFFF) - 2147483648               # the low 32 bits
            inv = table[min(max(t, 0), size - 1)]
            peaks[6] = max(peaks[6], abs(inv))
            mean_out[m] = mu
            inv_out[m] = inv
            for i in range(D):
                v = ((df[i] * inv * sc[i]) << yshift) + bs[i]             # diff * inv * scale + bias, exact
                if fuse:
                    v = _to_result(v, rp[0], rp[1], rp[2], rp[3], rp[4] != 0, rp[5], rp[6])
                y[m, i] = np.float64(v) * back


def _int_plan(node, fin, acc, table, tfmt, scale, bias, fmts, size, p2, dim, R):
    """What `_rows_int` needs from the formats and parameters, or None where it does not apply
    (the numpy path then computes, or refuses, as before)."""
    if njit is None or not intdot.fusable_result(acc) or acc.width > 53:
        return None
    fa = acc.frac_bits
    k_inv = float(acc.quantize(np.array(1.0 / dim)))
    fs = fmts[1].frac_bits if len(fmts) > 1 and fmts[1] is not None else 0
    fb = fmts[2].frac_bits if len(fmts) > 2 and fmts[2] is not None else 0
    sraw, traw = scale * 2.0 ** fs, np.asarray(table) * 2.0 ** tfmt.frac_bits
    F = fa + tfmt.frac_bits + fs                    # the grid of diff * inv * scale
    G = max(F, fb)                                  # and of the bias: y is exact on it
    braw = bias * 2.0 ** G
    if fin.frac_bits < 0 or min(fa, tfmt.frac_bits, fs, G) < 0 or abs(fin.frac_bits - fa) > 62 or G - F > 62:
        return None
    for a in (sraw, traw, braw):
        if a.size and not (float(np.max(np.abs(a))) < 2.0 ** 53 and np.array_equal(a, np.round(a))):
            return None
    how, lo, hi = intdot.result_clip(acc)
    ap = np.array([intdot.ROUNDING[acc.rounding], how, acc.width, int(acc.signed), lo, hi], np.int64)
    fuse = intdot.fusable_result(R) and G - R.frac_bits < 62 and R.frac_bits - G < 62
    rp = np.zeros(7, np.int64)
    if fuse:
        rhow, rlo, rhi = intdot.result_clip(R)
        rp[:] = [G - R.frac_bits, intdot.ROUNDING[R.rounding], rhow, R.width, int(R.signed), rlo, rhi]
    smax = float(np.max(np.abs(sraw))) if sraw.size else 0.0
    bmax = float(np.max(np.abs(braw))) if braw.size else 0.0
    return dict(xscale=2.0 ** fin.frac_bits, dx=fin.frac_bits - fa, ap=ap, kinv=np.int64(k_inv * 2.0 ** fa), fa=fa,
                table=traw.astype(np.int64), sc=sraw.astype(np.int64), bs=braw.astype(np.int64), yshift=G - F,
                fuse=fuse, rp=rp, back=2.0 ** -(R.frac_bits if fuse else G), size=size, p2=p2, dim=dim,
                smax=smax, bmax=bmax, G=G, mean_back=2.0 ** -fa, inv_back=2.0 ** -tfmt.frac_bits)


def _exact_peaks(pl, peaks) -> bool:
    """Whether every stage of `_rows_int` stayed exact (int64 and float64 alike): each check of
    the numpy path on |values| (stricter where it looks at signed maxima), and var * N exact."""
    e, fa, dim = 2.0 ** 53, pl["fa"], pl["dim"]
    kinv = float(pl["kinv"])
    p = [float(v) for v in peaks]
    return (dim * p[0] < e and p[1] * kinv < e and p[2] * p[2] < e and dim * p[3] < e and p[4] * kinv < e
            and p[5] * pl["size"] < e and p[5] * pl["size"] * 2.0 ** max(0, pl["p2"] - fa) < 2.0 ** 62
            and (p[2] * p[6] * pl["smax"]) * 2.0 ** pl["yshift"] + pl["bmax"] < e)


def _setup(node, x, fmts, prec, args):
    """The checks, formats, table and parameters of a LayerNorm under `prec` (input-independent)."""
    why = "is computed in ap_fixed arithmetic (hls4ml's layernorm_1d)"
    fin = lut.require_fixed(node, fmts[0], why=why)
    axis = _axis(node, x.ndim)
    dim = int(np.prod(x.shape[axis:], dtype=np.int64))
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
    return dict(fin=fin, axis=axis, dim=dim, acc=acc, size=size, p2=p2, tfmt=tfmt, table=table, scale=scale,
                bias=bias)


def _fixed(node, args, fmts, prec, ctx):
    """hls4ml's layernorm_1d: compiled on raw integers (`_rows_int`) on runs that are not
    observed, where every stage provably stays exact; else `_fixed_numpy` (the same bits)."""
    x = args[0]
    observe = getattr(ctx, "observe", False)
    plans = None if observe else lut.node_plans(ctx, node, args, fmts, prec, (1, 2))
    key = ("layernorm", x.shape)
    got = plans.get(key) if plans is not None else None
    if got is None:
        st = _setup(node, x, fmts, prec, args)
        pl = None if observe else _int_plan(node, st["fin"], st["acc"], st["table"], st["tfmt"], st["scale"],
                                             st["bias"], fmts, st["size"], st["p2"], st["dim"], prec.result)
        got = (st, pl)
        if plans is not None:
            plans[key] = got
    st, pl = got
    if pl is not None:
        axis, dim = st["axis"], st["dim"]
        rows = np.ascontiguousarray(x.reshape(-1, dim), np.float64)
        m = rows.shape[0]
        y = np.empty((m, dim), np.float64)
        mean, inv = np.empty(m, np.int64), np.empty(m, np.int64)
        peaks = np.zeros(7, np.int64)
        _rows_int(rows, pl["xscale"], pl["dx"], pl["ap"], pl["kinv"], pl["fa"], pl["size"], pl["p2"], pl["table"],
                  pl["sc"], pl["bs"], pl["yshift"], pl["fuse"], pl["rp"], pl["back"], y, mean, inv, peaks)
        if _exact_peaks(pl, peaks):
            y = y.reshape(x.shape)
            if not pl["fuse"]:
                y = ctx.cast(node, y, prec.result, fixed.result_axis(x.ndim), inplace=True)
            stat = tuple(x.shape[:axis]) + (1,) * (x.ndim - axis)
            return ((y, (mean * pl["mean_back"]).reshape(stat), (inv * pl["inv_back"]).reshape(stat)),
                    (prec.result, st["acc"], st["tfmt"]))
    return _fixed_numpy(node, args, fmts, prec, ctx, st)


def _fixed_numpy(node, args, fmts, prec, ctx, st=None):
    """The reference: hls4ml's layernorm_1d in numpy, float64 values checked exact stage by stage."""
    x = args[0]
    st = st or _setup(node, x, fmts, prec, args)
    axis, dim, acc, size, p2, tfmt, table = (st[k] for k in ("axis", "dim", "acc", "size", "p2", "tfmt", "table"))
    scale, bias = st["scale"], st["bias"]
    lead = x.shape[:axis]
    rows = x.reshape(-1, dim)
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


def _prepare(node, ins):
    """`OpDef.prepare`: the compiled row kernel (`rows_float`) for a float32/float64 input with
    constant scale and bias; None (numpy's `_run`) otherwise."""
    from conveyor.ops import rows_float

    consts = []
    for slot in (1, 2):
        info = ins[slot] if slot < len(ins) else None
        if info is not None and info.value is None:
            return None  # a run-time scale or bias
        consts.append(None if info is None else info.value)
    shape = tuple(ins[0].shape)
    fast = rows_float.layernorm_prepare(shape, ins[0].dtype, _axis(node, len(shape)), consts[0], consts[1],
                                        float(node.attr("epsilon", 1e-5)))
    if fast is None:
        return None
    return lambda x: fast(x) or _run(node, x)


register(OpDef("LayerNormalization", infer=_infer, run=_run, macs=_macs, param_slots=(1, 2), bias_slots=(2,),
               run_fixed=_fixed, prepare=_prepare))
