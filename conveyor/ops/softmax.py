"""Softmax, with both of ONNX's axis semantics; the bit-accurate kernel is hls4ml's
(lookup tables of exp and 1/x, see docs/numerics.md)."""

from __future__ import annotations

import numpy as np

from conveyor.errors import ModelError, PrecisionError
from conveyor.numerics.fixed import FixedType
from conveyor.ops import lut
from conveyor.ops.fixed import result_axis
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


def _run_fixed(node, args, fmts, prec, ctx):
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


register(OpDef("Softmax", infer=_infer, run=_run, run_fixed=_run_fixed))
