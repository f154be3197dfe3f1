"""Softmax, with both of ONNX's axis semantics; the bit-accurate kernel is hls4ml's
(lookup tables of exp and 1/x, see docs/numerics.md)."""

from __future__ import annotations

import numpy as np

from conveyor.errors import ModelError, PrecisionError
from conveyor.numerics.cast import is_fixed
from conveyor.numerics.fixed import FixedType
from conveyor.ops import intdot, lut
from conveyor.ops.fixed import result_axis
from conveyor.ops.intdot import njit
from conveyor.ops.registry import OpDef, register


def _axis(node, rank):
    default = -1 if node.opset >= 13 else 1
    axis = node.attr("axis", default)
    if not -rank <= axis < max(rank, 1):
        raise ModelError(f"{node}: axis={axis} out of range for rank {rank}; accepted: [{-rank}, {rank - 1}]")
    return axis % max(rank, 1)


def _softmax(x, axis):
    e = np.subtract(x, np.max(x, axis=axis, keepdims=True))
    np.exp(e, out=e)  # in place: the same values, no second array
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


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




# ---- bit-accurate kernel: hls4ml's softmax_stable / softmax_latency / softmax_argmax -------------

def softmax_table_sizes(fin: FixedType, impl: str, exp_size: int, inv_size: int, inv_fmt: FixedType,
                        exp_addr: FixedType, inv_addr: FixedType, where: str) -> tuple[int, int]:
    """Effective (exp, inv) table sizes, clamped as hls4ml's Vivado backend clamps them."""
    for name, size in (("softmax_exp", exp_size), ("softmax_inv", inv_size)):
        if size & (size - 1):
            raise PrecisionError(f"{where}: tables.{name}.size {size} is not a power of two; the table is "
                                 "addressed by the top log2(size) bits of a value; accepted: 2, 4, 8, ...")
    cap = 2 ** min(fin.width, inv_fmt.width)           # FixSoftmaxTableSize
    exp_size, inv_size = min(exp_size, cap), min(inv_size, cap)
    if impl == "stable" and fin.signed:                 # SoftmaxConfigTemplate
        exp_size = min(exp_size, 2 ** (fin.width - 1))
    # never slice more bits than the address holds (hls4ml would read out of range)
    return min(exp_size, 2 ** exp_addr.width), min(inv_size, 2 ** inv_addr.width)


def _softmax_rows(node, x, fin, prec):
    """hls4ml's softmax on rows x[..., n] (n_slice = n). Returns the values before the result cast."""
    impl = lut.settings(prec, "softmax")["implementation"]
    if impl == "argmax":
        onehot = np.zeros_like(x)
        np.put_along_axis(onehot, np.argmax(x, axis=-1)[..., None], 1.0, axis=-1)  # first maximum wins
        return onehot
    es, vs = lut.settings(prec, "softmax_exp"), lut.settings(prec, "softmax_inv")
    exp_fmt = lut.fixed_format(es["format"], f"{node}: tables.softmax_exp.format")
    inv_fmt = lut.fixed_format(vs["format"], f"{node}: tables.softmax_inv.format")
    inv_addr = lut.fixed_format(vs.get("input", es["format"]), f"{node}: tables.softmax_inv.input")
    if impl == "stable":
        s = int(fin.signed)
        norm = (lut.fixed_format(es["input"], f"{node}: tables.softmax_exp.input") if "input" in es
                else FixedType(fin.width - s, fin.integer - s, signed=False))
        if norm.width > 53:
            raise PrecisionError(f"{node}: tables.softmax_exp.input {norm} is wider than 53 bits")
        d = np.max(x, axis=-1, keepdims=True) - x
        lut.note_address(d, norm)
        addr = norm.quantize(d)  # inp_norm_t d = x_max - x
        exp_addr = norm
    else:
        addr, exp_addr = x, fin
    n_exp, n_inv = softmax_table_sizes(fin, impl, int(es["size"]), int(vs["size"]), inv_fmt,
                                       exp_addr, inv_addr, str(node))
    e = lut.softmax_exp_table(exp_addr, n_exp, exp_fmt, impl == "stable")[lut.top_bits_index(addr, exp_addr, n_exp)]
    n = x.shape[-1]
    acc = prec.accum
    if acc is None:  # 'auto': accum_t = ap_fixed<W_exp + ceil(log2 n), I_exp + ceil(log2 n)>, exact
        lut.require_exact(node, n * max(abs(exp_fmt.min_value), exp_fmt.max_value), exp_fmt.frac_bits, "sums")
        total = np.sum(e, axis=-1)
        prod_fmt = exp_fmt
    else:
        acc = lut.fixed_format(acc, f"{node}: accum")
        e = acc.quantize(e)
        total = lut.tree_reduce([e[..., i] for i in range(n)], acc)
        prod_fmt = acc
    lut.note_address(total, inv_addr)
    total = inv_addr.quantize(total)                                  # exp_sum is inv_inp_t
    inv = lut.softmax_inv_table(inv_addr, n_inv, inv_fmt)[lut.top_bits_index(total, inv_addr, n_inv)]
    if prod_fmt.width + inv_fmt.width > 53:
        raise PrecisionError(f"{node}: the product of {prod_fmt} and {inv_fmt} exceeds 53 bits; "
                             "bit-accurate emulation needs narrower accum / table formats")
    return e * inv[..., None]                                         # exp_res[i] * inv_exp_sum, exact


