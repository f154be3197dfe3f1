"""Elementwise math the exporters write for modern nets: Sqrt, Reciprocal, Exp, Erf, Pow
(LayerNorm and GELU written out), HardSigmoid, HardSwish (MobileNetV3), Gelu (opset 20).

Float reference kernels (in the input's precision: float32 for float32) and bit-accurate kernels (docs/numerics.md,
"Nonlinear functions"): HardSigmoid is hls4ml's `nnet::hard_sigmoid` (slope and shift in
`tables.hard_sigmoid`'s types), HardSwish x times it; Exp, Sqrt, Reciprocal, Erf and Gelu
read conveyor's own range tables (`lut.own_table`, addressed like hls4ml's sigmoid table;
hls4ml has no HLS implementation of them); Pow takes a constant exponent: a positive
integer (exact products), 0.5 (the Sqrt table) or -1 (the Reciprocal table).
"""

from __future__ import annotations

import math

import numpy as np

from conveyor.errors import ModelError, PrecisionError
from conveyor.ops import fixed, lut
from conveyor.ops.registry import OpDef, attr_error, register

try:  # vectorised; cephes' erf is within 3 ulp of libm's math.erf in float64 (200,000 normal
    # samples, float32 results equal). scipy comes with scikit-learn (the `data` and `test` extras)
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - depends on the install
    _erf = np.frompyfunc(math.erf, 1, 1)


def _same(node, ins):
    return [(ins[0].shape, ins[0].dtype)]


def _float_kernel(fn):
    """The float kernel: float32 (and float16) inputs compute in float32, as onnxruntime does,
    float64 ones in float64; the result has the input's dtype."""
    def run(node, x):
        a = np.asarray(x[0])
        work = np.float64 if a.dtype == np.float64 else np.float32
        return (np.asarray(fn(node, a.astype(work, copy=False)), dtype=work).astype(a.dtype, copy=False),)

    return run


def _products(node, ins, outs):
    """Products per execution: slope * x (HardSigmoid), and x * hard_sigmoid (HardSwish), x * Phi (Gelu)."""
    return (2 if node.op_type == "HardSwish" else 1) * int(np.prod(outs[0][0], dtype=np.int64))


def _no_macs(node, ins, outs):
    return 0


def _hard_sigmoid(node, x):
    # clip(alpha * x + beta, 0, 1) in one array (the float plan's in-place form computes the same)
    r = node.attr("alpha", 0.2) * x
    r += node.attr("beta", 0.5)
    return np.clip(r, 0.0, 1.0, out=r)


def _hard_swish(node, x):
    """x * clip(x / 6 + 0.5, 0, 1): HardSigmoid with alpha = 1/6, beta = 0.5 (ONNX), one array."""
    r = x / 6.0
    r += 0.5
    np.clip(r, 0.0, 1.0, out=r)
    r *= x
    return r


def _gelu(node, x):
    if node.attr("approximate", "none") == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / x.dtype.type(math.sqrt(2.0))))


def _gelu_check(node):
    if node.attr("approximate", "none") not in ("none", "tanh"):
        raise attr_error(node, "approximate", node.attr("approximate"), "'none', 'tanh'")


_UNARY = {
    "Sqrt": lambda node, x: np.sqrt(x),
    "Reciprocal": lambda node, x: 1.0 / x,
    "Exp": lambda node, x: np.exp(x),
    "Erf": lambda node, x: _erf(x),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "Gelu": _gelu,
}

# ---- bit-accurate kernels ---------------------------------------------------------------

def _result(node, ctx, prec, v, owned: bool = False):
    """`owned`: `v` is a fresh float64 array of the kernel's, which the cast may overwrite."""
    return (ctx.cast(node, np.asarray(v, np.float64), prec.result, fixed.result_axis(np.ndim(v)),
                     inplace=owned),), (prec.result,)


def _table_lookup(node, prec, x, fmt, name: str, entries: str | None = None) -> np.ndarray:
    """table[index(x)] of conveyor's range table `name` (config `tables.<name>`)."""
    fin = lut.require_fixed(node, fmt)
    size, lo, hi, tfmt = lut.range_spec(node, prec, name)
    try:
        table = lut.own_table(entries or name, size, lo, hi, tfmt)
    except PrecisionError as e:
        raise PrecisionError(f"{node}: {e}") from None
    return table.lookup(x, fin.frac_bits)


def _table_fixed(name: str):
    """res = (res_T) table[index(x)]: Exp, Sqrt, Reciprocal, Erf."""
    def run_fixed(node, args, fmts, prec, ctx):
        return _result(node, ctx, prec, _table_lookup(node, prec, args[0], fmts[0], name))

    return run_fixed


