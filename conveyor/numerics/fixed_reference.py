"""Literal, scalar port of the Xilinx ``ap_fixed_base(double)`` constructor.

This follows ``ap_fixed_base.h`` statement by statement with Python integers
(``ap_private`` bit patterns become non-negative ints masked to their width),
so it is slow (microseconds per value) but obviously faithful. It serves two
purposes:

* the fallback of :mod:`conveyor.numerics.fixed_quantize` for types outside the
  range where the vectorized float64 path is proven exact (LSB weight beyond
  2**±1020, widths above 970 bits);
* the reference the vectorized path is property-tested against when the real
  headers are not at hand.

Only the names in ``__all__`` are meant for use; everything works on the raw
bit pattern ``V`` (an int in ``[0, 2**W)``).
"""

from __future__ import annotations

import struct

__all__ = ["assign_double_bits", "double_bits"]

_DOUBLE_MAN = 52
_W2 = _DOUBLE_MAN + 2  # width of the signed mantissa register `man`
_MASK54 = (1 << _W2) - 1


def double_bits(x: float) -> int:
    """The IEEE-754 bit pattern of ``x`` as an unsigned 64-bit int."""
    return struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def _bit(v: int, k: int) -> int:
    # two's complement bit k of a (possibly negative) Python int
    return (v >> k) & 1


def _set_bit(v: int, k: int, b: int) -> int:
    return (v | (1 << k)) if b else (v & ~(1 << k))


def _set_range(v: int, lo: int, hi: int, repl: int) -> int:
    span = (1 << (hi - lo + 1)) - 1
    return (v & ~(span << lo)) | ((repl & span) << lo)


def assign_double_bits(
    bits64: int, width: int, integer: int, signed: bool, rounding: str, overflow: str, sat_bits: int
) -> int:
    """Stored bit pattern (in ``[0, 2**width)``) of ``ap_[u]fixed<...> v = d``.

    ``bits64`` is the IEEE-754 pattern of ``d``. Mode names are without the
    ``AP_`` prefix. NaN and Inf follow the header (a NaN/Inf is read as
    ``±1.mantissa * 2**1024``); subnormals are read as ``±1.mantissa * 2**-1023``
    exactly as the header does.
    """
    W, I, S, Q, O, N = width, integer, bool(signed), rounding, overflow, sat_bits
    mask = (1 << W) - 1
    isneg = bool(_bit(bits64, 63))
    exp = ((bits64 >> _DOUBLE_MAN) & 0x7FF) - 1023
    man = (bits64 & ((1 << _DOUBLE_MAN) - 1)) | (1 << _DOUBLE_MAN)
    if isneg:
        man = -man
    if bits64 & 0x7FFF_FFFF_FFFF_FFFF == 0:
        return 0
    W2, I2, F, S2 = _W2, exp + 2, W - I, True
    F2 = W2 - I2
    quan_inc = F2 > F and not (Q == "TRN" or (Q == "TRN_ZERO" and not S2))
    carry = False
    sh_amt = F2 - F if F2 > F else F - F2
    if F2 == F:
        V = man & mask
    elif F2 > F:
        V = ((man >> sh_amt) if sh_amt < W2 else (-1 if isneg else 0)) & mask
        if Q != "TRN" and not (Q == "TRN_ZERO" and not S2):
            qb = isneg if F2 - F > W2 else bool(_bit(man, F2 - F - 1))
            if F2 > F + 1:
                hi = F2 - F - 2 if F2 - F - 2 < W2 else W2 - 1
                r = (man & ((1 << (hi + 1)) - 1)) != 0
            else:
                r = False
            V, carry = _quantization_adjust(V, W, mask, Q, qb, r, isneg)
    else:
        V = ((man & mask) << sh_amt) & mask if sh_amt < W else 0
    if (O != "WRAP" or N != 0) and (
        (not S and S2) or (I - S < I2 - S2 + (quan_inc or (S2 and O == "SAT_SYM")))
    ):
        V = _saturate(V, W, I, S, O, N, mask, man, isneg, carry, F, F2)
    return V


