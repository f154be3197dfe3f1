"""Block-scaled number formats: OCP Microscaling (MX) v1.0 and Brainwave's MSFP.

Both share one power-of-two exponent among a block of consecutive values
along one axis; every element keeps only a few bits.  All formats here offer the
same small interface (:class:`BlockFormat`)::

    fmt = parse_block_format("mx:fp8_e4m3")     # or "mx:fp4_e2m1/16", "msfp12", ...
    q = fmt.quantize(x, axis=-1)                  # dequantized values, same shape
    scales, codes = fmt.encode(x, axis=-1)        # raw bit patterns for hardware
    y = fmt.decode(scales, codes, axis=-1)        # == q, bit for bit
    fmt.bits_per_element                          # storage incl. the amortized scale

A last partial block is allowed; it behaves as if padded with zeros.  The exact
arithmetic (for the HLS generator to mirror) and the sources are in
docs/numerics-mx.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from conveyor.errors import PrecisionError
from conveyor.numerics.mx_elements import (
    ELEMENT_FORMATS,
    ElementFormat,
    decode_elements,
    encode_elements,
)

__all__ = [
    "ELEMENT_FORMATS",
    "SCALE_BIAS",
    "SCALE_NAN",
    "BlockFormat",
    "ElementFormat",
    "MSFPType",
    "MXType",
    "parse_block_format",
]

SCALE_BIAS = 127  # E8M0: value 2^(code - 127), codes 0..254
SCALE_NAN = 0xFF  # E8M0 NaN: every element of the block decodes as NaN
_EXP_MIN, _EXP_MAX = -127, 127
_CHUNK_VALUES = 1 << 17  # values per vectorized step: bounds temporaries, keeps them in cache

_MX_FORMS = "mx:<element>[/<block_size>] with element one of " + ", ".join(ELEMENT_FORMATS)
_MSFP_FORMS = (
    "msfp<N>[/<block_size>][-trunc] (N = 1 + 8 + mantissa bits, 10..24)"
    " or msfp:k=<mantissa_bits>[/<block_size>][-trunc]"
)
_ACCEPTED = f"{_MX_FORMS}; {_MSFP_FORMS}"


@runtime_checkable
class BlockFormat(Protocol):
    """What later code may rely on for any block format."""

    @property
    def name(self) -> str: ...

    @property
    def block_size(self) -> int: ...

    @property
    def bits_per_element(self) -> float: ...

    def quantize(self, x, axis: int = -1) -> np.ndarray: ...

    def encode(self, x, axis: int = -1) -> tuple[np.ndarray, np.ndarray]: ...

    def decode(self, scales, codes, axis: int = -1, dtype=np.float32) -> np.ndarray: ...


# --------------------------------------------------------------------------- helpers


def _check_block_size(block_size, who: str) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise PrecisionError(f"block_size {block_size!r} in {who} is not accepted; a positive integer is (e.g. 32)")
    return int(block_size)


def _as_float(x, who: str) -> tuple[np.ndarray, np.dtype]:
    """float64 working copy of x and the dtype of the result (float64 stays, all else float32)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise PrecisionError(
            f"{who}: input of dtype {arr.dtype} cannot be quantized; accepted: real numbers (float, int, bool arrays)"
        )
    out_dtype = np.dtype(np.float64) if arr.dtype.kind == "f" and arr.dtype.itemsize >= 8 else np.dtype(np.float32)
    return arr.astype(np.float64, copy=False), out_dtype


def _norm_axis(axis, ndim: int, who: str) -> int:
    n = max(ndim, 1)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -n <= axis < n:
        raise PrecisionError(f"{who}: axis {axis!r} is out of range for a {ndim}-d array; accepted: {-n}..{n - 1}")
    return int(axis) % n


