"""Vectorized, bit-exact ``ap_fixed<...> v = (double)x`` for numpy arrays.

How it works (see docs/numerics.md, "## ap_fixed", for the rules themselves):

1. ``y = x * 2**F`` (F = W - I fraction bits, ``|F| <= 1020`` here). The
   product is exact, or it underflows only where the true value is below
   ``2**-1022`` in magnitude (only its sign matters then), or it overflows to
   inf only where the true value is so large that, for ``W <= 971``, every
   mode gives what the header gives. Infinite inputs (read by the header as
   ``+-2**1024``) and, for very wide or very large types, infinite products
   are computed by the scalar port instead.
2. The quantized integer ``q`` is computed in float64 with exact operations
   (floor, trunc, rint, modf). It is always exactly representable: either
   the double was already an integer multiple of the LSB, or ``|q| < 2**53``.
3. Range checks compare ``q`` with powers of two (exact for any width).
4. In-range values are ``q`` itself. Only out-of-range values go through the
   overflow rules, in int64 when the raw integer fits, else in Python ints.

Types with ``|F| > 1020`` fall back to the literal scalar port in
:mod:`conveyor.numerics.fixed_reference` entirely.
"""

from __future__ import annotations

import math
import os

import numpy as np

from conveyor.errors import PrecisionError
from conveyor.numerics.fixed_reference import assign_double_bits

__all__ = ["as_double_array", "quantize_in_range", "quantize_raw", "quantize_values", "raw_is_int64",
           "raw_to_values"]

_TWO63 = 2.0**63


def raw_is_int64(width: int, signed: bool) -> bool:
    """Whether raw integers of this type fit int64 (else Python-int object arrays)."""
    return width <= 63 or (width == 64 and signed)


def _float_path_ok(width: int, integer: int) -> bool:
    return abs(width - integer) <= 1020


def _pow2(e: int) -> float:
    return math.ldexp(1.0, e) if e < 1024 else math.inf


def as_double_array(x, what: str) -> np.ndarray:
    """``x`` as a float64 array; refuses NaN and integers a double cannot hold."""
    a = np.asarray(x)
    if a.dtype.kind in "iu":
        if a.size and (np.any(a > 2**53) or np.any(a < -(2**53))):
            bad = a.ravel()[np.flatnonzero((a.ravel() > 2**53) | (a.ravel() < -(2**53)))[0]]
            raise PrecisionError(
                f"{what}: integer {int(bad)} is not exactly representable as a double; "
                "accepted: values a C++ double holds exactly (|integer| <= 2**53) or float arrays"
            )
        a = a.astype(np.float64)
    elif a.dtype != np.float64:
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise PrecisionError(f"{what}: cannot read {x!r} as doubles ({exc}); accepted: real numbers") from None
    flat = a.ravel()
    if flat.size and np.isnan(np.min(flat)):  # min propagates NaN: one pass, no mask
        i = int(np.flatnonzero(np.isnan(flat))[0])
        raise PrecisionError(
            f"{what}: NaN at flat index {i}; the ap_fixed headers only warn and store a "
            "meaningless value for NaN, so conveyor refuses it; accepted: finite values or +-inf"
        )
    return a


class _Ints:
    """Integer backend: int64 arrays when raws fit, else object arrays of Python ints."""

    def __init__(self, width: int, signed: bool):
        self.obj = not raw_is_int64(width, signed)

    def c(self, v: int):
        if self.obj:
            return v
        v &= (1 << 64) - 1
        return np.int64(v - (1 << 64) if v >= (1 << 63) else v)

    def select(self, cond: np.ndarray, a, b) -> np.ndarray:
        """``np.where`` that keeps Python ints exact in the object backend."""
        if not self.obj:
            return np.where(cond, a, b)
        out = np.empty(cond.shape, dtype=object)
        out[:] = b if np.ndim(b) == 0 else list(b)
        if np.ndim(a) == 0:
            out[cond] = a
        else:
            out[cond] = a[cond]
        return out

    def from_float(self, a: np.ndarray) -> np.ndarray:
        """Exact integers from an integer-valued float64 array."""
        if not self.obj:
            return a.astype(np.int64)
        out = np.empty(a.shape, dtype=object)
        small = np.abs(a) < _TWO63
        out[small] = a[small].astype(np.int64).astype(object)
        big = ~small
        if big.any():
            out[big] = [int(v) for v in a[big].tolist()]
        return out