def _quantization_adjust(V, W, mask, Q, qb, r, s):
    carry = bool(_bit(V, W - 1))
    if Q == "TRN":
        return V, False
    if Q == "RND_ZERO":
        qb = qb and (s or r)
    elif Q == "RND_MIN_INF":
        qb = qb and r
    elif Q == "RND_INF":
        qb = qb and (not s or r)
    elif Q == "RND_CONV":
        qb = qb and (bool(_bit(V, 0)) or r)
    elif Q == "TRN_ZERO":
        qb = s and (qb or r)
    V = (V + int(qb)) & mask
    return V, carry and not _bit(V, W - 1)


def _saturate(V, W, I, S, O, N, mask, man, isneg, carry, F, F2):
    W2 = _W2
    deleted_zeros = True  # _AP_S2 is true for a double source
    deleted_ones = True
    neg_src = isneg
    lD = False
    pos1 = F2 - F + W
    pos2 = F2 - F + W + 1
    newsignbit = bool(_bit(V, W - 1))
    if 0 <= pos1 < W2:
        lD = bool((man >> pos1) & 1)
    if pos1 < W2:
        r1_ones = r1_zeros = r2_ones = True
        range2 = 0
        man_u = man & _MASK54
        if 0 <= pos2 < W2:
            range2 = man_u >> pos2
            r2_ones = range2 == (_MASK54 >> pos2)
        elif pos2 < 0:
            r2_ones = False
        if pos1 >= 0 and pos2 < W2:
            r1_ones = r2_ones and lD
            r1_zeros = range2 == 0 and not lD
        elif pos2 == W2:
            r1_ones = lD
            r1_zeros = not lD
        elif pos1 < 0:
            r1_zeros = man == 0
            r1_ones = False
        deleted_zeros = deleted_zeros and (r1_ones if carry else r1_zeros)
        deleted_ones = (r2_ones and (pos1 < 0 or not lD)) if carry else r1_ones
        neg_src = isneg and not (carry and r1_ones)
    else:
        neg_src = isneg and newsignbit
    neg_trg = S and newsignbit
    overflow = (neg_trg or not deleted_zeros) and not isneg
    underflow = (not neg_trg or not deleted_ones) and neg_src
    if O == "SAT_SYM" and S:
        underflow = underflow or (neg_src and ((V & ((1 << (W - 1)) - 1)) == 0 if W > 1 else True))
    return _overflow_adjust(V, W, S, O, N, mask, underflow, overflow, lD, neg_src)


def _overflow_adjust(V, W, S, O, N, mask, underflow, overflow, lD, sign):
    if not underflow and not overflow:
        return V
    if O == "WRAP":
        if N == 0:
            return V
        if S:
            V = _set_bit(V, W - 1, sign)
            if N > 1:
                V = _set_range(V, W - N, W - 2, 0 if sign else mask)
        else:
            V = _set_range(V, W - N, W - 1, mask)
    elif O == "SAT_ZERO":
        V = 0
    elif O == "WRAP_SM" and S:
        ro = bool(_bit(V, W - 1))
        if N == 0:
            if lD != ro:
                V = ~V & mask
                V = _set_bit(V, W - 1, lD)
        else:
            if N == 1 and sign != ro:
                V = ~V & mask
            elif N > 1:
                l_no = bool(_bit(V, W - N))
                if l_no == sign:
                    V = ~V & mask
                V = _set_range(V, W - N, W - 2, 0 if sign else mask)
            V = _set_bit(V, W - 1, sign)
    else:
        if S:
            if overflow:
                V = mask >> 1
            elif underflow:
                V = 1 << (W - 1)
                if O == "SAT_SYM":
                    V |= 1
        else:
            if overflow:
                V = mask
            elif underflow:
                V = 0
    return V & mask