def _gelu_fixed(node, args, fmts, prec, ctx):
    """res = (res_T)(x * phi_table[index(x)]), the product exact: outside the table's range
    Phi reads its end entries (0 and 1), so gelu(x) tends to 0 and x as it should."""
    x = args[0]
    entries = "gelu_tanh" if node.attr("approximate", "none") == "tanh" else "gelu"
    phi = _table_lookup(node, prec, x, fmts[0], "gelu", entries)
    tfmt = lut.range_spec(node, prec, "gelu")[3]
    _exact_product(node, x, phi, fmts[0].frac_bits + tfmt.frac_bits)
    return _result(node, ctx, prec, x * phi)


def _exact_product(node, a, b, frac: int) -> None:
    amax = float(np.max(np.abs(a))) if np.size(a) else 0.0
    bmax = float(np.max(np.abs(b))) if np.size(b) else 0.0
    lut.require_exact(node, amax * bmax, frac, "products")


def _exact_product_of_format(node, a, fa, bmax: float, frac: int) -> None:
    """`_exact_product` for `a` whose values lie in the ap_fixed format `fa` (the Emulator's
    values are its casts' results) times values of magnitude at most `bmax`: proved from
    the format's range when it suffices, without a pass over `a`; else from the data."""
    if max(-fa.min_value, fa.max_value) * bmax * 2.0 ** frac < 2.0 ** 53:
        return
    _exact_product(node, a, np.array(bmax), frac)


#: (slope setting, shift setting, alpha, beta) -> hard_sigmoid_params' result: the constants are
#: quantized once, not on every run (a frozen config gives the same values every time)
_HARD_SIGMOID_PARAMS: dict = {}


def hard_sigmoid_params(node, prec, alpha: float, beta: float):
    """(slope, shift, their formats): alpha and beta assigned to `tables.hard_sigmoid`'s
    slope_t and shift_t (hls4ml: `const slope_t slope = alpha;`), refused when they do not fit."""
    spec = lut.settings(prec, "hard_sigmoid")
    memo = (spec.get("slope"), spec.get("shift"), float(alpha), float(beta))
    try:
        return _HARD_SIGMOID_PARAMS[memo]
    except (KeyError, TypeError):  # not seen yet, or a setting that is not hashable
        pass
    out = []
    for key, value in (("slope", alpha), ("shift", beta)):
        fmt = lut.fixed_format(spec[key], f"{node}: tables.hard_sigmoid.{key}")
        q = float(fmt.unbounded().quantize(np.array(value, np.float64)))
        if not fmt.min_value <= q <= fmt.max_value:
            raise PrecisionError(
                f"{node}: {key} {value:.9g} ({'alpha' if key == 'slope' else 'beta'}) does not fit "
                f"tables.hard_sigmoid.{key} {fmt} (range [{fmt.min_value}, {fmt.max_value}]); accepted: a "
                f"{key} format that holds it, e.g. tables: {{hard_sigmoid: {{{key}: \"ap_fixed<18,4>\"}}}}")
        out.append((q, fmt))
    got = out[0][0], out[1][0], out[0][1], out[1][1]
    try:
        if len(_HARD_SIGMOID_PARAMS) < 256:
            _HARD_SIGMOID_PARAMS[memo] = got
    except TypeError:
        pass
    return got


def _hard_sigmoid_exact(node, prec, x, fx, alpha, beta):
    """hls4ml's nnet::hard_sigmoid before its result cast: `auto datareg = slope * x + shift`
    (exact), clamped to [0, 1] (both exact in datareg's type)."""
    fin = lut.require_fixed(node, fx, why="is computed in ap_fixed arithmetic (hls4ml's hard_sigmoid)")
    slope, shift, fs, fsh = hard_sigmoid_params(node, prec, alpha, beta)
    frac = max(fin.frac_bits + fs.frac_bits, fsh.frac_bits)
    _exact_product_of_format(node, x, fin, max(abs(slope), 1.0), frac)
    v = np.multiply(x, slope, dtype=np.float64)  # slope * x + shift, exact; in place from here
    v += shift
    return np.clip(v, 0.0, 1.0, out=v), frac


def _hard_sigmoid_fixed(node, args, fmts, prec, ctx):
    """res = (res_T) datareg (nnet::hard_sigmoid)."""
    v, _ = _hard_sigmoid_exact(node, prec, args[0], fmts[0], float(node.attr("alpha", 0.2)),
                               float(node.attr("beta", 0.5)))
    return _result(node, ctx, prec, v, owned=True)