def _round(y: np.ndarray, x: np.ndarray, rounding: str, frac_bits: int) -> np.ndarray:
    """Exact quantized integers (as float64) of the scaled values ``y``."""
    if rounding == "TRN":
        q = np.floor(y)
        if frac_bits < 0:
            # x * 2**F may underflow to -0.0; the header floors any negative to -1
            q[(q == 0) & (x < 0)] = -1.0
        return q
    if rounding == "TRN_ZERO":
        return np.trunc(y)
    if rounding == "RND_CONV":
        return np.rint(y)
    fr, t = np.modf(y)  # both exact; fr in (-1, 1) with the sign of y
    a = np.abs(fr)
    away = a > 0.5
    tie = a == 0.5
    if rounding == "RND":  # half towards +inf
        away |= tie & (y > 0)
    elif rounding == "RND_MIN_INF":  # half towards -inf
        away |= tie & (y < 0)
    elif rounding == "RND_INF":  # half away from zero
        away |= tie
    elif rounding != "RND_ZERO":  # half towards zero adds nothing
        raise PrecisionError(f"rounding mode {rounding!r} unknown")
    inc = away.astype(np.float64)
    np.copysign(inc, fr, out=inc)
    t += inc
    return t


def _core(t, x: np.ndarray):
    """Return ``(q, idx, raw, ints)``: the quantized integers as float64 (valid
    in range), then the patch for the rest: flat indices and their exact raws
    (``None, None`` when nothing needs patching), and the integer backend."""
    W, I, S, Q, O = t.width, t.integer, t.signed, t.rounding, t.overflow
    F = W - I
    with np.errstate(over="ignore"):
        y = x * (2.0**F)  # may overflow to inf: handled below
    q = _round(y, x, Q, F)
    ints = _Ints(W, S)
    hi = _pow2(W - 1) if S else _pow2(W)
    lo = -_pow2(W - 1) if S else 0.0
    over = q >= hi
    if O == "SAT_SYM" and S:
        under = q <= lo
    else:
        under = q < lo
    bad = over | under
    special = None
    if W > 971 or I > 1023:
        special = np.isinf(y)
        if W > 1000:
            special |= bad
        bad &= ~special
        if not special.any():
            special = None
    if special is not None:
        sidx = np.flatnonzero(special)
        sraw = _reference(t, x[sidx])
    if not bad.any():
        if special is None:
            return q, None, None, ints
        return q, sidx, sraw, ints
    idx, raw = _overflow(t, ints, q, y, over, under, np.flatnonzero(bad))
    if special is None:
        return q, idx, raw, ints
    return q, np.concatenate([idx, sidx]), np.concatenate([raw, sraw]), ints