def _to_blocks(x: np.ndarray, axis: int, block_size: int) -> tuple[np.ndarray, tuple]:
    """View x as (..., n_blocks, block_size) with the block axis last, zero-padded."""
    moved = np.moveaxis(x.reshape(1) if x.ndim == 0 else x, axis, -1)
    lead, n = moved.shape[:-1], moved.shape[-1]
    nb = -(-n // block_size)
    pad = nb * block_size - n
    if pad:
        moved = np.concatenate([moved, np.zeros(lead + (pad,), dtype=moved.dtype)], axis=-1)
    return moved.reshape(lead + (nb, block_size)), (x.ndim, axis, lead, n)


def _from_blocks(b: np.ndarray, meta: tuple) -> np.ndarray:
    ndim, axis, lead, n = meta
    flat = b.reshape(lead + (b.shape[-2] * b.shape[-1],))[..., :n]
    return flat.reshape(()) if ndim == 0 else np.moveaxis(flat, -1, axis)


def _scales_from_blocks(s: np.ndarray, meta: tuple) -> np.ndarray:
    ndim, axis, _, _ = meta
    return s.reshape(()) if ndim == 0 else np.moveaxis(s, -1, axis)


def _shared_exponent(rows: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """floor(log2(max |x|)) - offset per block (row), clamped to [-127, 127]; and the finite mask.

    An all-zero block gets -127 (the smallest scale).  A block holding Inf or NaN
    is marked non-finite (its max is Inf/NaN; np.max propagates NaN).
    """
    amax = np.max(np.abs(rows), axis=-1)
    finite = np.isfinite(amax)
    amax = np.where(finite, amax, 0.0)
    _, e = np.frexp(amax)  # amax = f * 2^e, f in [0.5, 1)
    s = np.where(amax > 0, e.astype(np.int64) - 1 - offset, _EXP_MIN)
    return np.clip(s, _EXP_MIN, _EXP_MAX), finite


def _zero_nonfinite(rows: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """rows with every block that holds Inf/NaN replaced by zeros (its scale becomes NaN)."""
    return rows if finite.all() else np.where(finite[:, None], rows, 0.0)


class _BlockCodec:
    """quantize / encode / decode on top of per-format _encode_rows / _decode_rows.

    Blocks are processed as rows of a (n_blocks, block_size) array, in chunks of
    whole blocks (each chunk fully vectorized), so memory stays a small multiple
    of the input whatever its size.
    """

    def _chunks(self, n_rows: int) -> list[slice]:
        step = max(1, _CHUNK_VALUES // self.block_size)
        return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]

    def quantize(self, x, axis: int = -1) -> np.ndarray:
        """Dequantized values of x (float64 in -> float64 out, anything else -> float32)."""
        x64, out_dtype = _as_float(x, self.name)
        ax = _norm_axis(axis, x64.ndim, self.name)
        blocks, meta = _to_blocks(x64, ax, self.block_size)
        rows = blocks.reshape(-1, self.block_size)
        out = np.empty(rows.shape, out_dtype)
        for c in self._chunks(rows.shape[0]):
            out[c] = self._decode_rows(*self._encode_rows(rows[c]))
        return _from_blocks(out.reshape(blocks.shape), meta)

    def encode(self, x, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(scales, codes): uint8 biased shared exponents, shape of x with ``axis`` cut to
        ceil(n / block_size); element bit patterns, shape of x."""
        x64, _ = _as_float(x, self.name)
        ax = _norm_axis(axis, x64.ndim, self.name)
        blocks, meta = _to_blocks(x64, ax, self.block_size)
        rows = blocks.reshape(-1, self.block_size)
        scales = np.empty(rows.shape[0], np.uint8)
        codes = np.empty(rows.shape, self._code_dtype)
        for c in self._chunks(rows.shape[0]):
            scales[c], codes[c] = self._encode_rows(rows[c])
        return (
            _scales_from_blocks(scales.reshape(blocks.shape[:-1]), meta),
            _from_blocks(codes.reshape(blocks.shape), meta).copy(),
        )

    def decode(self, scales, codes, axis: int = -1, dtype=np.float32) -> np.ndarray:
        """Values of an encoded tensor (the inverse of :meth:`encode`)."""
        codes = np.asarray(codes)
        scales = np.asarray(scales)
        for what, arr, hi in (("scales", scales, 255), ("codes", codes, self._max_code_value)):
            if arr.dtype.kind not in "iu":
                raise PrecisionError(f"{self.name}: {what} of dtype {arr.dtype}; accepted: integer arrays")
            if arr.size and (arr.min() < 0 or arr.max() > hi):
                raise PrecisionError(f"{self.name}: {what} hold values outside 0..{hi}; accepted: raw codes 0..{hi}")
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise PrecisionError(f"{self.name}: decode dtype {dtype}; accepted: float32 or float64")
        ax = _norm_axis(axis, codes.ndim, self.name)
        if scales.ndim != codes.ndim:
            raise PrecisionError(
                f"{self.name}: scales have {scales.ndim} dimension(s) and codes {codes.ndim}; accepted: the same number"
            )
        cblocks, meta = _to_blocks(codes, ax, self.block_size)
        sblocks = np.moveaxis(scales.reshape(1) if scales.ndim == 0 else scales, ax, -1)
        if sblocks.shape != cblocks.shape[:-1]:
            raise PrecisionError(
                f"{self.name}: scales of shape {scales.shape} do not fit codes of shape {codes.shape}"
                f" along axis {axis}; accepted: codes' shape with that axis cut to {cblocks.shape[-2]} blocks"
            )
        crows = cblocks.reshape(-1, self.block_size).astype(np.int64)
        srows = sblocks.reshape(-1).astype(np.int64)
        out = np.empty(crows.shape, dtype)
        for c in self._chunks(crows.shape[0]):
            out[c] = self._decode_rows(srows[c], crows[c])
        return _from_blocks(out.reshape(cblocks.shape), meta)

    def __str__(self) -> str:
        return self.name


# --------------------------------------------------------------------------- MX


@dataclass(frozen=True)
class MXType(_BlockCodec):
    """An OCP MX v1.0 format: one E8M0 scale per ``block_size`` elements of ``element``.

    Encoding of a block V_1..V_k (spec section 6.3, Algorithm 1)::

        shared_exp = floor(log2(max|V_i|)) - emax_elem, clamped to [-127, 127]
        X          = 2^shared_exp                  (E8M0 code shared_exp + 127)
        P_i        = RNE(V_i / X) in the element format, saturating at its max normal

    An all-zero block gets X = 2^-127 (code 0).  A block holding Inf or NaN gets
    scale code 0xFF (NaN) and zero element codes; all its elements decode as NaN
    (as the reference microsoft/microxcaling does).
    """

    element: str
    block_size: int = 32

    def __post_init__(self):
        if not isinstance(self.element, str) or self.element.lower() not in ELEMENT_FORMATS:
            raise PrecisionError(f"MX element {self.element!r} is not known; accepted: {', '.join(ELEMENT_FORMATS)}")
        object.__setattr__(self, "element", self.element.lower())
        object.__setattr__(self, "block_size", _check_block_size(self.block_size, f"MXType({self.element!r})"))

    @classmethod
    def parse(cls, text: str) -> MXType:
        """``mx:<element>`` or ``mx:<element>/<block_size>``, e.g. ``mx:fp4_e2m1/16``."""
        m = re.fullmatch(r"mx:([a-z0-9_]+)(?:/(\d+))?", text.strip().lower()) if isinstance(text, str) else None
        if m is None:
            raise PrecisionError(f"MX format {text!r} is not understood; accepted: {_MX_FORMS}")
        try:
            return cls(m.group(1), int(m.group(2)) if m.group(2) else 32)
        except PrecisionError as e:
            raise PrecisionError(f"MX format {text!r}: {e}") from None

    @property
    def element_format(self) -> ElementFormat:
        return ELEMENT_FORMATS[self.element]

    @property
    def name(self) -> str:
        return f"mx:{self.element}" + ("" if self.block_size == 32 else f"/{self.block_size}")

    @property
    def bits_per_element(self) -> float:
        return self.element_format.bits + 8.0 / self.block_size

    @property
    def _max_code_value(self) -> int:
        return (1 << self.element_format.bits) - 1

    _code_dtype = np.uint8

    def _encode_rows(self, rows):
        fmt = self.element_format
        s, finite = _shared_exponent(rows, fmt.emax)
        codes = encode_elements(np.ldexp(_zero_nonfinite(rows, finite), -s[:, None]), fmt)
        scales = np.where(finite, s + SCALE_BIAS, SCALE_NAN).astype(np.uint8)
        return scales, codes

    def _decode_rows(self, scales, codes):
        scales = scales.astype(np.int64)
        vals = np.ldexp(decode_elements(codes, self.element_format), (scales - SCALE_BIAS)[:, None])
        return np.where((scales == SCALE_NAN)[:, None], np.nan, vals)


# --------------------------------------------------------------------------- MSFP

_ROUNDINGS = ("nearest_even", "truncate")


@dataclass(frozen=True)
class MSFPType(_BlockCodec):
    """Microsoft floating point (Brainwave MSFP): block floating point.

    One 8-bit shared exponent per ``block_size`` elements (default 16); each
    element is a sign bit and a ``mantissa_bits``-bit magnitude aligned to the
    shared exponent, with no implicit leading one::

        E   = floor(log2(max|V_i|)), clamped to [-127, 127]   (code E + 127; 0xFF = NaN block)
        m_i = round(|V_i| * 2^(mantissa_bits - 1 - E)), saturating at 2^mantissa_bits - 1
        value_i = (-1)^s_i * m_i * 2^(E - mantissa_bits + 1)

    ``rounding`` is ``"nearest_even"`` (default) or ``"truncate"`` (toward zero).
    MSFP12 = 8-bit exponent + sign + 3 mantissa bits; MSFP16 = 8 + 1 + 7.
    Element codes are sign-magnitude: sign at bit ``mantissa_bits``.
    """

    mantissa_bits: int
    block_size: int = 16
    rounding: str = "nearest_even"

    def __post_init__(self):
        k = self.mantissa_bits
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 15:
            raise PrecisionError(f"MSFP mantissa_bits {k!r} is not accepted; accepted: an integer 1..15")
        object.__setattr__(self, "mantissa_bits", int(k))
        object.__setattr__(self, "block_size", _check_block_size(self.block_size, f"MSFPType({k})"))
        if self.rounding not in _ROUNDINGS:
            raise PrecisionError(f"MSFP rounding {self.rounding!r} is not known; accepted: {', '.join(_ROUNDINGS)}")

    @classmethod
    def parse(cls, text: str) -> MSFPType:
        """``msfp12``, ``msfp16/32``, ``msfp:k=5/16``, any of them with a ``-trunc`` suffix."""
        t = text.strip().lower() if isinstance(text, str) else ""
        m = re.fullmatch(r"msfp(?:(\d+)|:k=(\d+))(?:/(\d+))?(-trunc)?", t)
        if m is None or (m.group(1) and not 10 <= int(m.group(1)) <= 24):
            raise PrecisionError(f"MSFP format {text!r} is not understood; accepted: {_MSFP_FORMS}")
        k = int(m.group(1)) - 9 if m.group(1) else int(m.group(2))
        try:
            return cls(k, int(m.group(3)) if m.group(3) else 16, "truncate" if m.group(4) else "nearest_even")
        except PrecisionError as e:
            raise PrecisionError(f"MSFP format {text!r}: {e}") from None

    @property
    def name(self) -> str:
        return (
            f"msfp{self.mantissa_bits + 9}"
            + ("" if self.block_size == 16 else f"/{self.block_size}")
            + ("-trunc" if self.rounding == "truncate" else "")
        )

    @property
    def bits_per_element(self) -> float:
        return 1 + self.mantissa_bits + 8.0 / self.block_size

    @property
    def _max_code_value(self) -> int:
        return (1 << (self.mantissa_bits + 1)) - 1

    @property
    def _code_dtype(self):
        return np.uint8 if self.mantissa_bits < 8 else np.uint16

    def _encode_rows(self, rows):
        k = self.mantissa_bits
        s, finite = _shared_exponent(rows, 0)
        a = np.ldexp(np.abs(_zero_nonfinite(rows, finite)), (k - 1) - s[:, None])
        m = np.rint(a) if self.rounding == "nearest_even" else np.floor(a)
        dtype = self._code_dtype
        m = np.minimum(m, (1 << k) - 1).astype(dtype)
        sign = (np.signbit(rows) & finite[:, None]).astype(dtype) << dtype(k)
        scales = np.where(finite, s + SCALE_BIAS, SCALE_NAN).astype(np.uint8)
        return scales, m | sign

    def _decode_rows(self, scales, codes):
        k = self.mantissa_bits
        scales = scales.astype(np.int64)
        codes = codes.astype(np.int64)
        vals = np.ldexp((codes & ((1 << k) - 1)).astype(np.float64), (scales - SCALE_BIAS - k + 1)[:, None])
        vals = np.where((codes >> k) & 1 == 1, -vals, vals)
        return np.where((scales == SCALE_NAN)[:, None], np.nan, vals)


def parse_block_format(text: str) -> MXType | MSFPType:
    """An MX or MSFP format from its string form (the inverse of ``str(fmt)``)."""
    t = text.strip().lower() if isinstance(text, str) else ""
    if t.startswith("mx:"):
        return MXType.parse(text)
    if t.startswith("msfp"):
        return MSFPType.parse(text)
    raise PrecisionError(f"block format {text!r} is not understood; accepted: {_ACCEPTED}")