def _hard_swish_fixed(node, args, fmts, prec, ctx):
    """res = (res_T)(x * datareg): hls4ml's hard_sigmoid with ONNX HardSwish's alpha 1/6 (a
    float32 attribute constant: 0.1666666716337204) and beta 0.5, its value kept exact, times x."""
    x = args[0]
    v, frac = _hard_sigmoid_exact(node, prec, x, fmts[0], float(np.float32(1 / 6)), 0.5)
    _exact_product_of_format(node, x, fmts[0], 1.0, frac + fmts[0].frac_bits)  # v lies in [0, 1]
    v *= x  # x * datareg, exact, in v's own array
    return _result(node, ctx, prec, v, owned=True)


_FIXED = {
    "Sqrt": _table_fixed("sqrt"),
    "Reciprocal": _table_fixed("reciprocal"),
    "Exp": _table_fixed("exp"),
    "Erf": _table_fixed("erf"),
    "HardSigmoid": _hard_sigmoid_fixed,
    "HardSwish": _hard_swish_fixed,
    "Gelu": _gelu_fixed,
}

for _op, _fn in _UNARY.items():
    register(OpDef(_op, infer=_same, run=_float_kernel(_fn), run_fixed=_FIXED[_op],
                   macs=_products if _op in ("HardSigmoid", "HardSwish", "Gelu") else _no_macs,
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


#: the largest integer exponent Pow's exact kernel multiplies out
MAX_INT_EXPONENT = 8


def _pow_exponent(node, b) -> float:
    """The single value of Pow's constant exponent, or a PrecisionError naming the node."""
    accepted = f"a constant exponent: an integer 0..{MAX_INT_EXPONENT}, 0.5 (square root) or -1 (reciprocal)"
    if b is None:
        raise PrecisionError(f"{node}: the exponent is a run-time value; a bit-accurate Pow needs {accepted}")
    vals = np.unique(np.asarray(b, np.float64))
    if vals.size != 1:
        raise PrecisionError(f"{node}: the exponent holds {vals.size} different values; accepted: {accepted}")
    e = float(vals[0])
    if not (e in (0.5, -1.0) or (e == int(e) and 0 <= e <= MAX_INT_EXPONENT)):
        raise PrecisionError(f"{node}: exponent {e:g} has no bit-accurate kernel; accepted: {accepted}")
    return e


def _pow_fixed_params(node, consts, prec):
    """Checks the exponent when the Emulator is built (the exponent passes unquantized)."""
    _pow_exponent(node, consts[1] if len(consts) > 1 else None)
    return {}


def _pow_fixed(node, args, fmts, prec, ctx):
    """x^n, n a positive integer: the exact product x * x * ... (n factors), cast once to
    res_T (Pow(x, 2): (res_T)(x * x)); x^0.5 reads the Sqrt table, x^-1 the Reciprocal table."""
    x = args[0]
    e = _pow_exponent(node, args[1] if fmts[1] is None else None)
    if e == 0.5:
        return _result(node, ctx, prec, np.broadcast_to(_table_lookup(node, prec, x, fmts[0], "sqrt"),
                                                        np.broadcast_shapes(x.shape, np.shape(args[1]))))
    if e == -1.0:
        return _result(node, ctx, prec, np.broadcast_to(_table_lookup(node, prec, x, fmts[0], "reciprocal"),
                                                        np.broadcast_shapes(x.shape, np.shape(args[1]))))
    n = int(e)
    fin = lut.require_fixed(node, fmts[0], why="is computed as exact ap_fixed products")
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    lut.require_exact(node, amax ** n, n * fin.frac_bits, f"powers x^{n}")
    y = np.ones_like(x)
    for _ in range(n):
        y = y * x
    return _result(node, ctx, prec, np.broadcast_to(y, np.broadcast_shapes(x.shape, np.shape(args[1]))))


def _pow_macs(node, ins, outs):
    b = ins[1].value if len(ins) > 1 and ins[1] is not None else None
    if b is not None and np.size(b) and np.all(b == np.ravel(b)[0]) and float(np.ravel(b)[0]).is_integer():
        return max(0, int(np.ravel(b)[0]) - 1) * int(np.prod(outs[0][0], dtype=np.int64))
    return 0


register(OpDef("Pow", infer=_pow_infer, run=_pow_run, run_fixed=_pow_fixed, fixed_params=_pow_fixed_params,
               macs=_pow_macs))
