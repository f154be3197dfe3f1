"""``FixedType``: Xilinx ``ap_fixed<W,I,Q,O,N>`` / ``ap_ufixed`` / ``ap_int`` / ``ap_uint``.

Semantics are those of the ap_types headers (``ap_fixed_base.h``), checked bit
for bit by ``tests/test_numerics_ap_oracle.py``; docs/numerics.md "## ap_fixed"
states them in words.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from conveyor.errors import PrecisionError
from conveyor.numerics import fixed_quantize as _fq

__all__ = [
    "OVERFLOW_MODES",
    "ROUNDING_MODES",
    "FixedType",
    "add_type",
    "div_type",
    "mul_type",
    "sub_type",
]

ROUNDING_MODES = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV")
OVERFLOW_MODES = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM", "WRAP_SM")

GRAMMAR = (
    "ap_fixed<W,I[,Q[,O[,N]]]>, ap_ufixed<W,I[,Q[,O[,N]]]>, ap_int<W> or ap_uint<W> "
    "(hls4ml's fixed<...> too; Q and O modes in docs/numerics.md)"
)

_TYPE_RE = re.compile(r"^\s*(?:ap_)?(u?)(fixed|int)\s*<(.*)>\s*$", re.IGNORECASE)
_INT_RE = re.compile(r"^[+-]?\d+$")


def _mode(value, allowed, field):
    if not isinstance(value, str):
        raise PrecisionError(f"{field} {value!r} is not a mode name; accepted: {', '.join(allowed)}")
    name = value.strip().upper()
    name = name.removeprefix("AP_")
    if name not in allowed:
        raise PrecisionError(
            f"{field} {value!r} unknown; accepted: {', '.join(allowed)} (optionally with the AP_ prefix)"
        )
    return name


@dataclass(frozen=True)
class FixedType:
    """One ``ap_[u]fixed<width, integer, AP_<rounding>, AP_<overflow>, sat_bits>``.

    ``ap_int<W>`` is ``FixedType(W, W)`` and ``ap_uint<W>`` is
    ``FixedType(W, W, signed=False)``: same storage and arithmetic types. (Do not
    emit ``ap_int<W> v = double`` in generated C++: the ap_int double
    constructor truncates towards zero and maps tiny negatives to +1; emit
    ``ap_fixed<W,W>`` instead, whose conversion this class models.)
    """

    width: int
    integer: int
    signed: bool = True
    rounding: str = "TRN"
    overflow: str = "WRAP"
    sat_bits: int = 0

    def __post_init__(self):
        for field in ("width", "integer", "sat_bits"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise PrecisionError(f"FixedType {field} {v!r} is not an integer; accepted: {GRAMMAR}")
            object.__setattr__(self, field, int(v))
        if self.width < 1:
            raise PrecisionError(f"FixedType width {self.width} must be >= 1; accepted: {GRAMMAR}")
        if not isinstance(self.signed, (bool, np.bool_)):
            raise PrecisionError(f"FixedType signed {self.signed!r} must be True or False")
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "rounding", _mode(self.rounding, ROUNDING_MODES, "rounding mode"))
        object.__setattr__(self, "overflow", _mode(self.overflow, OVERFLOW_MODES, "overflow mode"))
        if not 0 <= self.sat_bits <= self.width:
            raise PrecisionError(
                f"saturation bits N={self.sat_bits} out of range for width {self.width}; accepted: 0 <= N <= W"
            )
        if not self.signed and self.overflow == "WRAP_SM":
            raise PrecisionError(
                f"AP_WRAP_SM on an unsigned type ({self._name()}<{self.width},{self.integer},...>) is "
                "rejected by the headers at run time; accepted: AP_WRAP, AP_SAT, AP_SAT_ZERO, AP_SAT_SYM"
            )

    # ------------------------------------------------------------------ text
    def _name(self) -> str:
        return "ap_fixed" if self.signed else "ap_ufixed"

    def __str__(self) -> str:
        args = [str(self.width), str(self.integer)]
        if self.rounding != "TRN" or self.overflow != "WRAP" or self.sat_bits:
            args.append("AP_" + self.rounding)
        if self.overflow != "WRAP" or self.sat_bits:
            args.append("AP_" + self.overflow)
        if self.sat_bits:
            args.append(str(self.sat_bits))
        return f"{self._name()}<{','.join(args)}>"

    @classmethod
    def parse(cls, text: str) -> FixedType:
        """Read ``ap_fixed<16,6>``, ``ap_ufixed<8,0,AP_RND,AP_SAT>``, ``ap_int<8>``,
        hls4ml's ``fixed<16,6,RND_CONV,SAT>`` / ``ufixed<...>`` / ``int<8>``, ..."""
        if isinstance(text, FixedType):
            return text
        if not isinstance(text, str):
            raise PrecisionError(f"precision {text!r} is not a string; accepted: {GRAMMAR}")
        m = _TYPE_RE.match(text)
        if not m:
            raise PrecisionError(f"cannot parse precision {text!r}; accepted: {GRAMMAR}")
        unsigned, kind, body = m.group(1), m.group(2).lower(), m.group(3)
        args = [a.strip() for a in body.split(",")]
        n_int = 1 if kind == "int" else 2
        most = 1 if kind == "int" else 5
        if not n_int <= len(args) <= most:
            raise PrecisionError(
                f"precision {text!r} has {len(args)} template argument(s), "
                f"{kind} takes {n_int if most == n_int else f'{n_int} to {most}'}; accepted: {GRAMMAR}"
            )
        for a in args[:n_int] + args[4:5]:
            if not _INT_RE.match(a):
                raise PrecisionError(f"precision {text!r}: {a!r} is not an integer; accepted: {GRAMMAR}")
        width = int(args[0])
        integer = width if kind == "int" else int(args[1])
        try:
            rounding = _mode(args[2], ROUNDING_MODES, "rounding mode") if len(args) > 2 else "TRN"
            overflow = _mode(args[3], OVERFLOW_MODES, "overflow mode") if len(args) > 3 else "WRAP"
            return cls(width, integer, not unsigned, rounding, overflow, int(args[4]) if len(args) > 4 else 0)
        except PrecisionError as exc:
            raise PrecisionError(f"precision {text!r}: {exc}") from None

    # ------------------------------------------------------------ properties
    @property
    def frac_bits(self) -> int:
        """W - I: bits right of the binary point (negative when I > W)."""
        return self.width - self.integer

    @property
    def lsb(self) -> float:
        """Weight of the least significant bit, 2**(I-W) (inf past the double range)."""
        try:
            return math.ldexp(1.0, self.integer - self.width)
        except OverflowError:
            return math.inf

    @property
    def raw_min(self) -> int:
        """Smallest stored integer (exact Python int)."""
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        """Largest stored integer (exact Python int)."""
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @cached_property  # a frozen value: computed once per type (kernels ask for it on every run)
    def min_value(self) -> float:
        """Smallest value, as the nearest double (exact for W <= 53)."""
        return float(self.from_raw(np.array([self.raw_min], dtype=object))[0])

    @cached_property
    def max_value(self) -> float:
        """Largest value, as the nearest double (exact for W <= 53; for wider
        types it may round up to 2**(I-1) or 2**I)."""
        return float(self.from_raw(np.array([self.raw_max], dtype=object))[0])

    # ------------------------------------------------------------ conversion
    def quantize(self, x) -> np.ndarray:
        """float64 values held after ``ap_fixed<...> v = (double)x`` (same shape).

        Exact for W <= 53; wider values come back rounded half-to-even, as the
        header's ``to_double()`` does. NaN raises PrecisionError; +-inf is read
        as +-2**1024, like the header does (so it saturates, or wraps to 0).
        """
        return _fq.quantize_values(self, _fq.as_double_array(x, f"quantize to {self}"))

    def quantize_raw(self, x) -> np.ndarray:
        """Stored two's-complement integers of ``x`` (same shape): int64 when the
        range fits (W <= 63, or W == 64 signed), else Python ints (object)."""
        return _fq.quantize_raw(self, _fq.as_double_array(x, f"quantize to {self}"))

    to_raw = quantize_raw

    def unbounded(self) -> FixedType:
        """The same grid (LSB and rounding) with a range no double can leave:
        ``quantize`` through it rounds without ever overflowing."""
        return FixedType(self.frac_bits + 1100, 1100, True, self.rounding)

    def from_raw(self, raw) -> np.ndarray:
        """float64 values of stored integers (``raw * lsb``, round-half-even)."""
        a = np.asarray(raw)
        if a.dtype.kind not in "iuO" and a.dtype != bool:
            raise PrecisionError(
                f"from_raw for {self}: dtype {a.dtype} is not integer; accepted: integer arrays in "
                f"[{self.raw_min}, {self.raw_max}]"
            )
        if a.size:
            if a.dtype == object:
                flat = a.ravel().tolist()
                for v in flat:
                    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                        raise PrecisionError(f"from_raw for {self}: {v!r} is not an integer")
                lo_v, hi_v = min(flat), max(flat)
            else:
                lo_v, hi_v = int(a.min()), int(a.max())
            for v in (lo_v, hi_v):
                if not self.raw_min <= v <= self.raw_max:
                    raise PrecisionError(
                        f"from_raw for {self}: raw {v} out of range; accepted: [{self.raw_min}, {self.raw_max}]"
                    )
        return _fq.raw_to_values(self, a)

    # ----------------------------------------------------------- arithmetic
    def add_type(self, other: FixedType) -> FixedType:
        return add_type(self, other)

    def sub_type(self, other: FixedType) -> FixedType:
        return sub_type(self, other)

    def mul_type(self, other: FixedType) -> FixedType:
        return mul_type(self, other)

    def div_type(self, other: FixedType) -> FixedType:
        return div_type(self, other)