def _overflow(t, ints, q, y, over, under, idx):
    """Exact raws of the out-of-range elements ``idx`` under the overflow mode."""
    W, S, O, N = t.width, t.signed, t.overflow, t.sat_bits
    qb = q[idx]
    ov = over[idx]
    un = under[idx]
    if O in ("SAT", "SAT_SYM", "SAT_ZERO"):
        if O == "SAT_ZERO":
            top, bottom = 0, 0
        elif O == "SAT_SYM" and S and W > 1:
            top, bottom = t.raw_max, t.raw_min + 1
        else:  # unsigned SAT_SYM is SAT; so is W == 1 (min | 1 == min)
            top, bottom = t.raw_max, t.raw_min
        return idx, ints.select(ov, ints.c(top), ints.c(bottom))
    # WRAP / WRAP_SM: start from q mod 2**W as a signed W-bit value (exact)
    with np.errstate(invalid="ignore"):
        s = np.fmod(qb, 2.0**W)
    s = np.where(np.isfinite(s), s, 0.0)  # |q| >= 2**971: a multiple of 2**W
    s = np.where(s >= 2.0 ** (W - 1), s - 2.0**W, s)
    s = np.where(s < -(2.0 ** (W - 1)), s + 2.0**W, s)
    sv = ints.from_float(s)
    c = ints.c
    mask = (1 << W) - 1
    sb = 1 << (W - 1)
    V = sv & c(mask)  # unsigned bit pattern
    if O == "WRAP" and N == 0:
        pass
    elif O == "WRAP":
        if S:
            r = ((1 << (N - 1)) - 1) << (W - N)
            V = ints.select(un, (V | c(sb)) & c(mask & ~r), (V & c(mask & ~sb)) | c(r))
        else:
            V = V | c(((1 << N) - 1) << (W - N))
    else:  # WRAP_SM, signed only
        ro = ((V >> (W - 1)) & c(1)) != 0
        inv = ~V & c(mask)
        if N == 0:
            fl = np.floor(y.ravel()[idx])
            k = np.floor(fl / 2.0**W)
            with np.errstate(invalid="ignore"):
                ld = (np.fmod(k, 2.0) != 0) & np.isfinite(k)
            flipped = (inv & c(mask & ~sb)) | ints.select(ld, c(sb), c(0))
            V = ints.select(ld != ro, flipped, V)
        else:
            if N == 1:
                V = ints.select(un != ro, inv, V)
            else:
                lno = ((V >> (W - N)) & c(1)) != 0
                V = ints.select(lno == un, inv, V)
                r = ((1 << (N - 1)) - 1) << (W - N)
                V = ints.select(un, V & c(mask & ~r), V | c(r))
            V = ints.select(un, V | c(sb), V & c(mask & ~sb))
    if S:
        V = (V ^ c(sb)) - c(sb)
    return idx, V


def _reference(t, x: np.ndarray) -> np.ndarray:
    flat = x.ravel()
    out = np.empty(flat.shape, dtype=object)
    bits = flat.view(np.uint64).tolist()
    mask, sb = (1 << t.width) - 1, 1 << (t.width - 1)
    for i, b in enumerate(bits):
        v = assign_double_bits(b, t.width, t.integer, t.signed, t.rounding, t.overflow, t.sat_bits)
        out[i] = ((v ^ sb) - sb) if t.signed else (v & mask)
    out = out.reshape(x.shape)
    if raw_is_int64(t.width, t.signed):
        return out.astype(np.int64)
    return out


def quantize_raw(t, x: np.ndarray) -> np.ndarray:
    """Raw stored integers (``value / lsb``) of ``x`` assigned to type ``t``.

    ``x`` must be a float64 array without NaN (see :func:`as_double_array`).
    int64 where the raw range fits, else an object array of Python ints.
    """
    if not _float_path_ok(t.width, t.integer):
        return _reference(t, x)
    shape = x.shape
    xf = np.ascontiguousarray(x).ravel()
    q, idx, raw, ints = _core(t, xf)
    if idx is not None:
        q[idx] = 0.0
    out = ints.from_float(q)
    if idx is not None:
        out[idx] = raw
    return out.reshape(shape)


def quantize_values(t, x: np.ndarray) -> np.ndarray:
    """Values (float64) held by type ``t`` after assigning ``x``; what the
    header's ``to_double()`` returns (round-half-even where W > 53)."""
    if not _float_path_ok(t.width, t.integer):
        return raw_to_values(t, _reference(t, x))
    fast = quantize_in_range(t, x, inplace=False)
    if fast is not None:
        return fast
    shape = x.shape
    xf = np.ascontiguousarray(x).ravel()
    q, idx, raw, _ = _core(t, xf)
    with np.errstate(over="ignore"):  # values past the double range read as +-inf
        q *= 2.0 ** (t.integer - t.width)
    if idx is not None:
        q[idx] = raw_to_values(t, raw)
    q += 0.0  # -0.0 -> +0.0: a zero ap_fixed reads back as +0.0
    return q.reshape(shape)


