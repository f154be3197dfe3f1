"""Building blocks of the bit-accurate kernels (`OpDef.run_fixed`).

Every kernel takes float64 arrays whose values lie exactly on their formats' grids and
returns (outputs, output formats). Three shapes of kernel cover the ops so far:

- `movement`: data movement (Reshape, Flatten, Transpose, Pad, Identity, Dropout):
  values pass unchanged and keep their format, as wires do in HLS;
- `exact_then_cast`: the float kernel computes the exact result in float64 (max,
  compare, add, subtract, multiply of grid values, a sum divided by a count), then the
  result is cast to the node's `result` format (Relu, MaxPool, Add, Concat, ...);
- `dot`: products and sums of a Conv / Dense / Gemm / MatMul, accumulated in the
  node's `accum` format the way hls4ml's dense/conv loops do (exactly, when 'auto') and
  cast to its `result` format.
The exact arithmetic of each is in docs/numerics.md.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from conveyor.errors import PrecisionError
from conveyor.numerics.cast import frac_bits, is_fixed

Kernel = Callable[..., tuple[tuple[np.ndarray, ...], tuple]]

_EXACT_UNITS = 2.0 ** 53  # float64 sums of integers below this are exact in any order


@dataclass
class CastCounts:
    """Overflow events of a lossy accumulator's casts over one `accumulate` call: the bias
    cast `(accum_t) b` (once per output), each product cast `(accum_t)(x * w)` and each
    running sum's cast `acc = (accum_t)(acc + p)`; `casts` counts product casts (one per
    product) and sum casts (one per product and output) alike."""

    bias: int = 0
    products: int = 0
    sums: int = 0
    casts: dict = field(default_factory=lambda: {"bias": 0, "products": 0, "sums": 0})


#: set while an observing run (CastContext.observe) accumulates: the fast paths that cannot
#: say how many casts overflowed (one wrap of the exact sum) step aside for the tap loop.
_COUNTS: contextvars.ContextVar[CastCounts | None] = contextvars.ContextVar("conveyor_cast_counts", default=None)


def counting_casts(counts: CastCounts):
    """Context manager: record accumulator overflow events into `counts`."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        token = _COUNTS.set(counts)
        try:
            yield counts
        finally:
            _COUNTS.reset(token)

    return scope()


def result_axis(ndim: int) -> int:
    """Block formats group activations over channels (axis 1) for NC... tensors, else the last axis."""
    return 1 if ndim > 2 else -1


def movement(float_run) -> Kernel:
    def run_fixed(node, args, fmts, prec, ctx):
        outs = float_run(node, args)
        return tuple(outs), tuple(fmts[0] if o.dtype.kind == "f" else None for o in outs)

    run_fixed.movement = True  # the Emulator may run the op's prepared float kernel instead
    return run_fixed


def prepared_movement(kernel) -> Kernel:
    """`movement` around a prepared float kernel (`kernel(args) -> outputs`, e.g. a reshape to
    the output's static shape): the same values, without working out the layout per run."""
    def run_fixed(node, args, fmts, prec, ctx):
        outs = kernel(args)
        return tuple(outs), tuple(fmts[0] if o.dtype.kind == "f" else None for o in outs)

    run_fixed.kernel = kernel  # the Emulator joins chains of these (quantized._join_movement)
    return run_fixed


def exact_then_cast(float_run, selects: bool = False, selects_all: bool = False) -> Kernel:
    """`selects`: every output value is one of the first input's values or zero (Relu,
    MaxPool), so that the result cast is the identity when that input's format lies inside
    the result's (same or finer grid, wider range); a non-observing run then skips it.
    `selects_all`: every output value is one of the inputs' values (Concat): the same when
    every input's format lies inside the result's.

    A non-observing run may ask (`ctx.relu_next`, the Emulator's `_relu_after`) for the
    following Relu, whose cast is the identity: max(., 0) in the result cast's pass."""
    def run_fixed(node, args, fmts, prec, ctx):
        _require_exact_inputs(node, args, fmts)
        outs = float_run(node, args)
        out = np.asarray(outs[0], dtype=np.float64)
        observe = getattr(ctx, "observe", False)
        relu = not observe and getattr(ctx, "relu_next", False)
        if not observe and (selects or selects_all) and _inside(
                fmts[:1] if selects else [f for f, a in zip(fmts, args) if a is not None], prec.result):
            if relu:
                out = np.maximum(out, 0.0, out=out) if _owned(out, *args) else np.maximum(out, 0.0)
                ctx.relu_done = True
            rest = tuple(outs[1:])
            return (out,) + rest, (prec.result,) + (None,) * len(rest)
        y = ctx.cast(node, out, prec.result, result_axis(out.ndim), **_owned(out, *args),
                     **({"relu": True} if relu else {}))
        if relu:
            ctx.relu_done = True
        rest = tuple(outs[1:])  # e.g. MaxPool indices: integers, not cast
        return (y,) + rest, (prec.result,) + (None,) * len(rest)

    run_fixed.fuses_relu = True
    return run_fixed