if njit is not None:
    from conveyor.ops.intdot import _to_result

    @njit(cache=True, nogil=True)
    def _rows_int(x, xscale, stable, ap, amask, ashift, etab, ip, imask, ishift, itab, fuse, rp, back, y):
        """`_softmax_rows` (stable or latency, 'auto' accumulator) on raw integers, row by row:
        x [M, n] float64 on its 2^-f grid (xscale = 2^f); stable: the address is
        (inp_norm_t)(x_max - x) (ap: that cast's `_to_result` parameters), else x itself; a
        table address is the top bits of the stored word ((raw & mask) >> shift); etab, itab
        the raw exp and 1/x entries; ip the cast of the exact sum to inv_inp_t; y = e * inv,
        cast to res_t here when fuse (rp, back = 2^-fr), else exact (back = 2^-grid)."""
        M, n = x.shape
        e = np.empty(n, np.int64)
        for m in range(M):
            xm = np.int64(x[m, 0] * xscale)
            for i in range(1, n):
                xm = max(xm, np.int64(x[m, i] * xscale))
            total = np.int64(0)
            for i in range(n):
                v = np.int64(x[m, i] * xscale)
                if stable:
                    v = _to_result(xm - v, ap[0], ap[1], ap[2], ap[3], ap[4] != 0, ap[5], ap[6])
                ev = etab[(v & amask) >> ashift]
                e[i] = ev
                total += ev
            t = _to_result(total, ip[0], ip[1], ip[2], ip[3], ip[4] != 0, ip[5], ip[6])
            inv = itab[(t & imask) >> ishift]
            for i in range(n):
                v = e[i] * inv
                if fuse:
                    v = _to_result(v, rp[0], rp[1], rp[2], rp[3], rp[4] != 0, rp[5], rp[6])
                y[m, i] = np.float64(v) * back


def _cast7(fmt, d: int) -> np.ndarray | None:
    """`_to_result`'s (d, rounding, how, width, signed, lo, hi) for a cast to `fmt`, or None."""
    if not intdot.fusable_result(fmt) or abs(d) > 62:
        return None
    how, lo, hi = intdot.result_clip(fmt)
    return np.array([d, intdot.ROUNDING[fmt.rounding], how, fmt.width, int(fmt.signed), lo, hi], np.int64)


def _top_bits(fmt: FixedType, size: int) -> tuple[int, int]:
    """(mask, shift) of `lut.top_bits_index` on raw integers."""
    return (1 << fmt.width) - 1, fmt.width - lut.address_bits(size)


def _int_plan(node, fin, prec, n: int):
    """What `_rows_int` needs for rows of n values under `prec`, or None where it does not apply
    (argmax, a fixed accumulator, formats beyond its integers): `_softmax_rows` then runs."""
    impl = lut.settings(prec, "softmax")["implementation"]
    if njit is None or impl not in ("stable", "latency") or prec.accum is not None or fin.frac_bits < 0 or n < 1:
        return None
    es, vs = lut.settings(prec, "softmax_exp"), lut.settings(prec, "softmax_inv")
    exp_fmt = lut.fixed_format(es["format"], f"{node}: tables.softmax_exp.format")
    inv_fmt = lut.fixed_format(vs["format"], f"{node}: tables.softmax_inv.format")
    inv_addr = lut.fixed_format(vs.get("input", es["format"]), f"{node}: tables.softmax_inv.input")
    ap = np.zeros(7, np.int64)
    if impl == "stable":
        s = int(fin.signed)
        norm = (lut.fixed_format(es["input"], f"{node}: tables.softmax_exp.input") if "input" in es
                else FixedType(fin.width - s, fin.integer - s, signed=False))
        if norm.width > 53:
            return None
        got = _cast7(norm, fin.frac_bits - norm.frac_bits)
        if got is None or norm.frac_bits < 0:
            return None
        ap, exp_addr = got, norm
    else:
        exp_addr = fin
    n_exp, n_inv = softmax_table_sizes(fin, impl, int(es["size"]), int(vs["size"]), inv_fmt, exp_addr, inv_addr,
                                       str(node))
    if (n * max(abs(exp_fmt.min_value), exp_fmt.max_value) * 2.0 ** exp_fmt.frac_bits >= 2.0 ** 53
            or exp_fmt.width + inv_fmt.width > 53 or min(exp_fmt.frac_bits, inv_fmt.frac_bits, inv_addr.frac_bits) < 0):
        return None  # (`_softmax_rows` refuses these, naming the node)
    etab = lut.softmax_exp_table(exp_addr, n_exp, exp_fmt, impl == "stable")
    itab = lut.softmax_inv_table(inv_addr, n_inv, inv_fmt)
    ip = _cast7(inv_addr, exp_fmt.frac_bits - inv_addr.frac_bits)
    grid = exp_fmt.frac_bits + inv_fmt.frac_bits
    R = prec.result
    rp = _cast7(R, grid - R.frac_bits) if is_fixed(R) else None
    if ip is None:
        return None
    am, ash = _top_bits(exp_addr, n_exp)
    im, ish = _top_bits(inv_addr, n_inv)
    return dict(xscale=2.0 ** fin.frac_bits, stable=impl == "stable", ap=ap, amask=am, ashift=ash,
                etab=(etab * 2.0 ** exp_fmt.frac_bits).astype(np.int64), ip=ip, imask=im, ishift=ish,
                itab=(itab * 2.0 ** inv_fmt.frac_bits).astype(np.int64), fuse=rp is not None,
                rp=rp if rp is not None else np.zeros(7, np.int64),
                back=2.0 ** -(R.frac_bits if rp is not None else grid))