def _int_times_pow2(v: int, e: int) -> float:
    """Correctly rounded (half-even) double of ``v * 2**e``; +-inf past the range."""
    v = int(v)
    if v == 0:
        return 0.0
    if v.bit_length() <= 53:
        try:
            return math.ldexp(float(v), e)  # one rounding at most (subnormals)
        except OverflowError:
            return math.copysign(math.inf, v)
    try:
        r = math.ldexp(float(v), e)
    except OverflowError:
        r = math.inf
    if 2.2250738585072014e-308 <= abs(r) < math.inf:
        return r  # float(v) rounded once; scaling a normal result is exact
    from fractions import Fraction

    try:
        return float(Fraction(v) * Fraction(2) ** e)
    except OverflowError:
        return math.copysign(math.inf, v)


def raw_to_values(t, raw: np.ndarray) -> np.ndarray:
    """Round-half-even float64 of ``raw * lsb`` for int64 or object raws."""
    raw = np.asarray(raw)
    e = t.integer - t.width
    if abs(e) <= 1020:  # |raw| >= 1 keeps raw * 2**e normal: one rounding, in float()
        with np.errstate(over="ignore"):  # past the double range: +-inf
            if raw.dtype != object:
                return raw.astype(np.float64) * (2.0**e) + 0.0
            try:
                f = np.array([float(v) for v in raw.ravel().tolist()], dtype=np.float64)
                return f.reshape(raw.shape) * (2.0**e) + 0.0
            except OverflowError:
                pass
    flat = [_int_times_pow2(v, e) for v in raw.ravel().tolist()]
    return np.array(flat, dtype=np.float64).reshape(raw.shape) + 0.0


# ---- fast path: nothing overflows ---------------------------------------------------------
#
# Most casts in a network see values that all land inside the type's range. Rounding is
# nondecreasing in every mode, so the rounded minimum and maximum (two scalars) tell
# whether any value overflows; when none does, each value is one exact rounding of
# x * 2**F, scaled back: what `_core` then `quantize_values` compute, without masks or
# patches. The passes run chunk by chunk so that each chunk stays in cache.

_CHUNK = 1 << 17  # elements per chunk (1 MiB of float64)


def _round_inplace(y: np.ndarray, rounding: str) -> None:
    """``y`` (scaled values) rounded to integers in place, as `_round` rounds them (F >= 0):
    floor, trunc and rint are one exact operation each; the tie-directed modes go through
    `_round`'s modf (``y + 1/2`` would round for doubles with bits below 2**-53 |y|)."""
    if rounding == "TRN":
        np.floor(y, out=y)
    elif rounding == "TRN_ZERO":
        np.trunc(y, out=y)
    elif rounding == "RND_CONV":
        np.rint(y, out=y)
    else:
        y[...] = _round(y, y, rounding, 0)


# The same two steps compiled (numba, the `fast` extra): the minimum and maximum (one numpy
# pass each, vectorised, NaN propagating; for small arrays one compiled pass), then one
# compiled, vectorised pass that rounds, scales back and (optionally) applies a following
# Relu, instead of numpy's four passes and a dozen Python-level steps (most casts in a
# 64-pixel network are of arrays of a few thousand values, where the steps cost more than
# the arithmetic). Every operation is the IEEE double operation numpy performs (a product by
# a power of two, floor / trunc / rint, a comparison), so the bits are the same: numba
# contracts no product and sum into an fma without fastmath, which it is not given.
try:
    if os.environ.get("CONVEYOR_NO_NUMBA"):
        raise ImportError("CONVEYOR_NO_NUMBA is set")
    from numba import njit as _njit
except ImportError:  # pragma: no cover - depends on the install
    _njit = None

#: rounding modes the compiled cast takes -> its code (the others keep the numpy path)
_NB_ROUNDING = {"TRN": 0, "TRN_ZERO": 1, "RND_CONV": 2, "RND": 3}
#: below this many values the minimum and maximum are found in the compiled pass too (numpy's
#: two vectorised reductions are faster on long arrays, its per-call overhead on short ones)
_NB_SMALL = 4096

