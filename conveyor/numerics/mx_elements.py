"""Element formats of the OCP Microscaling (MX) v1.0 specification.

Each element format is a tiny number format: FP8 (E4M3, E5M2), FP6 (E3M2,
E2M3), FP4 (E2M1) and INT8 (two's complement with an implicit scale of 2^-6).
This module turns already-scaled float64 values into raw element codes (the bit
patterns an FPGA stores) and codes back into values, vectorized with numpy.

Rounding is round-to-nearest, ties to even; magnitudes above the largest normal
saturate to it (MX spec section 6.3).  Subnormals are kept.  The arithmetic is
written out in docs/numerics-mx.md so that the HLS code generator can follow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np


@dataclass(frozen=True)
class ElementFormat:
    """One MX element format, described by its bit fields.

    For float formats a magnitude code is ``(exponent_field << mbits) | mantissa``;
    the sign is the top bit of the ``bits``-wide code.  For ``int8`` the code is
    the two's complement byte and the value is ``code / 64``.
    """

    name: str
    bits: int  # storage bits per element
    ebits: int  # exponent field width (0 for int8)
    mbits: int  # explicit mantissa bits (fraction bits for int8)
    bias: int  # exponent bias (0 for int8)
    emax: int  # exponent of the largest normal (emax_elem in the spec)
    max_normal: float  # largest finite magnitude
    max_code: int  # magnitude code of max_normal (sign bit clear)
    has_inf: bool = False
    has_nan: bool = False

    @property
    def is_int(self) -> bool:
        return self.ebits == 0

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal (subnormals share it, without the implicit 1)."""
        return 1 - self.bias if not self.is_int else 0

    @property
    def min_subnormal(self) -> float:
        """Smallest positive magnitude (one unit in the last place at emin)."""
        return float(2.0 ** (self.emin - self.mbits))

    def decode_table(self) -> np.ndarray:
        """float64 value of every code 0 .. 2**bits - 1 (read-only)."""
        return _decode_table(self)


ELEMENT_FORMATS: dict[str, ElementFormat] = {
    f.name: f
    for f in (
        # E4M3: no Inf; S.1111.111 is NaN, so the largest normal is 1.75 * 2^8.
        ElementFormat("fp8_e4m3", 8, 4, 3, 7, 8, 448.0, 0x7E, has_nan=True),
        # E5M2: IEEE-like; exponent field 31 holds Inf (mantissa 0) and NaN.
        ElementFormat("fp8_e5m2", 8, 5, 2, 15, 15, 57344.0, 0x7B, has_inf=True, has_nan=True),
        # FP6 and FP4: every code is a finite number.
        ElementFormat("fp6_e3m2", 6, 3, 2, 3, 4, 28.0, 0x1F),
        ElementFormat("fp6_e2m3", 6, 2, 3, 1, 2, 7.5, 0x1F),
        ElementFormat("fp4_e2m1", 4, 2, 1, 1, 2, 6.0, 0x7),
        # INT8: two's complement 1.6 fixed point; encoding saturates symmetrically
        # at +-127/64 (code 0x80 = -2.0 decodes but is never produced).
        ElementFormat("int8", 8, 0, 6, 0, 0, 127.0 / 64.0, 127),
    )
}


@cache
def _decode_table(fmt: ElementFormat) -> np.ndarray:
    codes = np.arange(1 << fmt.bits, dtype=np.int64)
    if fmt.is_int:
        signed = np.where(codes >= 128, codes - 256, codes)
        table = signed.astype(np.float64) / 64.0
    else:
        sign = (codes >> (fmt.bits - 1)) & 1
        mag = codes & ((1 << (fmt.bits - 1)) - 1)
        efield = mag >> fmt.mbits
        mant = mag & ((1 << fmt.mbits) - 1)
        # subnormal (efield 0): mant * 2^(emin - mbits); normal: (2^mbits + mant) * 2^(efield - bias - mbits)
        sig = np.where(efield == 0, mant, mant + (1 << fmt.mbits)).astype(np.float64)
        exp = np.where(efield == 0, fmt.emin, efield - fmt.bias) - fmt.mbits
        table = np.ldexp(sig, exp.astype(np.int32))
        top = (1 << fmt.ebits) - 1
        if fmt.name == "fp8_e4m3":
            table[(efield == top) & (mant == (1 << fmt.mbits) - 1)] = np.nan
        elif fmt.has_inf:
            table[(efield == top) & (mant == 0)] = np.inf
            table[(efield == top) & (mant != 0)] = np.nan
        table = np.where(sign == 1, -table, table)
    table.setflags(write=False)
    return table


def encode_elements(y: np.ndarray, fmt: ElementFormat) -> np.ndarray:
    """Round finite float64 values ``y`` (already divided by the block scale) to codes.

    Round-to-nearest-even, saturating at ``fmt.max_normal``; the sign of zero is
    kept for float formats (``-0.0`` and negative values that round to zero give
    the negative-zero code).  Returns uint8 codes of the same shape.
    """
    a = np.abs(y)
    if fmt.is_int:
        k = np.minimum(np.rint(a * 64.0), fmt.max_code)
        signed = np.where(np.signbit(y), -k, k).astype(np.int16)
        return (signed & 0xFF).astype(np.uint8)
    # Exponent of each magnitude, floored at emin so that subnormals share emin.
    _, e = np.frexp(a)  # a = f * 2^e with f in [0.5, 1); a == 0 gives e == 0
    e = np.maximum(e - 1, fmt.emin)
    e[a == 0] = fmt.emin  # zero is the subnormal with significand 0
    # Integer significand on the grid of that binade: exact scaling, then RNE.
    k = np.rint(np.ldexp(a, fmt.mbits - e))
    # (e - emin) * 2^mbits + k is the magnitude code, also when rounding carries
    # into the next binade or from the subnormals into the normals.
    mag = (e - fmt.emin).astype(np.float64) * float(1 << fmt.mbits) + k
    mag = np.minimum(mag, float(fmt.max_code)).astype(np.uint8)
    sign = np.signbit(y).astype(np.uint8) << np.uint8(fmt.bits - 1)
    return mag | sign


def decode_elements(codes: np.ndarray, fmt: ElementFormat) -> np.ndarray:
    """float64 values of element codes (NaN/Inf codes decode to NaN/Inf)."""
    return _decode_table(fmt)[codes]