def _run_fixed(node, args, fmts, prec, ctx):
    """hls4ml's softmax: compiled on raw integers (`_rows_int`) on runs that are not observed
    (an observing run counts the addresses that overflow), else `_softmax_rows` (the same bits)."""
    x = args[0]
    fin = lut.require_fixed(node, fmts[0])
    axis = _axis(node, x.ndim)
    plans = lut.node_plans(ctx, node, args, fmts, prec, ())
    if plans is not None:
        key = ("softmax", x.shape)
        pl = plans.get(key, False)
        if pl is False:
            n = x.shape[axis] if node.opset >= 13 else int(np.prod(x.shape[axis:], dtype=np.int64))
            pl = plans[key] = _int_plan(node, fin, prec, int(n))
        if pl is not None:
            last = axis == x.ndim - 1  # the usual case: no axis to move (np.moveaxis costs 3 us a call)
            if node.opset >= 13:
                rows = x if last else np.moveaxis(x, axis, -1)
                shape = rows.shape
                rows = np.ascontiguousarray(rows, np.float64).reshape(-1, shape[-1])
            else:
                shape = x.shape
                rows = np.ascontiguousarray(x, np.float64).reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
            y = np.empty(rows.shape, np.float64)
            _rows_int(rows, pl["xscale"], pl["stable"], pl["ap"], pl["amask"], pl["ashift"], pl["etab"], pl["ip"],
                      pl["imask"], pl["ishift"], pl["itab"], pl["fuse"], pl["rp"], pl["back"], y)
            y = y.reshape(shape)
            if node.opset >= 13 and not last:
                y = np.ascontiguousarray(np.moveaxis(y, -1, axis))
            if not pl["fuse"]:
                y = ctx.cast(node, y, prec.result, result_axis(y.ndim), inplace=True)
            return (y,), (prec.result,)
    return _run_fixed_numpy(node, args, fmts, prec, ctx)


def _run_fixed_numpy(node, args, fmts, prec, ctx):
    """The reference: `_softmax_rows` in numpy."""
    x = args[0]
    fin = lut.require_fixed(node, fmts[0])
    axis = _axis(node, x.ndim)
    if node.opset >= 13:
        rows = np.moveaxis(x, axis, -1)
        y = np.moveaxis(_softmax_rows(node, rows, fin, prec), -1, axis)
    else:
        flat = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
        y = _softmax_rows(node, flat, fin, prec).reshape(x.shape)
    y = ctx.cast(node, np.ascontiguousarray(y, dtype=np.float64), prec.result, result_axis(y.ndim))
    return (y,), (prec.result,)


def _prepare(node, ins):
    """`OpDef.prepare`: the compiled row kernel (`rows_float`) for a float32/float64 Softmax over
    the last axis (or opset < 13's rows); None (numpy's `_run`) otherwise."""
    from conveyor.ops import rows_float

    shape = tuple(ins[0].shape)
    fast = rows_float.softmax_prepare(shape, ins[0].dtype, _axis(node, len(shape)), node.opset < 13)
    if fast is None:
        return None
    return lambda x: fast(x) or _run(node, x)


register(OpDef("Softmax", infer=_infer, run=_run, run_fixed=_run_fixed, prepare=_prepare))