if _njit is not None:
    @_njit(cache=True, nogil=True)
    def _nb_round(y, mode):
        if mode == 0:
            return np.floor(y)
        if mode == 1:
            return np.trunc(y)
        if mode == 2:
            return np.rint(y)
        # RND (ties towards +inf) as `_round` computes it: trunc, then the exact fraction
        t = np.trunc(y)
        fr = y - t  # exact: the fraction of a double is a double
        a = abs(fr)
        if a > 0.5 or (a == 0.5 and y > 0):
            t += 1.0 if fr > 0 else -1.0
        return t

    @_njit(cache=True, nogil=True)
    def _nb_fits(lo, hi, scale, mode, bottom, top, strict_bottom):
        """Whether the rounded minimum and maximum lie in the type's raw range (NaN: no)."""
        qlo = lo * scale
        qhi = hi * scale
        if not (np.isfinite(qlo) and np.isfinite(qhi)):
            return False
        qlo = _nb_round(qlo, mode)
        qhi = _nb_round(qhi, mode)
        if strict_bottom:
            if not qlo > bottom:
                return False
        elif not qlo >= bottom:
            return False
        return qhi < top

    @_njit(cache=True, nogil=True)
    def _nb_round_pass(x, out, scale, back, mode, relu):
        """out = round(x * scale) * back + 0.0 (then max(., 0) with `relu`): one loop per mode,
        so that each vectorises. (+ 0.0: -0.0 reads back as +0.0.)"""
        n = x.size
        if mode == 0:
            for i in range(n):
                out[i] = np.floor(x[i] * scale) * back + 0.0
        elif mode == 1:
            for i in range(n):
                out[i] = np.trunc(x[i] * scale) * back + 0.0
        elif mode == 2:
            for i in range(n):
                out[i] = np.rint(x[i] * scale) * back + 0.0
        else:
            for i in range(n):
                out[i] = _nb_round(x[i] * scale, mode) * back + 0.0
        if relu:
            for i in range(n):
                if out[i] < 0.0:
                    out[i] = 0.0

    @_njit(cache=True, nogil=True)
    def _nb_round_own(x, scale, back, mode, relu):
        """`_nb_round_pass` in place (one array: with two that alias, the vectorised loop's
        run-time overlap check sends every iteration down the scalar path)."""
        n = x.size
        if mode == 0:
            for i in range(n):
                x[i] = np.floor(x[i] * scale) * back + 0.0
        elif mode == 1:
            for i in range(n):
                x[i] = np.trunc(x[i] * scale) * back + 0.0
        elif mode == 2:
            for i in range(n):
                x[i] = np.rint(x[i] * scale) * back + 0.0
        else:
            for i in range(n):
                x[i] = _nb_round(x[i] * scale, mode) * back + 0.0
        if relu:
            for i in range(n):
                if x[i] < 0.0:
                    x[i] = 0.0

    @_njit(cache=True, nogil=True)
    def _nb_minmax(x):
        """(min, max, whether a value is NaN) in one pass (for short arrays)."""
        lo = np.inf
        hi = -np.inf
        for i in range(x.size):
            v = x[i]
            if v != v:
                return lo, hi, True
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        return lo, hi, False

    @_njit(cache=True, nogil=True)
    def _nb_cast(x, out, scale, back, mode, bottom, top, strict_bottom, relu):
        """`quantize_in_range` of a flat array into `out`: False (nothing written) when a
        value is NaN or overflows. (x may be read-only: this kernel never writes it.)"""
        lo, hi, nan = _nb_minmax(x)
        if nan or not _nb_fits(lo, hi, scale, mode, bottom, top, strict_bottom):
            return False
        _nb_round_pass(x, out, scale, back, mode, relu)
        return True

    @_njit(cache=True, nogil=True)
    def _nb_cast_own(x, scale, back, mode, bottom, top, strict_bottom, relu):
        """`_nb_cast` in place."""
        lo, hi, nan = _nb_minmax(x)
        if nan or not _nb_fits(lo, hi, scale, mode, bottom, top, strict_bottom):
            return False
        _nb_round_own(x, scale, back, mode, relu)
        return True


