"""Lookup tables of the nonlinear functions, computed exactly as hls4ml's HLS code computes them.

Two ways of addressing a table, both from hls4ml's ``nnet_activation.h`` (Vivado backend):

- `RangeTable` (sigmoid, tanh, and conveyor's LRN): ``size`` entries over ``[min, max)``;
  ``index = (int)(data * size / (max - min)) + (-min) * size / (max - min)``, clamped to
  ``[0, size - 1]``, where ``(int)`` truncates towards zero (ap_fixed's ``to_int()``);
- top-bits tables (softmax): the index is the top ``log2(size)`` bits of the addressing
  value's stored word (``softmax_idx_from_real_val``).

Table entries are computed with the same float/double operations and the same C library
functions as the C++ initialisers (``expf``, ``tanhf`` from this machine's libm, called
through ctypes, so that a C simulation on the same machine builds the same tables; glibc's
``expf``/``tanhf`` are not correctly rounded). The arithmetic is written down in
docs/numerics.md, "### Nonlinear functions (lookup tables)".
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref

import ctypes
import ctypes.util
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from conveyor.errors import PrecisionError
from conveyor.numerics.cast import is_fixed
from conveyor.numerics.config import parse_format
from conveyor.numerics.fixed import FixedType
from conveyor.ops.intdot import njit as intdot_njit  # None without numba (the `fast` extra)

#: defaults of the config's `tables` entries (hls4ml 1.x's, Vivado backend; LRN is conveyor's own)
DEFAULTS: dict[str, dict[str, Any]] = {
    "sigmoid": {"size": 1024, "min": -8.0, "max": 8.0, "format": "ap_fixed<18,8>"},
    "tanh": {"size": 1024, "min": -4.0, "max": 4.0, "format": "ap_fixed<18,8>"},
    # The windowed square sum of AlexNet's LRNs (size 5, alpha 1e-4, beta 0.75, bias 1) stays
    # below 2^19 for 0..255 images; a bin is 128 wide, (1 + 2e-5 s)^-0.75 moves 0.2 % per bin.
    "lrn": {"size": 4096, "min": 0.0, "max": 524288.0, "format": "ap_fixed<18,8>"},
    "softmax": {"implementation": "stable"},
    "softmax_exp": {"size": 1024, "format": "ap_fixed<18,8,AP_RND,AP_SAT>"},
    "softmax_inv": {"size": 1024, "format": "ap_fixed<18,8,AP_RND,AP_SAT>"},
    # hls4ml 1.3.0: HardActivation.initialize (slope_prec ap_ufixed<16,0>, shift_prec ap_ufixed<2,0>)
    "hard_sigmoid": {"slope": "ap_ufixed<16,0>", "shift": "ap_ufixed<2,0>"},
    # hls4ml 1.3.0 vivado_backend.py, LayerNormalization attributes: table_range_power2 0,
    # table_size 4096, table_t ap_ufixed<8,5,AP_RND_CONV,AP_SAT> (its accum_t default is the node's accum)
    "layernorm": {"size": 4096, "range_power2": 0, "format": "ap_ufixed<8,5,AP_RND_CONV,AP_SAT>"},
    # conveyor's own tables (hls4ml has no HLS Exp, Sqrt, Reciprocal, Erf, Gelu): range tables
    # addressed like sigmoid's, entries in double, stored in hls4ml's softmax table type
    **{name: {"size": 1024, "min": lo, "max": hi, "format": "ap_fixed<18,8,AP_RND,AP_SAT>"}
       for name, lo, hi in (("exp", -8, 8), ("sqrt", 0, 32), ("reciprocal", -8, 8), ("erf", -4, 4),
                            ("gelu", -4, 4))},
}
#: conveyor's own range tables: table name -> what entry i holds, f(x_i) in double (docs/numerics.md)
OWN_TABLES = ("exp", "sqrt", "reciprocal", "erf", "gelu", "gelu_tanh")

_EXACT = 2.0 ** 53


def settings(prec, name: str) -> dict[str, Any]:
    """The table settings `name` for a node: the config's `tables.<name>` over DEFAULTS."""
    tables: Mapping = getattr(prec, "tables", None) or {}
    return {**DEFAULTS[name], **tables.get(name, {})}