def swish(x: np.ndarray, fx, sig_node, sig_prec, mul_node, mul_prec, ctx) -> np.ndarray | None:
    """x * Sigmoid(x) (EfficientNet's SiLU, as the exporters write it: a Sigmoid read only by
    a Mul of its own input) in one compiled pass: per value, hls4ml's sigmoid table address
    (`lut.range_index_one`, what `lut.range_index` computes), the entry cast to the Sigmoid's
    result format (an elementwise cast: casting the table first is casting each look-up),
    and its exact product with x; then the Mul's result cast. The values of the two kernels
    in turn; None where a condition of theirs is not met or not proved (the caller then runs
    them, and they refuse what they refuse). Non-observing runs only (nothing is counted)."""
    from conveyor.ops import intdot, lut

    if not (intdot.available() and is_fixed(fx) and fx.width <= 53 and fx.frac_bits >= 0
            and is_fixed(sig_prec.result) and is_fixed(mul_prec.result)
            and fx.width + sig_prec.result.width <= 53 and x.dtype == np.float64 and x.flags.c_contiguous):
        return None
    try:
        size, lo, hi, tfmt = lut.range_spec(sig_node, sig_prec, "sigmoid")
    except PrecisionError:
        return None
    r, n = hi - lo, size
    # range_index's compiled path: |raw| * n < 2^62 (from the format: x lies in fx's range)
    if not (_format_absmax(fx) * 2.0 ** fx.frac_bits * n < 2.0 ** 62 and (r << fx.frac_bits) < 2 ** 62):
        return None
    table = _sigmoid_entries(size, lo, hi, tfmt, sig_prec.result)
    out = np.empty_like(x)
    _nb_swish(x.reshape(-1), 2.0 ** fx.frac_bits, np.int64(n), np.int64(r), np.int64((-lo * n) // r),
              np.int64(fx.frac_bits), table, out.reshape(-1))
    return ctx.cast(mul_node, out, mul_prec.result, result_axis(out.ndim), inplace=True)


@cache
def _sigmoid_entries(size: int, lo: int, hi: int, tfmt, result) -> np.ndarray:
    """hls4ml's sigmoid table cast to the Sigmoid's result format (read-only)."""
    from conveyor.numerics.cast import cast
    from conveyor.ops import lut

    v = np.array(cast(lut.sigmoid_table(size, lo, hi, tfmt).values, result), np.float64)
    v.setflags(write=False)
    return v


try:
    from conveyor.ops.intdot import njit as _njit
    from conveyor.ops.lut import range_divisor as _range_divisor
    from conveyor.ops.lut import range_index_one as _range_index_one
except ImportError:  # pragma: no cover - depends on the install
    _njit = None

if _njit is not None:
    @_njit(cache=True, nogil=True)
    def _nb_swish(x, scale, n, r, offset, f, table, out):
        """out = x * table[index(x)], the index as `lut._range_index_int` computes it."""
        d, k = _range_divisor(r, f)
        for i in range(x.size):
            idx = _range_index_one(np.int64(x[i] * scale) * n, k, d, offset)
            if idx < 0:
                idx = 0
            elif idx > n - 1:
                idx = n - 1
            out[i] = x[i] * table[idx]


def _inside(fmts, R) -> bool:
    """Whether every value of each ap_fixed format in `fmts` (and zero) is a value of R."""
    if not is_fixed(R) or not fmts:
        return False
    return all(is_fixed(f) and f.frac_bits <= R.frac_bits and R.min_value <= min(f.min_value, 0.0)
               and f.max_value <= R.max_value for f in fmts)


def _require_exact_inputs(node, args, fmts) -> None:
    """An add/multiply of grid values is exact in float64 only below 53 significant bits."""
    widths = [getattr(f, "width", 0) for f, a in zip(fmts, args) if a is not None and f is not None]
    if sum(widths) > 53 and node.op_type == "Mul":
        raise PrecisionError(f"{node}: a product of {widths}-bit operands exceeds float64's 53-bit exact range")


# ---- dot products ----------------------------------------------------------------------
#
# hls4ml's Dense / Conv (nnet_dense_latency.h, nnet_conv2d_latency.h) compute, per output:
#     acc = (accum_t) bias;  for k in order: acc += (accum_t) (x[k] * w[k]);  res = (res_t) acc
# `accumulate` returns `acc` exactly; it takes the fastest path that provably gives the
# same bits as that loop (docs/numerics.md, "Kernels", item 3).

#: (node, x, w) -> (K, output shape, term): term(k) is the exact product array of tap k
#: (shaped like the output), taps numbered in the order hls4ml's latency kernels add them.
#: A term may carry `term.block(i0, i1)`: the products of taps i0 .. i1-1 stacked along a
#: new axis 0, which lets the sequential path work a group of taps at a time.
Taps = Callable[[Any, np.ndarray, np.ndarray], tuple[int, tuple, Callable[[int], np.ndarray]]]

#: the sequential path works on output blocks of about this many bytes (rows of a batch):
#: small ones, in cache, when the taps come in groups (of about _GROUP_BYTES of products),
#: larger ones when they come one at a time (fewer Python-level steps)
_SEQ_BLOCK_BYTES = 128 << 10
_SEQ_BLOCK_BYTES_PER_TAP = 4 << 20
_GROUP_BYTES = 1 << 20


@dataclass(frozen=True)
class DotSpec:
    """How one op lays out its products and sums (see `dot`)."""

    float_dot: Callable[..., np.ndarray]   # (node, x, w) -> sum of products, float64, no bias
    reduce_len: Callable[[np.ndarray], int]  # (w) -> an upper bound of the products per output
    taps: Taps
    x_slot: int = 0
    w_slot: int = 1
    b_slot: int | None = 2
    bias_shape: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    rows: bool = False  # output axis 0 is x's axis 0: the sequential path may go block by block
    #: False for hls4ml's einsum (nnet_einsum.h: ``accum_buf += product(a, b)``): the products are
    #: not cast to accum_t, only each running sum is (the MatMul of two run-time tensors)
    cast_products: bool = True
    #: (node, x, w) -> the products as rows times matrices, taps in hls4ml's order, or None:
    #: ([X_g [M, K]], [W_g [K, N_g]], assemble([acc_g [M, N_g]]) -> the output); the groups'
    #: columns together are the bias' entries in order. Pure indexing (any dtype).
    matrix: Callable[..., Any] | None = None
    #: (node, x, w) -> the op as a 2-D convolution for `intdot.conv_fused`, or None:
    #: (x [N, C, H, W] padded, w [KH, KW, C, M], strides, dilations, (OH, OW), output shape),
    #: taps in hls4ml's order (kernel rows, columns, then channels). Pure indexing.
    window: Callable[..., Any] | None = None


def dot(float_dot: Callable[..., np.ndarray], reduce_len: Callable[[np.ndarray], int],
        x_slot: int = 0, w_slot: int = 1, b_slot: int | None = 2,
        bias_shape: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        taps: Taps | None = None, rows: bool = False, cast_products: bool = True,
        matrix: Callable[..., Any] | None = None, window: Callable[..., Any] | None = None) -> Kernel:
    """A products-and-sums kernel. `float_dot(node, x, w)` is the float kernel without bias
    (bilinear in x and w); `reduce_len(w)` bounds the number of products summed per output;
    `bias_shape(b, y)` shapes the bias to broadcast over the output (default: as given);
    `taps(node, x, w)` lists the products per output in hls4ml's order (default:
    `matmul_taps(x, w)`, numpy.matmul's layout). The kernel's `spec` attribute holds these."""
    spec = DotSpec(float_dot, reduce_len, taps or (lambda node, x, w: matmul_taps(x, w)),
                   x_slot, w_slot, b_slot, bias_shape, rows, cast_products, matrix, window)

    def run_fixed(node, args, fmts, prec, ctx):
        x, w = args[spec.x_slot], args[spec.w_slot]
        has_b = spec.b_slot is not None and spec.b_slot < len(args) and args[spec.b_slot] is not None
        b = args[spec.b_slot] if has_b else None
        fb = fmts[spec.b_slot] if has_b else None
        # The Emulator's values lie inside their formats' ranges: bounds come from the formats
        # and the parameters' ranges, which the context caches (no scan of x or w per run).
        observing = getattr(ctx, "observe", False)
        relu = not observing and getattr(ctx, "relu_next", False)  # the Emulator asks for the following Relu too
        if not observing and spec.window is not None:
            pool = getattr(ctx, "pool_next", False)  # and for a 2x2 MaxPool after it
            y = _fused_dot(spec, node, x, w, b, fmts[spec.x_slot], fmts[spec.w_slot], fb, prec, ctx, relu=relu,
                           pool=pool)
            if y is not None:
                if relu:
                    ctx.relu_done = True
                if pool:
                    ctx.pool_done = True
                return (y,), (prec.result,)
        if not observing and prec.accum is None and node.op_type in _PRODUCT_OPS:
            acc = _exact_product(spec, node, x, w, b, fmts[spec.x_slot], fmts[spec.w_slot], fb, ctx)
            if acc is not None:  # a fresh array
                y = ctx.cast(node, acc, prec.result, result_axis(acc.ndim), inplace=True,
                             **({"relu": True} if relu else {}))
                if relu:
                    ctx.relu_done = True
                return (y,), (prec.result,)
        observe = observing and is_fixed(prec.accum)
        counts = CastCounts() if observe else None
        with counting_casts(counts) if observe else _nothing():
            acc = accumulate(spec, node, x, w, b, fmts[spec.x_slot], fmts[spec.w_slot], fb, prec.accum,
                             in_range=True, value_range=getattr(ctx, "value_range", None))
        if observe:
            counts.casts["sums"] = counts.casts["products"] = int(acc.size) * int(spec.reduce_len(w))
            if not spec.cast_products:
                counts.casts["products"] = 0
            if b is not None and b.size:  # each output casts its bias once: (accum_t) b
                from conveyor.numerics.cast import overflow_count

                counts.casts["bias"] = int(acc.size)
                counts.bias = overflow_count(b, prec.accum) * (int(acc.size) // int(b.size))
            ctx.record_accum(node, prec.accum, counts)
        # A following Relu the Emulator fuses (its cast the identity): max(., 0) inside the
        # result cast's pass, the same values the Relu's kernel would compute from this result
        y = ctx.cast(node, acc, prec.result, result_axis(acc.ndim), **_owned(acc, x, w, b),
                     **({"relu": True} if relu else {}))
        if relu:
            ctx.relu_done = True
        return (y,), (prec.result,)

    run_fixed.spec = spec
    return run_fixed


#: the ops whose float_dot returns a fresh array (a matrix product) that `_exact_product` may take
_PRODUCT_OPS = frozenset({"Dense", "Gemm", "MatMul"})


def _exact_product(spec, node, x, w, b, fx, fw, fb, ctx) -> np.ndarray | None:
    """`accumulate`'s exact ('auto') sum of a Dense, Gemm or MatMul by float64 BLAS when the
    formats alone prove every partial sum exact (then no other path can give other bits: they
    all compute the exact sum), with less bookkeeping per call (a batch-1 sequence model runs
    14 of these per layer pair); None where `accumulate` decides (a block format, a bound the
    formats do not prove, the compiled 2-D batch path)."""
    if not (is_fixed(fx) and is_fixed(fw)) or (b is not None and not is_fixed(fb)):
        return None
    if x.ndim == 2 and w.ndim == 2 and x.shape[0] >= _FUSED_MIN_ROWS_2D:
        return None  # accumulate's compiled batch path
    units = fx.frac_bits + fw.frac_bits
    rng = getattr(ctx, "value_range", None) or _value_range
    if getattr(ctx, "is_param", lambda a: True)(w):
        w_lo, w_hi = rng(w)  # the parameters' cached range
    else:  # a run-time right operand (attention's K^T, V) lies inside its format: no scan of it
        w_lo, w_hi = fw.min_value, fw.max_value
    bmax = 0.0
    if b is not None:
        units = max(units, fb.frac_bits)
        b_lo, b_hi = rng(b)
        bmax = max(-b_lo, b_hi)
    bound = int(spec.reduce_len(w)) * max(-fx.min_value, fx.max_value) * max(-w_lo, w_hi) + bmax
    if not bound * 2.0 ** units < _EXACT_UNITS:
        return None
    if spec.matrix is matmul_matrix and x.ndim > 2 and w.ndim == 2 and x.flags.c_contiguous:
        y = (x.reshape(-1, x.shape[-1]) @ w).reshape(x.shape[:-1] + w.shape[1:])  # (see _exact_sum)
    else:
        y = spec.float_dot(node, x, w)
    if b is not None:
        bb = _shaped_bias(spec, b, y)
        if _fits_into(np.shape(bb), y.shape):
            y += bb  # y is the product's fresh array
        else:
            y = y + bb
    return y


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def accumulate(spec: DotSpec, node, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
               fx, fw, fb, accum, method: str = "auto", *, in_range: bool = False,
               value_range: Callable[[np.ndarray], tuple[float, float]] | None = None) -> np.ndarray:
    """The accumulator of every output before the result cast, as float64.

    `accum` None is 'auto' (the exact sum). An ap_fixed `accum` follows hls4ml:
    ``acc = (accum_t) b`` then ``acc += (accum_t)(x[k] * w[k])`` tap by tap in `spec.taps`
    order, every addition assigned back to accum_t. `method="sequential"` forces that
    literal loop (the reference the fast paths are tested against); "auto" takes a fast
    path when it provably gives the same bits.

    `in_range`: every value of x lies inside fx's range (as in the Emulator, where each
    value is a cast's result), so that the bounds that pick a fast path are first tried
    from the formats alone, without scanning x; the data are scanned only when that
    proof falls short. `value_range(a)` gives (min, max) of w and b (the Emulator caches
    them for its parameters); by default they are computed. Neither changes a result."""
    if method not in ("auto", "sequential"):
        raise ValueError(f"method {method!r}; accepted: 'auto', 'sequential'")
    fracs = (frac_bits(fx), frac_bits(fw))
    if None in fracs:  # block floating point: a float64 sum, rounded once to result
        y = spec.float_dot(node, x, w)
        return _add_bias(spec, y, b, x, w) if b is not None else y
    if accum is not None and not is_fixed(accum):
        raise PrecisionError(f"{node}: accum format {accum} is a block format; accum must be ap_fixed or 'auto'")
    rng = value_range or _value_range
    prod_frac = fracs[0] + fracs[1]
    k = int(spec.reduce_len(w))
    w_lo, w_hi = rng(w)
    wmax = max(-w_lo, w_hi)
    x_fmt_max = _format_absmax(fx) if in_range else math.inf  # the static bound of |x|
    if accum is None:  # 'auto': an accumulator as wide as the exact sum
        bias_frac = frac_bits(fb) if b is not None and fb is not None else None
        units = max(prod_frac, prod_frac if bias_frac is None else bias_frac)
        b_lo, b_hi = rng(b) if b is not None else (0.0, 0.0)
        bmax = max(-b_lo, b_hi)
        bound = k * x_fmt_max * wmax + bmax
        if not bound * 2.0 ** units < _EXACT_UNITS:  # the formats do not prove it: the data may
            bound = k * _absmax(x) * wmax + bmax
        elif (method == "auto" and in_range and spec.matrix is matmul_matrix and x.ndim == 2 and w.ndim == 2
              and is_fixed(fx) and is_fixed(fw) and (b is None or is_fixed(fb)) and bound * 2.0 ** units < 2.0 ** 52):
            # a batch of 2-D products (the recurrent layers'): exact integer sums, compiled; the
            # "result" a 53-bit type on the sums' grid that holds every one of them (the identity)
            acc = _fused_dot(spec, node, x, w, b, fx, fw, fb, _AccumOnly(None, _sums_type(units)), None,
                             window=matmul_window)
            if acc is not None:
                return acc
        # the bias is the caller's own array (the Emulator's parameter): a Conv plan may keep it
        return _exact_sum(spec, node, x, w, b, units, bound, None, stable_bias=value_range is not None)

    A = accum
    b_acc = A.quantize(b) if b is not None else None  # hls4ml: acc = (accum_t) bias
    counts = _COUNTS.get()
    bias_units = A.frac_bits if not is_fixed(fb) else min(A.frac_bits, fb.frac_bits)
    units = max(prod_frac, bias_units) if b is not None else prod_frac
    on_grid = A.frac_bits >= prod_frac  # products land on accum's grid: nothing ever rounds
    # the whole batch in one compiled pass (wrapping accum_t, a 2-D product): the accumulator's
    # values are the kernel's output cast to accum_t itself (the identity on wrapped sums)
    if (method == "auto" and counts is None and in_range and spec.cast_products and x.ndim == 2
            and w.ndim == 2 and spec.matrix is matmul_matrix):
        acc = _fused_dot(spec, node, x, w, b, fx, fw, fb,
                         _AccumOnly(A), None, window=matmul_window)
        if acc is not None:
            return acc
    # integers, compiled (conveyor.ops.intdot): hls4ml's Dense loop, each product cast first
    if method == "auto" and spec.matrix is not None and spec.cast_products:
        xmax_fmt = x_fmt_max if in_range else _absmax(x)
        acc = _int_dot(spec, node, x, w, b_acc, fracs, A, xmax_fmt, wmax, counts)
        if acc is not None:
            return acc
    if method == "auto" and on_grid and in_range:
        # From the formats alone: x in fx's range, w and b as they are.
        nonneg = _format_range(fx)[0] >= 0 and (w.size == 0 or w_lo >= 0)
        blo, bhi = (float(b_acc.min()), float(b_acc.max())) if b_acc is not None and b_acc.size else (0.0, 0.0)
        pmax = x_fmt_max * wmax
        s = k * pmax
        bound = s + max(-blo, bhi)
        if (_fits(A, 0.0 if nonneg else -pmax, pmax) and _fits(A, blo - (0.0 if nonneg else s), bhi + s)
                and bound * 2.0 ** units < _EXACT_UNITS):
            return _exact_sum(spec, node, x, w, b_acc, units, bound, A)
    xmax = _absmax(x)
    if method == "auto" and on_grid:
        nonneg = bool(x.size == 0 or x.min() >= 0) and bool(w.size == 0 or w_lo >= 0)
        blo, bhi = (float(b_acc.min()), float(b_acc.max())) if b_acc is not None and b_acc.size else (0.0, 0.0)
        pmax = xmax * wmax
        s = k * pmax
        if _fits(A, 0.0 if nonneg else -pmax, pmax) and _fits(A, blo - (0.0 if nonneg else s), bhi + s):
            return _exact_sum(spec, node, x, w, b_acc, units, s + _absmax(b_acc), A)
        if A.overflow == "WRAP" and A.sat_bits == 0 and counts is None:
            return _wrapped_sum(spec, node, x, w, fracs, b_acc, A, units, s + _absmax(b_acc))
        if _fits(A, 0.0 if nonneg else -pmax, pmax):
            # A tighter bound per output: sum_k |x_k| |w_k| (one more product).
            sabs = spec.float_dot(node, np.abs(x), np.abs(w)) * (1.0 + (k + 1) * 2.0 ** -52)
            bb = _shaped_bias(spec, b_acc, sabs) if b_acc is not None else 0.0
            hi = float(np.max(bb + sabs)) if sabs.size else 0.0
            lo = float(np.min(bb if nonneg else bb - sabs)) if sabs.size else 0.0
            if _fits(A, lo, hi):
                return _exact_sum(spec, node, x, w, b_acc, units, max(abs(lo), abs(hi)), A, per_output=True)
    if not spec.cast_products:
        return _sequential_sums(spec, node, x, w, fracs, b_acc, A, xmax * wmax, k)
    return _sequential(spec, node, x, w, fracs, b_acc, A, units, xmax * wmax, k, method)


@cache
def _sums_type(units: int):
    """A 53-bit type on the 2^-units grid: it holds every exact sum `accumulate` proves below 2^52
    units (made once per grid, not per call)."""
    from conveyor.numerics.fixed import FixedType

    return FixedType(53, 53 - units)


def _sequential_sums(spec, node, x, w, fracs, b_acc, A, pmax: float, k: int) -> np.ndarray:
    """hls4ml's einsum loop (nnet_einsum.h), vectorized over the outputs: ``acc = (accum_t)(acc +
    x[k] * w[k])``, the exact product added to the running sum and only that sum cast. (With
    AP_TRN, AP_RND or AP_RND_MIN_INF and no overflow this equals casting the products first, as
    rounding commutes with adding a grid value; AP_RND_CONV, the sign-symmetric modes and
    saturation tell them apart.)"""
    units = max(A.frac_bits, fracs[0] + fracs[1])
    lo, hi = _acc_range(A)
    if (max(-lo, hi) + pmax) * 2.0 ** units >= _EXACT_UNITS:
        raise PrecisionError(
            f"{node}: accumulator {A} plus products of {fracs[0]}- and {fracs[1]}-fractional-bit values reach "
            f"{max(-lo, hi) + pmax:.3g} on a 2^-{units} grid, beyond float64's exact range (53 bits); "
            "bit-accurate emulation needs narrower formats")
    n_taps, shape, term = spec.taps(node, x, w)
    if b_acc is not None:
        acc = np.array(np.broadcast_to(_shaped_bias(spec, b_acc, np.broadcast_to(0.0, shape)), shape), np.float64)
    else:
        acc = np.zeros(shape, np.float64)
    counts = _COUNTS.get()
    for i in range(n_taps):
        acc += np.asarray(term(i), dtype=np.float64)  # exact: both on the 2^-units grid, below 2^53 units
        if counts is not None:
            from conveyor.numerics.cast import overflow_count

            counts.sums += overflow_count(acc, A)
        acc = A.quantize(acc)
    return acc


#: `_fused_dot` only for batches of at least this many samples, and with an exact accumulator
#: only for dot products of at most this many taps per output (beyond, BLAS is faster; on the
#: 2-core development machine the CNN's convolutions and Dense 400->10 ran faster fused, CPU
#: time, and the MLP's Dense layers 2x faster); `_FUSED_EXACT_DENSE` False keeps 2-D products on BLAS
_FUSED_MIN_BATCH = 32
#: the same for a 2-D product (Dense, Gemm, MatMul by weights: x [M, K]): below this many rows,
#: float64 BLAS and the compiled result cast are faster (measured on the development machine,
#: exact accumulator, ap_fixed<18,8>: 32x64 @ 64x64 11 against 40-75 us, 32x64 @ 64x192 38
#: against 100-140, 64x64 @ 64x64 29-44 against 60-82; from 128 rows on the fused kernel wins
#: or ties). Both give the same bits (exact sums, or the lossy accumulator's integer loop).
_FUSED_MIN_ROWS_2D = 128
_FUSED_MAX_EXACT_TAPS = 512
_FUSED_EXACT_DENSE = True


@dataclass(frozen=True)
class _AccumOnly:
    """A node precision whose result is its accumulator (`accumulate`'s output), or a given
    type that holds every exact sum."""

    accum: Any
    exact: Any = None

    @property
    def result(self):
        return self.accum if self.exact is None else self.exact


def _fused_dot(spec, node, x, w, b, fx, fw, fb, prec, ctx, window=None, relu: bool = False,
               pool: bool = False) -> np.ndarray | None:
    """The whole node, accumulator and result cast, in one compiled pass on raw integers
    (`intdot.conv_fused`), when every cast in it is one that kernel computes exactly and no
    int64 can overflow; None otherwise (the caller takes `accumulate`, then `ctx.cast`).
    Not for observing runs (no overflow is counted here).

    Exact accumulator ('auto'): products and bias as integers on the finer of their grids,
    summed exactly in int64 (any order). Lossy accum_t with AP_WRAP, N = 0, products cast:
    each product rounded to accum's grid (a shift), the rounded products summed in int64 and
    wrapped once to accum's width (every cast a reduction mod 2^W: any order gives the
    bits of hls4ml's loop). Saturating accumulators keep the tap loop (`accumulate`).
    `relu`: the result then goes through max(., 0) (a following Relu whose cast is the
    identity, which the Emulator then skips); `pool`: then through a 2x2 MaxPool of stride 2
    (its cast the identity: the Emulator skips it too)."""
    from conveyor.ops import intdot

    if x.ndim < 2 or x.shape[0] < (_FUSED_MIN_ROWS_2D if x.ndim == 2 else _FUSED_MIN_BATCH):
        return None  # the kernel vectorises over the batch: a few samples take the im2col/BLAS paths
    R, A = prec.result, prec.accum
    if not (intdot.available() and is_fixed(fx) and is_fixed(fw) and is_fixed(R) and intdot.fusable_result(R)):
        return None
    if b is not None and not is_fixed(fb):
        return None
    if A is not None and not (is_fixed(A) and A.overflow == "WRAP" and A.sat_bits == 0 and A.width <= 62
                              and spec.cast_products):
        return None
    if x.ndim < 2 or x.shape[0] < _FUSED_MIN_BATCH:
        return None  # the kernel vectorises over the batch: a few samples take the im2col/BLAS paths
    if A is None and ((x.ndim < 3 and not _FUSED_EXACT_DENSE) or int(spec.reduce_len(w)) > _FUSED_MAX_EXACT_TAPS):
        return None  # exact sums of long dot products: float64 BLAS is faster
    lay = (window or spec.window)(node, x, w)
    if lay is None:
        return None
    xp, wk, strides, dilations, out_hw, out_shape = lay
    if pool:  # a 2x2 MaxPool of stride 2 after it (the Emulator checked its attributes)
        if len(out_shape) != 4 or min(out_hw) < 2:
            return None
        out_shape = tuple(out_shape[:2]) + (out_hw[0] // 2, out_hw[1] // 2)
    n_out = wk.shape[3]
    if b is not None and b.size not in (1, n_out):
        return None
    rng = getattr(ctx, "value_range", None) or _value_range
    w_lo, w_hi = rng(w)
    wmax = max(-w_lo, w_hi)
    xmax = _format_absmax(fx)
    k = int(spec.reduce_len(w))
    pf = fx.frac_bits + fw.frac_bits  # the products' grid
    if A is None:
        units = max(pf, fb.frac_bits) if b is not None else pf
        s = 0
        lift = units - pf
        b_lo, b_hi = rng(b) if b is not None else (0.0, 0.0)
        bound = (k * xmax * wmax + max(-b_lo, b_hi)) * 2.0 ** units  # |every partial sum|, raw
        if b is not None:
            braw = b * 2.0 ** units
    else:
        units = A.frac_bits
        s = pf - units
        lift = max(0, -s)
        s = max(0, s)
        if b is not None:
            braw = A.quantize(b) * 2.0 ** units  # hls4ml: acc = (accum_t) bias
        # |a product| (before its shift), and |the wrapped accumulator|
        bound = max(xmax * wmax * 2.0 ** (pf + lift), 2.0 ** A.width)
        if not k * (xmax * wmax * 2.0 ** (pf - s + lift) + 1) + 2.0 ** A.width < 2.0 ** 62:
            return None  # the sum of rounded products (wrapping mod 2^64 is harmless, but keep it simple)
    wraw = wk * 2.0 ** (fw.frac_bits + lift)
    d = units - R.frac_bits
    if not (bound < 2.0 ** 62 and (d >= 0 or bound * 2.0 ** -d < 2.0 ** 62)
            and xmax * 2.0 ** fx.frac_bits < 2.0 ** 62 and wmax * 2.0 ** (fw.frac_bits + lift) < 2.0 ** 62):
        return None
    bias = np.zeros(n_out, np.int64) if b is None else np.broadcast_to(
        np.asarray(braw, np.float64).reshape(-1), (n_out,)).astype(np.int64)
    narrow = (A is not None and A.width <= 32 and xmax * wmax * 2.0 ** (pf + lift) + 2.0 ** s < 2.0 ** 31
              and xmax * 2.0 ** fx.frac_bits < 2.0 ** 31 and wmax * 2.0 ** (fw.frac_bits + lift) < 2.0 ** 31)
    y = intdot.conv_fused(xp, fx.frac_bits, wraw.astype(np.int64), bias, strides, dilations, out_hw, s,
                          A.rounding if A is not None else "TRN", A, d, R, narrow=narrow, relu=relu, pool=pool)
    return y.reshape(out_shape)


def matmul_window(node, x: np.ndarray, w: np.ndarray):
    """A 2-D x [M, K] @ w [K, N] as `DotSpec.window`: a 1x1 convolution of M samples of
    K channels (taps k ascending, hls4ml's Dense order)."""
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        return None
    m, k = x.shape
    return (x.reshape(m, k, 1, 1), w.reshape(1, 1, k, w.shape[1]), (1, 1), (1, 1), (1, 1), (m, w.shape[1]))


#: rows of X per call of the integer kernels (bounds the im2col copy)
_INT_BLOCK_BYTES = 16 << 20


def _int_dot(spec, node, x, w, b_acc, fracs, A, xmax: float, wmax: float, counts) -> np.ndarray | None:
    """hls4ml's loop for the lossy accumulator A on raw integers (conveyor.ops.intdot), or
    None when numba is absent or the values do not fit its machine integers."""
    from conveyor.ops import intdot

    if not intdot.available() or A.width > 62 or (A.overflow == "WRAP" and A.sat_bits):
        return None
    if A.overflow not in ("WRAP", "SAT", "SAT_SYM") or (A.overflow == "SAT_SYM" and A.signed and A.width == 1):
        return None
    fx, fw = fracs
    s = fx + fw - A.frac_bits  # the fractional bits a product drops (< 0: it gains them)
    lift = 2.0 ** max(0, -s)
    pmax = xmax * 2.0 ** fx * wmax * 2.0 ** fw * lift
    if not pmax < 2.0 ** 62:
        return None
    wrap_sum = A.overflow == "WRAP" and counts is None
    xraw, wraw = xmax * 2.0 ** fx, wmax * 2.0 ** fw * lift
    if not (xraw < 2.0 ** 62 and wraw < 2.0 ** 62):
        return None
    small = (wrap_sum and A.width <= 32 and pmax + 2.0 ** max(s, 0) < 2.0 ** 31
             and xraw < 2.0 ** 31 and wraw < 2.0 ** 31)
    dt = np.int32 if small else np.int64
    wi = (w * (2.0 ** fw * lift)).astype(dt)
    braw = None if b_acc is None else np.asarray(b_acc * 2.0 ** A.frac_bits).astype(np.int64)
    s = max(s, 0)
    lo, hi = _acc_range(A)
    unit = 2.0 ** A.frac_bits
    if A.overflow == "WRAP":
        how, clo, chi = intdot.WRAP, 0, 0
    else:
        bottom = -A.max_value if A.overflow == "SAT_SYM" and A.signed else A.min_value
        how, clo, chi = intdot.CLIP, int(round(bottom * unit)), int(round(A.max_value * unit))
    tally = np.zeros(2, np.int64)

    xi = np.multiply(x, 2.0 ** fx).astype(dt)  # exact: x lies on its 2^-fx grid

    def run(xs):
        form = spec.matrix(node, xs, wi)
        if form is None:
            return None
        xg, wg, assemble = form
        n_out = sum(m.shape[1] for m in wg)
        if braw is None:
            bvec = np.zeros(n_out, np.int64)
        elif braw.size in (1, n_out):
            bvec = np.broadcast_to(braw.reshape(-1), (n_out,))
        else:
            return None
        accs, j0 = [], 0
        for X, Wm in zip(xg, wg):
            X, Wm = np.ascontiguousarray(X), np.ascontiguousarray(Wm)
            b = np.ascontiguousarray(bvec[j0:j0 + Wm.shape[1]])
            j0 += Wm.shape[1]
            if wrap_sum:
                accs.append(intdot.sum_rounded(X, Wm, b, s, A.rounding))
            else:
                accs.append(intdot.literal(X, Wm.astype(np.int64), b, s, A.rounding, how, A.width, A.signed,
                                           int(round(lo * unit)), int(round(hi * unit)), clo, chi, tally))
        return assemble(accs)

    if spec.rows and x.ndim >= 2 and x.shape[0] > 1:
        per_row = 8 * max(1, int(np.prod(x.shape[1:], dtype=np.int64))) * max(1, int(spec.reduce_len(w)))
        step = max(1, _INT_BLOCK_BYTES // per_row)
        raw = None
        for i in range(0, x.shape[0], step):
            part = run(xi[i:i + step])
            if part is None:
                return None
            if raw is None:
                raw = np.empty((x.shape[0],) + part.shape[1:], part.dtype)
            raw[i:i + step] = part
    else:
        raw = run(xi)
        if raw is None:
            return None
    if counts is not None:
        counts.products += int(tally[0])
        counts.sums += int(tally[1])
    if wrap_sum:  # the exact sum's low W bits (in place), read back signed or unsigned
        bits = 8 * raw.dtype.itemsize
        free = raw.dtype.type(bits - A.width)
        if A.signed:
            np.left_shift(raw, free, out=raw)
            np.right_shift(raw, free, out=raw)
        else:
            np.bitwise_and(raw, raw.dtype.type((1 << A.width) - 1), out=raw)
    return np.multiply(raw, 1.0 / unit, dtype=np.float64)


def _absmax(a: np.ndarray | None) -> float:
    """max |a| (0 for None or empty) without a temporary |a|."""
    if a is None or a.size == 0:
        return 0.0
    lo, hi = _value_range(a)
    return max(-lo, hi)


def _value_range(a: np.ndarray | None) -> tuple[float, float]:
    if a is None or a.size == 0:
        return 0.0, 0.0
    return float(np.min(a)), float(np.max(a))


@cache
def _format_range(fmt) -> tuple[float, float]:
    """(min, max) of an ap_fixed format's values."""
    return fmt.min_value, fmt.max_value


def _format_absmax(fmt) -> float:
    """The largest |value| an ap_fixed format holds."""
    lo, hi = _format_range(fmt)
    return max(-lo, hi)


def _owned(acc: np.ndarray, *operands) -> dict:
    """`inplace=True` for ctx.cast when `acc` is a fresh array the operands do not share."""
    fresh = isinstance(acc, np.ndarray) and acc.flags.writeable and not any(
        a is not None and np.may_share_memory(acc, a) for a in operands)
    return {"inplace": True} if fresh else {}


def _add_bias(spec, y, b, *operands):
    """y + bias, in place when y is a fresh array the bias broadcasts into."""
    bb = _shaped_bias(spec, b, y)
    if isinstance(y, np.ndarray) and _fits_into(np.shape(bb), y.shape) and _owned(y, *operands, b):
        y += bb
        return y
    return y + bb


def _fits_into(small: tuple, shape: tuple) -> bool:
    """Whether an array of shape `small` broadcasts into `shape` without growing it (what
    np.broadcast_shapes(shape, small) == shape says, without its cost)."""
    if len(small) > len(shape):
        return False
    return all(s == 1 or s == d for s, d in zip(small[::-1], shape[::-1]))


def _shaped_bias(spec: DotSpec, b: np.ndarray, y: np.ndarray) -> np.ndarray:
    return spec.bias_shape(b, y) if spec.bias_shape else b


@cache
def _acc_range(A) -> tuple[float, float]:
    """The values accum_t holds without an overflow event (AP_SAT_SYM treats its minimum
    as an underflow)."""
    lo = A.min_value
    if A.overflow == "SAT_SYM" and A.signed:
        lo += A.lsb
    return lo, A.max_value


def _fits(A, lo: float, hi: float) -> bool:
    a_lo, a_hi = _acc_range(A)
    return a_lo <= lo and hi <= a_hi


def _exact_sum(spec, node, x, w, b, units: int, bound: float, A, per_output: bool = False,
               stable_bias: bool = False) -> np.ndarray:
    """float64 BLAS sum of the grid values: exact because every partial sum is an integer
    multiple of 2^-units below 2^53 of them (`bound` bounds them all).

    A float_dot marked `takes_exact_bits` (Conv's) is told the proof: `exact_bits`, how many
    bits `bound` * 2^units lies below 2^53, so that it may take a method whose intermediates
    grow past the direct sum's (Winograd) when they still fit. Only a bound of the form
    K max|x| max|w| + max|b| proves that (a `per_output` bound, sum_k |x_k||w_k| per output,
    does not bound the other methods' intermediates): then no proof is passed."""
    if bound * 2.0 ** units >= _EXACT_UNITS:
        what = "'auto' accumulator" if A is None else f"accumulator {A}"
        raise PrecisionError(
            f"{node}: sums reach {bound:.3g} on a 2^-{units} grid, beyond float64's exact range (2^53 "
            f"units), for the {what}; narrower weight/activation formats are needed for bit-accurate emulation"
        )
    if getattr(spec.float_dot, "takes_exact_bits", False) and not per_output:
        exact_bits = math.inf if bound <= 0 else 53.0 - units - math.log2(bound)
        if stable_bias and b is not None and b.ndim == 1 and getattr(spec.float_dot, "takes_bias", False):
            return spec.float_dot(node, x, w, exact_bits=exact_bits, bias=b)  # added in the plan's pass
        y = spec.float_dot(node, x, w, exact_bits=exact_bits)
    elif spec.matrix is matmul_matrix and x.ndim > 2 and w.ndim == 2 and x.flags.c_contiguous:
        # rows of a 3-D x (a sequence's tokens, [T, 1, K] or [1, T, K]) times weights: one
        # 2-D product, not T stacked ones (numpy's matmul of a stack: 3x slower at 32 x 64 @
        # 64 x 192); exact sums, so the same values whatever order BLAS adds them in
        y = (x.reshape(-1, x.shape[-1]) @ w).reshape(x.shape[:-1] + w.shape[1:])
    else:
        y = spec.float_dot(node, x, w)
    if b is not None:
        y = _add_bias(spec, y, b, x, w)
    return y


def _check_values_exact(node, A, units: int) -> None:
    """Accumulator values (and a sum of two of them) must be exact doubles."""
    if A.integer + units + (not A.signed) > 53:
        raise PrecisionError(
            f"{node}: accumulator {A} holds values on a 2^-{units} grid up to 2^{A.integer}, beyond float64's "
            "exact range (53 bits); bit-accurate emulation of this lossy accumulator needs "
            "integer bits + fractional bits <= 53"
        )


def _wrapped_sum(spec, node, x, w, fracs, b_acc, A, units: int, bound: float) -> np.ndarray:
    """accum_t with AP_WRAP, N = 0, every product on its grid: each cast and each addition is
    reduction mod 2^W of an exact integer, so the loop equals the exact sum wrapped once,
    in any order."""
    _check_values_exact(node, A, units)
    if bound * 2.0 ** units < _EXACT_UNITS:
        return A.quantize(_exact_sum(spec, node, x, w, b_acc, units, bound, A))
    if A.width > 63:
        raise PrecisionError(f"{node}: sums reach {bound:.3g} on a 2^-{units} grid and accumulator {A} is wider "
                             "than 63 bits; bit-accurate emulation needs one or the other to be smaller")
    # Two (or more) limbs: x and w as integers split into h-bit pieces, each product of
    # pieces summed exactly by BLAS, recombined modulo 2^64 (then 2^W).
    k = max(1, int(spec.reduce_len(w)))
    h = max(1, (52 - math.ceil(math.log2(k + 1))) // 2)
    xl = _limbs(x * 2.0 ** fracs[0], h)
    wl = _limbs(w * 2.0 ** fracs[1], h)
    shift0 = A.frac_bits - (fracs[0] + fracs[1])
    total = None
    for i, xi in enumerate(xl):
        for j, wj in enumerate(wl):
            s = spec.float_dot(node, xi, wj)
            if total is None:
                total = np.zeros(s.shape, dtype=np.uint64)
            sh = h * (i + j) + shift0
            if sh < 64:
                total += s.astype(np.int64).view(np.uint64) << np.uint64(sh)
    if b_acc is not None:
        braw = (b_acc * 2.0 ** A.frac_bits).astype(np.int64).view(np.uint64)
        total += _shaped_bias(spec, braw, total)
    free = np.uint64(64 - A.width)  # the low W bits, read as signed (arithmetic shift) or unsigned
    raw = ((total << free).view(np.int64) >> free.astype(np.int64) if A.signed else (total << free) >> free)
    return raw.astype(np.float64) * 2.0 ** -A.frac_bits + 0.0


def _limbs(r: np.ndarray, h: int) -> list[np.ndarray]:
    """Integer-valued doubles `r` as sum_i limb_i * 2^(h i): low limbs in [0, 2^h), the top
    one in [-2^h, 2^h)."""
    bits = int(_absmax(r)).bit_length()
    out, rest = [], r
    for _ in range(max(1, -(-bits // h)) - 1):
        lo = np.mod(rest, 2.0 ** h)
        out.append(lo)
        rest = (rest - lo) * 2.0 ** -h
    out.append(rest)
    return out


def _sequential(spec, node, x, w, fracs, b_acc, A, units: int, pmax: float, k: int, method: str) -> np.ndarray:
    """hls4ml's loop, vectorized over the outputs: per tap, cast the products to accum_t,
    add, cast the sums to accum_t."""
    prod_frac = fracs[0] + fracs[1]
    on_grid = A.frac_bits >= prod_frac
    if pmax * 2.0 ** prod_frac > _EXACT_UNITS:
        raise PrecisionError(
            f"{node}: products of {fracs[0]}- and {fracs[1]}-fractional-bit values reach {pmax:.3g}, beyond "
            "float64's exact range (53 bits); bit-accurate emulation of a lossy accumulator needs narrower "
            "weight/activation formats"
        )
    _check_values_exact(node, A, units if on_grid else A.frac_bits)
    # Products below 2^52 raw units round with a few exact float64 operations.
    fast_round = pmax * 2.0 ** prod_frac < 2.0 ** 52
    # AP_WRAP, N = 0 with rounding products: the casts of the sums are reductions mod 2^W,
    # so the rounded products may be summed exactly and wrapped once (any order).
    deferred = (method == "auto" and _COUNTS.get() is None and not on_grid and fast_round and A.overflow == "WRAP" and A.sat_bits == 0
                and (_absmax(b_acc) + k * (pmax + A.lsb)) * 2.0 ** A.frac_bits < _EXACT_UNITS)
    if method == "sequential":
        mode = "literal"  # the reference: FixedType.quantize for every cast
    else:
        mode = "deferred" if deferred else "grid" if on_grid else "round" if fast_round else "quantize"
    if spec.rows and x.ndim >= 2 and x.shape[0] > 1:
        _, shape, term = spec.taps(node, x[:1], w)
        block_bytes = _SEQ_BLOCK_BYTES if hasattr(term, "block") else _SEQ_BLOCK_BYTES_PER_TAP
        step = max(1, block_bytes // max(1, 8 * int(np.prod(shape, dtype=np.int64))))
        if step < x.shape[0]:
            return np.concatenate([
                _sequential_block(spec, node, x[i:i + step], w, b_acc, A, mode)
                for i in range(0, x.shape[0], step)
            ])
    return _sequential_block(spec, node, x, w, b_acc, A, mode)


def _sequential_block(spec, node, x, w, b_acc, A, mode: str) -> np.ndarray:
    # "deferred" and "round" work in accum LSB units: products of x and w * 2^F (exact).
    units = mode in ("deferred", "round")
    scale = 2.0 ** A.frac_bits if units else 1.0
    n_taps, shape, term = spec.taps(node, x, w * scale if units else w)
    if b_acc is not None:
        acc = np.array(np.broadcast_to(_shaped_bias(spec, b_acc, np.broadcast_to(0.0, shape)), shape), np.float64)
        acc *= scale
    else:
        acc = np.zeros(shape, np.float64)
    lo, hi = _acc_range(A)
    lo, hi = lo * scale, hi * scale
    block = getattr(term, "block", None)
    if mode == "deferred" and block is None:  # sums of rounded products, wrapped at the end
        for i in range(n_taps):
            acc += _round_units(np.asarray(term(i), dtype=np.float64), A.rounding, inplace=True)
    elif mode in ("deferred", "round", "grid") and block is not None:
        acc = _tap_groups(term, block, n_taps, shape, acc, A, lo, hi, scale, mode)
    else:
        for i in range(n_taps):
            acc = _tap_step(term(i), acc, A, lo, hi, scale, mode)
    if mode == "deferred":
        acc *= 1.0 / scale
        return A.quantize(acc)
    if units:
        acc *= 1.0 / scale
    return acc


def _tap_step(p, acc, A, lo: float, hi: float, scale: float, mode: str) -> np.ndarray:
    """One tap of hls4ml's loop: ``acc += (accum_t) p; acc = (accum_t) acc``."""
    p = np.asarray(p, dtype=np.float64)
    if mode == "grid":
        acc += _overflow(p, A, lo, hi, scale, what="products")
    elif mode == "round":
        acc += _overflow(_round_units(p, A.rounding, inplace=False), A, lo, hi, scale, unrounded=p, what="products")
    else:
        counts = _COUNTS.get()
        if counts is not None:
            from conveyor.numerics.cast import overflow_count

            counts.products += overflow_count(p * (1.0 / scale), A)
        acc += A.quantize(p)
    return A.quantize(acc) if mode == "literal" else _overflow(acc, A, lo, hi, scale, what="sums")


def _tap_groups(term, block, n_taps: int, shape, acc, A, lo: float, hi: float, scale: float,
                mode: str) -> np.ndarray:
    """The taps a group at a time (`term.block(i0, i1)`: the products of taps i0..i1-1 stacked
    along a new axis 0), a few whole-array operations per group instead of a few per tap.
    "deferred": the rounded products are summed (exact integers). "round"/"grid": when no
    rounded product and no partial sum (the running sums in tap order, exact while in
    range) leaves accum's range, every cast of the loop is the identity and the group adds
    its plain sum; otherwise that group runs tap by tap."""
    per_tap = max(1, int(np.prod(shape, dtype=np.int64)))
    g = max(1, _GROUP_BYTES // (8 * per_tap))
    for i0 in range(0, n_taps, g):
        i1 = min(n_taps, i0 + g)
        P = np.asarray(block(i0, i1), dtype=np.float64)
        if mode != "grid":
            _round_units(P, A.rounding, inplace=True)
        if mode == "deferred":
            acc += P.sum(axis=0)
            continue
        if P.size and lo <= float(P.min()) and float(P.max()) <= hi:
            P[0] += acc  # the partial sums, in place (slab by slab: cumsum along axis 0 is slow)
            for j in range(1, len(P)):
                P[j] += P[j - 1]
            if lo <= float(P.min()) and float(P.max()) <= hi:
                acc[...] = P[-1]
                continue
        for i in range(i0, i1):  # something overflows: the loop itself
            acc = _tap_step(term(i), acc, A, lo, hi, scale, mode)
    return acc


def _overflow(v: np.ndarray, A, lo: float, hi: float, scale: float, unrounded: np.ndarray | None = None,
              what: str | None = None) -> np.ndarray:
    """`(accum_t) v` for `v` (in units of 1/scale) on accum's grid after rounding, where only
    overflow can change a value: in-range arrays come back as they are, saturation is a
    clip; other modes cast the out-of-range values (from `unrounded` when given: AP_WRAP_SM
    looks at the bits before rounding). May modify `v`."""
    if v.size == 0:
        return v
    if lo <= float(v.min()) and float(v.max()) <= hi:
        return v
    counts = _COUNTS.get() if what else None
    if counts is not None:  # an observing run: count this cast's overflow events
        setattr(counts, what, getattr(counts, what) + int(np.count_nonzero((v < lo) | (v > hi))))
    if A.overflow == "SAT" or (A.overflow == "SAT_SYM" and (A.width > 1 or not A.signed)):
        bottom = -A.max_value if A.overflow == "SAT_SYM" and A.signed else A.min_value
        np.clip(v, bottom * scale, A.max_value * scale, out=v)
        return v
    bad = (v < lo) | (v > hi)
    src = v if unrounded is None else unrounded
    v[bad] = A.quantize(src[bad] * (1.0 / scale)) * scale
    return v


def _round_units(t: np.ndarray, rounding: str, inplace: bool) -> np.ndarray:
    """`t` rounded to an integer by an ap_fixed rounding mode, as float64. Exact when
    |t| < 2^52 with at most 52 significant bits: then `t +- 1/2` is exact and each mode
    is one floor/ceil/rint."""
    out = t if inplace else np.empty_like(t)
    if rounding == "TRN":
        return np.floor(t, out=out)
    if rounding == "TRN_ZERO":
        return np.trunc(t, out=out)
    if rounding == "RND_CONV":
        return np.rint(t, out=out)
    if rounding == "RND":  # ties towards +inf
        np.add(t, 0.5, out=out)
        return np.floor(out, out=out)
    if rounding == "RND_MIN_INF":  # ties towards -inf
        np.subtract(t, 0.5, out=out)
        return np.ceil(out, out=out)
    a = np.abs(t)
    if rounding == "RND_INF":  # ties away from 0
        a += 0.5
        np.floor(a, out=a)
    else:  # RND_ZERO: ties towards 0
        a -= 0.5
        np.ceil(a, out=a)
    return np.copysign(a, t, out=out)


def matmul_taps(a: np.ndarray, b: np.ndarray):
    """numpy.matmul(a, b) as taps: term(k) = a[..., :, k] (outer) b[..., k, :], k ascending,
    which is hls4ml's order for Dense (data index ii = 0 .. n_in-1)."""
    k = a.shape[-1]
    shape = np.matmul(a[..., :0], b[..., :0, :] if b.ndim > 1 else b[:0]).shape
    if a.ndim == 1 and b.ndim == 1:
        return k, shape, lambda i: np.asarray(a[i] * b[i], dtype=np.float64)
    if a.ndim == 1:
        return k, shape, lambda i: a[i] * b[..., i, :]
    if b.ndim == 1:
        return k, shape, lambda i: a[..., i] * b[i]

    def term(i):
        return a[..., :, i, None] * b[..., i, None, :]

    if a.ndim == 2 and b.ndim == 2:  # Dense: n rows, the long axis, innermost in memory
        a_t = []

        def block(i0, i1):  # taps i0 .. i1-1 at once, stacked along a new axis 0: (i1 - i0, n, m)
            if not a_t:
                a_t.append(np.ascontiguousarray(a.T))
            return (b[i0:i1, :, None] * a_t[0][i0:i1, None, :]).transpose(0, 2, 1)

        term.block = block
        return k, shape, term

    def block(i0, i1):  # taps i0 .. i1-1 at once, stacked along a new axis 0: (i1 - i0, *shape)
        ag = np.moveaxis(a[..., :, i0:i1], -1, 0)  # (g, *a_batch, n)
        bg = np.moveaxis(b[..., i0:i1, :], -2, 0)  # (g, *b_batch, m)
        nb = len(shape) - 2  # broadcast batch axes
        ag = ag.reshape(ag.shape[:1] + (1,) * (nb - a.ndim + 2) + ag.shape[1:] + (1,))
        bg = bg.reshape(bg.shape[:1] + (1,) * (nb - b.ndim + 2) + bg.shape[1:-1] + (1, bg.shape[-1]))
        return ag * bg

    term.block = block
    return k, shape, term


def matmul_matrix(node, x: np.ndarray, w: np.ndarray):
    """A 2-D x @ w as `DotSpec.matrix`: one group, taps k ascending (hls4ml's Dense order)."""
    if x.ndim != 2 or w.ndim != 2:
        return None
    return [x], [w], lambda accs: accs[0]


def conv_bias_shape(b: np.ndarray, y: np.ndarray) -> np.ndarray:
    return b.reshape((1, -1) + (1,) * (y.ndim - 2))


__all__: Sequence[str] = ["DotSpec", "accumulate", "conv_bias_shape", "dot", "exact_then_cast", "matmul_matrix", "matmul_taps", "matmul_window",
                          "movement", "prepared_movement", "result_axis"]