def quantize_in_range(t, x: np.ndarray, inplace: bool = False, relu: bool = False) -> np.ndarray | None:
    """``quantize_values(t, x)`` when no value of the float64 array ``x`` overflows ``t``;
    None (``x`` untouched) when one does, or for NaN, infinities and the types the general
    path treats specially (``F < 0``, ``W > 53``, ``I > 1023``). With ``inplace`` the
    result is written into ``x`` and returned; otherwise ``x`` is not modified. `relu`:
    the result then goes through max(., 0) (only on the compiled path: None otherwise)."""
    W, F = t.width, t.width - t.integer
    if x.dtype != np.float64 or x.size == 0 or F < 0 or W > 53 or F > 1020 or t.integer > 1023:
        return None
    mode = _NB_ROUNDING.get(t.rounding) if _njit is not None else None
    if mode is not None and not x.flags.c_contiguous:
        # a transposed or strided view (e.g. the product of a Transpose's output): one copy in
        # C order, then the compiled pass on the copy, which this function owns (the numpy
        # passes below cost 6x more on a strided array: 25 against 4 us for 2048 values)
        x, inplace = np.ascontiguousarray(x), True
    if mode is not None:
        out = x if inplace else np.empty_like(x, order="C")
        if t.signed:
            bottom, top = -(2.0 ** (W - 1)), 2.0 ** (W - 1)
        else:
            bottom, top = 0.0, 2.0 ** W
        flat, scale, strict = x.reshape(-1), 2.0 ** F, t.signed and t.overflow == "SAT_SYM"
        dest = None if inplace else out.reshape(-1)
        if flat.size <= _NB_SMALL:
            if inplace:
                ok = _nb_cast_own(flat, scale, 2.0 ** -F, mode, bottom, top, strict, relu)
            else:
                ok = _nb_cast(flat, dest, scale, 2.0 ** -F, mode, bottom, top, strict, relu)
            return out if ok else None
        if not _nb_fits(float(flat.min()), float(flat.max()), scale, mode, bottom, top, strict):
            return None
        if inplace:
            _nb_round_own(flat, scale, 2.0 ** -F, mode, relu)
        else:
            _nb_round_pass(flat, dest, scale, 2.0 ** -F, mode, relu)
        return out
    if relu:
        return None
    flat = x.reshape(-1) if x.flags.c_contiguous else None
    if flat is not None and flat.size > 2 * _CHUNK:
        lo, hi = np.inf, -np.inf
        for i in range(0, flat.size, _CHUNK):
            c = flat[i:i + _CHUNK]
            c_lo, c_hi = float(c.min()), float(c.max())
            if math.isnan(c_lo):  # NaN (min propagates it)
                return None
            lo, hi = min(lo, c_lo), max(hi, c_hi)
    else:
        lo, hi = float(x.min()), float(x.max())
    scale = 2.0 ** F
    q = np.array([lo, hi]) * scale  # NaN, inf and overflows to inf fail the checks below
    if not np.isfinite(q).all():
        return None
    _round_inplace(q, t.rounding)
    qlo, qhi = float(q[0]), float(q[1])
    if t.signed:
        bottom, top = -(2.0 ** (W - 1)), 2.0 ** (W - 1)
        if not (qlo > bottom if t.overflow == "SAT_SYM" else qlo >= bottom) or not qhi < top:
            return None
    elif not (qlo >= 0.0 and qhi < 2.0 ** W):
        return None
    if inplace:
        out = x
    else:
        out = np.empty_like(x, order="C")
        flat = out.reshape(-1)
    back = 2.0 ** -F
    if flat is None:  # a non-contiguous array, in place
        np.multiply(x, scale, out=out)
        _round_inplace(out, t.rounding)
        np.multiply(out, back, out=out)
        np.add(out, 0.0, out=out)  # -0.0 -> +0.0: a zero ap_fixed reads back as +0.0
        return out
    src = x.reshape(-1) if x.flags.c_contiguous else np.ascontiguousarray(x).reshape(-1)
    for i in range(0, flat.size, _CHUNK):
        c = flat[i:i + _CHUNK]
        np.multiply(src[i:i + _CHUNK], scale, out=c)
        _round_inplace(c, t.rounding)
        np.multiply(c, back, out=c)
        np.add(c, 0.0, out=c)
    return out