def _int_grow(a: FixedType, b: FixedType) -> int:
    # ap_fixed_base RType: an unsigned operand meeting a signed one gains a bit
    return max(a.integer + (b.signed and not a.signed), b.integer + (a.signed and not b.signed))


def add_type(a: FixedType, b: FixedType) -> FixedType:
    """Type of ``a + b`` (RType::plus): AP_TRN / AP_WRAP defaults."""
    i = _int_grow(a, b) + 1
    return FixedType(i + max(a.frac_bits, b.frac_bits), i, a.signed or b.signed)


def sub_type(a: FixedType, b: FixedType) -> FixedType:
    """Type of ``a - b`` (RType::minus): like ``+`` but always signed."""
    i = _int_grow(a, b) + 1
    return FixedType(i + max(a.frac_bits, b.frac_bits), i, True)


def mul_type(a: FixedType, b: FixedType) -> FixedType:
    """Type of ``a * b`` (RType::mult): widths and integer widths add."""
    return FixedType(a.width + b.width, a.integer + b.integer, a.signed or b.signed)


def div_type(a: FixedType, b: FixedType) -> FixedType:
    """Type of ``a / b`` (RType::div, without __SC_COMPATIBLE__)."""
    s2 = int(b.signed)
    return FixedType(s2 + a.width + max(b.frac_bits, 0), s2 + a.integer + b.frac_bits, a.signed or b.signed)