def fixed_format(text_or_fmt, where: str) -> FixedType:
    fmt = parse_format(text_or_fmt) if isinstance(text_or_fmt, str) else text_or_fmt
    if not is_fixed(fmt):
        raise PrecisionError(f"{where}: lookup tables need an ap_fixed format, got {fmt}")
    return fmt


def require_fixed(node, fmt, what: str = "input",
                  why: str = "is computed through a lookup table addressed by the bits of an ap_fixed value") -> FixedType:
    """The ap_fixed format of a kernel operand, or a PrecisionError naming the node."""
    if not is_fixed(fmt):
        raise PrecisionError(
            f"{node}: the {what} format is {fmt}; {node.op_type} {why}; accepted: an ap_fixed/ap_ufixed format"
        )
    if fmt.width > 53:
        raise PrecisionError(f"{node}: the {what} format {fmt} is wider than 53 bits; bit-accurate "
                             "emulation of lookup tables needs values a double holds exactly")
    return fmt


def require_exact(node, bound: float, frac: int, what: str) -> None:
    """Refuse when values up to `bound` on a 2^-frac grid are not exact in float64."""
    if bound * 2.0 ** frac >= _EXACT:
        raise PrecisionError(f"{node}: {what} reach {bound:.6g} on a 2^-{frac} grid, beyond float64's exact "
                             "range; narrower formats are needed for bit-accurate emulation")


def raw_of(x: np.ndarray, fmt: FixedType) -> np.ndarray:
    """Stored integers of grid values (exact: |raw| < 2^53)."""
    return np.ldexp(np.asarray(x, np.float64), fmt.frac_bits).astype(np.int64)


def _wrap32(v: np.ndarray) -> np.ndarray:
    return ((v + 2 ** 31) & 0xFFFFFFFF) - 2 ** 31


# ---- what a kernel derives from a node's parameters and formats alone ---------------------

#: id(node) -> (node, prec, fmts, weak references to the parameters, {key: derived})
_PLAN_CACHE: dict = {}


def node_plans(ctx, node, args, fmts, prec, slots) -> dict | None:
    """A dict in which a kernel keeps what it derives from the node's parameters (`args` at
    `slots`) and formats alone (checks, tables, raw weights, the plans of compiled loops), the
    same dict while the node, its precision, its formats and those arrays are the same objects;
    None (keep nothing) unless every array there is one of the Emulator's parameters
    (`ctx.is_param`: it never modifies them) and the run is not observed."""
    is_param = getattr(ctx, "is_param", None)
    if is_param is None or getattr(ctx, "observe", False):
        return None
    params = tuple(args[i] if i < len(args) else None for i in slots)
    if not all(a is None or is_param(a) for a in params):
        return None
    fmts = tuple(fmts)
    got = _PLAN_CACHE.get(id(node))
    if got is not None:
        n, pr, fm, refs, plans = got
        if n is node and pr is prec and fm == fmts and all(
                (r is None and a is None) or (r is not None and r() is a) for r, a in zip(refs, params)):
            return plans
    if len(_PLAN_CACHE) >= 256:
        _PLAN_CACHE.clear()
    plans: dict = {}
    _PLAN_CACHE[id(node)] = (node, prec, fmts, tuple(None if a is None else weakref.ref(a) for a in params), plans)
    return plans


# ---- C library functions ----------------------------------------------------------------

def _load_libm(fns: tuple[str, ...], ctype):
    """The C math library's functions `fns` taking and returning `ctype`, or None without libm."""
    for name in (ctypes.util.find_library("m"), "libm.so.6", "libm.dylib"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            found = {}
            for fn in fns:
                f = getattr(lib, fn)
                f.restype, f.argtypes = ctype, [ctype]
                found[fn] = f
            return found
        except (OSError, AttributeError):
            continue
    return None


_LIBM = _load_libm(("expf", "tanhf"), ctypes.c_float)
_LIBM_D = _load_libm(("exp", "erf", "tanh"), ctypes.c_double)


def c_double_fn(name: str, x: np.ndarray) -> np.ndarray:
    """libm's double function `name` ('exp', 'erf', 'tanh') elementwise, as C++ calls it
    (numpy's own exp may differ from libm's in the last bit); without libm, Python's math."""
    x = np.asarray(x, np.float64)
    f = _LIBM_D[name] if _LIBM_D is not None else getattr(math, name)
    return np.array([f(float(v)) for v in x.ravel()], dtype=np.float64).reshape(x.shape)


def c_float_fn(name: str, x: np.ndarray) -> np.ndarray:
    """libm's float function `name` ('expf', 'tanhf') elementwise on float32 values; without a
    loadable libm, the correctly rounded value (which glibc's agrees with almost always)."""
    x = np.asarray(x, np.float32)
    if _LIBM is not None:
        f = _LIBM[name]
        return np.array([f(float(v)) for v in x.ravel()], dtype=np.float32).reshape(x.shape)
    with np.errstate(over="ignore"):
        ref = {"expf": np.exp, "tanhf": np.tanh}[name]
        return ref(x.astype(np.float64)).astype(np.float32)


# ---- range tables: sigmoid, tanh, LRN ---------------------------------------------------

@dataclass(frozen=True)
class RangeTable:
    """`size` entries over [lo, hi): addressed like hls4ml's sigmoid/tanh tables."""

    size: int
    lo: int
    hi: int
    fmt: FixedType
    values: np.ndarray  # float64, on fmt's grid

    @property
    def offset(self) -> int:
        # hls4ml: 8 * table_size / 16 (unsigned integer arithmetic) for the sigmoid table
        return (-self.lo * self.size) // (self.hi - self.lo)

    def x_values(self) -> np.ndarray:
        return table_inputs(self.size, self.lo, self.hi)

    def index(self, x: np.ndarray, frac_bits: int) -> np.ndarray:
        return range_index(x, frac_bits, self.size, self.lo, self.hi)

    def lookup(self, x: np.ndarray, frac_bits: int) -> np.ndarray:
        return self.values[self.index(x, frac_bits)]


def table_inputs(size: int, lo: int, hi: int) -> np.ndarray:
    """Entry i stands for x_i = R * (i - size * c) / size in double, R = hi - lo, c = -lo / R
    (hls4ml's sigmoid: 2 * 8.0 * (ii - float(N) / 2.0) / float(N))."""
    r = float(hi - lo)
    c = float(-lo) / r
    i = np.arange(size, dtype=np.float64)
    return r * (i - float(size) * c) / float(size)


#: set while an observing run counts table look-ups: [look-ups, inputs outside the table]
_TABLE_COUNTS: contextvars.ContextVar[list | None] = contextvars.ContextVar("conveyor_table_counts", default=None)


@contextlib.contextmanager
def counting_tables():
    """Count the table look-ups inside the block (yields [look-ups, outside the table])."""
    tally = [0, 0]
    token = _TABLE_COUNTS.set(tally)
    try:
        yield tally
    finally:
        _TABLE_COUNTS.reset(token)


def note_address(values: np.ndarray, fmt: FixedType) -> None:
    """A look-up addressed by `values` cast to `fmt` (softmax): counted, and counted as
    outside the table when the cast overflows."""
    tally = _TABLE_COUNTS.get()
    if tally is not None and np.size(values):
        from conveyor.numerics.cast import overflow_count

        tally[0] += int(np.size(values))
        tally[1] += overflow_count(np.asarray(values, np.float64), fmt) or 0


if intdot_njit is not None:
    @intdot_njit(cache=True, nogil=True)
    def range_divisor(r, f):
        """(d, k) for `range_index_one`: the divisor R * 2^f and, when R is a power of two, the
        shift k with 2^k = d (else -1)."""
        d = r << f
        k = -1
        if r & (r - 1) == 0:
            k = 0
            while (np.int64(1) << k) < d:
                k += 1
        return d, k

    @intdot_njit(cache=True, nogil=True)
    def range_index_one(p, k, d, offset):
        """The unclamped index of one product p = raw * n (`range_index`): truncated towards
        zero by d = R * 2^f (a shift by k when d = 2^k, else k = -1), the low 32 bits, plus the
        offset in 32 bits. Shared with the compiled LSTM (ops/intrnn.py)."""
        if k >= 0:
            dr = -((-p) >> k) if p < 0 else p >> k
        else:
            dr = -((-p) // d) if p < 0 else p // d
        dr = ((dr + 2147483648) & 0xFFFFFFFF) - 2147483648
        return ((dr + offset + 2147483648) & 0xFFFFFFFF) - 2147483648

    @intdot_njit(cache=True, nogil=True)
    def _range_index_int(x, scale, n, r, offset, f, out, tally):
        """`range_index` for |raw| * n < 2^62 and frac_bits >= 0, one pass (numba). The two
        truncations towards zero (by R, then by 2^f) are one, by R * 2^f: a shift when R is a
        power of two."""
        outside = 0
        d, k = range_divisor(r, f)
        for i in range(x.size):
            idx = range_index_one(np.int64(x[i] * scale) * n, k, d, offset)
            if idx < 0:
                idx = 0
                outside += 1
            elif idx > n - 1:
                idx = n - 1
                outside += 1
            out[i] = idx
        tally[0] += outside


def range_index(x: np.ndarray, frac_bits: int, size: int, lo: int, hi: int) -> np.ndarray:
    """`index = (int)(data * size / R) + offset`, clamped, for data on a 2^-frac_bits grid.

    As the ap_fixed headers compute it: the product is exact, the division by the integer R
    truncates towards zero at the data's LSB, `(int)` truncates towards zero and keeps the low
    32 bits, the offset is added in 32-bit arithmetic."""
    r = hi - lo
    n = size
    offset = (-lo * n) // r
    x = np.asarray(x, np.float64)
    big = x.size and max(-float(x.min()), float(x.max())) * 2.0 ** frac_bits * n >= 2.0 ** 62
    if not big and 0 <= frac_bits and (r << frac_bits) < 2 ** 62 and intdot_njit is not None:  # the same integers, one compiled pass
        out = np.empty(x.shape, np.int64)
        outside = np.zeros(1, np.int64)
        _range_index_int(np.ascontiguousarray(x).reshape(-1), 2.0 ** frac_bits, np.int64(n), np.int64(r),
                         np.int64(offset), np.int64(frac_bits), out.reshape(-1), outside)
        tally = _TABLE_COUNTS.get()
        if tally is not None:  # an observing run: the look-ups whose index hls4ml clamps
            tally[0] += int(out.size)
            tally[1] += int(outside[0])
        return out
    raw = np.ldexp(x, frac_bits)
    if big:  # Python ints
        raw_i = np.array([int(v) for v in raw.ravel()], dtype=object).reshape(x.shape)
    else:
        raw_i = raw.astype(np.int64)
    p = raw_i * n
    q = np.where(p < 0, -((-p) // r), p // r)
    if frac_bits >= 0:
        dr = np.where(q < 0, -((-q) >> frac_bits), q >> frac_bits)
    else:
        s = -frac_bits
        dr = ((q & 0xFFFFFFFF) << s) & 0xFFFFFFFF if s < 32 else q * 0
    dr = _wrap32(dr)
    idx = _wrap32(dr + offset).astype(np.int64)
    tally = _TABLE_COUNTS.get()
    if tally is not None:  # an observing run: the look-ups whose index hls4ml clamps
        tally[0] += int(idx.size)
        tally[1] += int(np.count_nonzero((idx < 0) | (idx > n - 1)))
    return np.clip(idx, 0, n - 1)


@lru_cache(maxsize=64)
def sigmoid_table(size: int, lo: int, hi: int, fmt: FixedType) -> RangeTable:
    """hls4ml's init_sigmoid_table: float in_val; 1.0 / (1 + std::exp(-in_val)) returned as float."""
    xf = table_inputs(size, lo, hi).astype(np.float32)
    e = c_float_fn("expf", -xf)
    den = (np.float32(1) + e).astype(np.float32)
    with np.errstate(divide="ignore"):
        v = (1.0 / den.astype(np.float64)).astype(np.float32)
    return _frozen(RangeTable(size, lo, hi, fmt, fmt.quantize(v.astype(np.float64))))


@lru_cache(maxsize=64)
def tanh_table(size: int, lo: int, hi: int, fmt: FixedType) -> RangeTable:
    """hls4ml's init_tanh_table: float in_val; tanh(in_val) resolves to the float overload (tanhf)."""
    xf = table_inputs(size, lo, hi).astype(np.float32)
    v = c_float_fn("tanhf", xf)
    return _frozen(RangeTable(size, lo, hi, fmt, fmt.quantize(v.astype(np.float64))))


@lru_cache(maxsize=64)
def lrn_table(size: int, lo: int, hi: int, fmt: FixedType, bias: float, alpha_over_n: float,
              beta: float) -> RangeTable:
    """conveyor's LRN table: std::pow(bias + alpha / n * x_i, -beta), all in double."""
    xs = table_inputs(size, lo, hi)
    vals = []
    for xi in xs.tolist():
        base = bias + alpha_over_n * xi
        try:
            vals.append(math.pow(base, -beta))
        except (ValueError, ZeroDivisionError):
            raise PrecisionError(f"LRN table: (bias + alpha/size * {xi})^-beta = ({base})^-{beta} is not "
                                 f"a real number; the table range [{lo}, {hi}) must keep the base positive") from None
    return _frozen(RangeTable(size, lo, hi, fmt, fmt.quantize(np.array(vals, np.float64))))


@lru_cache(maxsize=64)
def own_table(name: str, size: int, lo: int, hi: int, fmt: FixedType) -> RangeTable:
    """conveyor's own range tables: entry i is f(x_i) computed in double (x_i of `table_inputs`,
    not rounded to float), then `table_t v = value;` (C++: tests/hls4ml_oracle/conveyor_math.h).

    exp: exp(x); sqrt: sqrt(x) (min >= 0); reciprocal: 1.0 / x (1/0 = +inf: the format's
    maximum under AP_SAT); erf: erf(x); gelu: Phi(x) = 0.5 * (1.0 + erf(x / 1.4142135623730951));
    gelu_tanh: 0.5 * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))."""
    xs = table_inputs(size, lo, hi)
    if name == "exp":
        v = c_double_fn("exp", xs)
    elif name == "sqrt":
        if lo < 0:
            raise PrecisionError(f"tables.sqrt: min {lo} < 0; the square-root table must start at 0 or above")
        v = np.sqrt(xs)  # IEEE square root: correctly rounded, as C's sqrt
    elif name == "reciprocal":
        with np.errstate(divide="ignore"):
            v = 1.0 / xs
    elif name == "erf":
        v = c_double_fn("erf", xs)
    elif name == "gelu":
        v = 0.5 * (1.0 + c_double_fn("erf", xs / 1.4142135623730951))
    elif name == "gelu_tanh":
        v = 0.5 * (1.0 + c_double_fn("tanh", 0.7978845608028654 * (xs + 0.044715 * xs * xs * xs)))
    else:
        raise ValueError(f"no conveyor table {name!r}; accepted: {OWN_TABLES}")
    return _frozen(RangeTable(size, lo, hi, fmt, fmt.quantize(v)))


@lru_cache(maxsize=64)
def invert_sqrt_table(size: int, range_power2: int, epsilon_power_of_10: int, fmt: FixedType) -> np.ndarray:
    """hls4ml's init_invert_sqr_table (nnet_layernorm.h), in its float arithmetic:
    min_val = (float) pow(10.0f, -eps_p10) (pow(float, int) computes in double);
    max_val = (float) pow(2.0f, -range_power2); step = max_val / (float) N;
    in_val = min_val + step * ii (float); table_t(1.0 / sqrt(in_val)) (sqrt of a float: sqrtf)."""
    f32 = np.float32
    min_val = f32(math.pow(10.0, -epsilon_power_of_10))
    max_val = f32(math.pow(2.0, -range_power2))
    step = f32(max_val / f32(size))
    ii = np.arange(size, dtype=np.float32)
    in_val = (min_val + (step * ii).astype(np.float32)).astype(np.float32)
    root = np.sqrt(in_val).astype(np.float32)
    v = fmt.quantize(1.0 / root.astype(np.float64))
    v.setflags(write=False)
    return v


def range_spec(node, prec, name: str) -> tuple[int, int, int, FixedType]:
    spec = settings(prec, name)
    lo, hi = spec["min"], spec["max"]
    if lo != int(lo) or hi != int(hi) or hi <= lo:
        raise PrecisionError(f"{node}: tables.{name} min {lo} / max {hi} must be integers with max > min")
    fmt = fixed_format(spec["format"], f"{node}: tables.{name}.format")
    return int(spec["size"]), int(lo), int(hi), fmt


def _frozen(t: RangeTable) -> RangeTable:
    t.values.setflags(write=False)
    return t


#: op type -> the conveyor-own / LayerNorm table it reads (Pow: by its exponent, `table_of`)
TABLE_OF_OP = {"Exp": "exp", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Erf": "erf", "Gelu": "gelu",
               "LayerNormalization": "layernorm"}


def table_of(op_type: str, prec, exponent: float | None = None) -> tuple[str, int, int] | None:
    """(table name, entries, bits per entry) of the lookup table an op of the new families reads
    under `prec` (None: the defaults), for the cost model; None when it reads none (Pow reads
    the sqrt table for exponent 0.5 and the reciprocal table for -1)."""
    name = TABLE_OF_OP.get(op_type)
    if op_type == "Pow":
        name = {0.5: "sqrt", -1.0: "reciprocal"}.get(exponent)
    if name is None:
        return None
    spec = settings(prec, name)
    return name, int(spec["size"]), int(fixed_format(spec["format"], f"tables.{name}.format").width)


# ---- top-bits tables: softmax -------------------------------------------------------------

def address_bits(size: int) -> int:
    """hls4ml's ceillog2(size): bits of a table address."""
    return 1 if size <= 2 else 1 + address_bits((size + 1) // 2)


def top_bits_index(x: np.ndarray, fmt: FixedType, size: int) -> np.ndarray:
    """softmax_idx_from_real_val: the top ceillog2(size) bits of the stored W-bit word."""
    nbits = address_bits(size)
    raw = raw_of(x, fmt) & ((1 << fmt.width) - 1)
    return raw >> (fmt.width - nbits)


def top_bits_values(fmt: FixedType, size: int) -> np.ndarray:
    """softmax_real_val_from_idx for every index, as the float the C++ returns (exact)."""
    nbits = address_bits(size)
    raw = np.arange(size, dtype=np.int64) << (fmt.width - nbits)
    if fmt.signed:
        raw = np.where(raw >= 1 << (fmt.width - 1), raw - (1 << fmt.width), raw)
    vals = np.ldexp(raw.astype(np.float64), -fmt.frac_bits)
    f32 = vals.astype(np.float32)
    if not np.array_equal(f32.astype(np.float64), vals):
        raise PrecisionError(f"a {size}-entry table addressed by {fmt}: the address values are not exact "
                             "floats (more than 24 address bits); accepted: smaller tables")
    return f32


@lru_cache(maxsize=64)
def softmax_exp_table(addr_fmt: FixedType, size: int, fmt: FixedType, negative: bool,
                      exp_scale: float = 1.0) -> np.ndarray:
    """init_exp_table: x = real_val_from_idx(i) * exp_scale (float), negated for the stable
    softmax, exp_table_t(std::exp(x)) with the float exp (expf)."""
    x = (top_bits_values(addr_fmt, size) * np.float32(exp_scale)).astype(np.float32)
    if negative:
        x = -x
    v = fmt.quantize(c_float_fn("expf", x).astype(np.float64))
    v.setflags(write=False)
    return v


@lru_cache(maxsize=64)
def softmax_inv_table(addr_fmt: FixedType, size: int, fmt: FixedType) -> np.ndarray:
    """init_invert_table: inv_table_t(1 / x) in float; 1/0 is +inf (saturates or wraps)."""
    x = top_bits_values(addr_fmt, size)
    with np.errstate(divide="ignore"):
        v = (np.float32(1) / x).astype(np.float32)
    out = fmt.quantize(v.astype(np.float64))
    out.setflags(write=False)
    return out


# ---- hls4ml's balanced adder tree -----------------------------------------------------------

def tree_reduce(cols: list[np.ndarray], fmt: FixedType) -> np.ndarray:
    """nnet::reduce<T, N, Op_add<T>>: every pairwise sum exact, then assigned to T (fmt)."""
    n = len(cols)
    if n == 1:
        return cols[0]
    if n == 2:
        return fmt.quantize(cols[0] + cols[1])
    left = 1 << (n - 1).bit_length() - 1  # pow2(floorlog2(N - 1))
    return fmt.quantize(tree_reduce(cols[:left], fmt) + tree_reduce(cols[left:], fmt))


__all__ = [
    "DEFAULTS", "settings", "RangeTable", "range_index", "table_inputs", "sigmoid_table",
    "tanh_table", "lrn_table", "range_spec", "address_bits", "top_bits_index", "softmax_exp_table",
    "softmax_inv_table", "tree_reduce", "own_table", "invert_sqrt_table", "c_double_fn", "OWN_TABLES", "table_of", "require_fixed", "require_exact", "fixed_format", "c_float_fn",
]
