"""The formats of a bit-width sweep (`conveyor quantize --sweep LO:HI`): one format per total
width W in LO..HI, everything else about the given format kept.

- ap_fixed family: W varies, integer bits, rounding and overflow modes kept.
- MX (`mx:fp8_e4m3`): W is the element width; at each width that OCP MX v1.0 defines an
  element for (4, 6, 8) the element of the same kind (int or float) whose exponent field is
  closest to the given one (fp8_e4m3 -> fp6_e3m2 -> fp4_e2m1); the block size is kept.
- MSFP (`msfp12`): W = 1 sign + 8 shared-exponent + mantissa bits (10..24); block size
  and rounding kept.
"""

from __future__ import annotations

from dataclasses import replace

from conveyor.errors import PrecisionError


def sweep_formats(text: str, lo: int, hi: int) -> list[tuple[int, str]]:
    """(W, format text) for every width W in lo..hi that the format family has."""
    from conveyor.numerics.config import parse_format
    from conveyor.numerics.fixed import FixedType
    from conveyor.numerics.mx import ELEMENT_FORMATS, MSFPType, MXType

    fmt = parse_format(text)
    if isinstance(fmt, FixedType):
        out = [(w, str(replace(fmt, width=w, sat_bits=min(fmt.sat_bits, w)))) for w in range(lo, hi + 1)]
    elif isinstance(fmt, MXType):
        mine = fmt.element_format
        out = []
        for w in range(lo, hi + 1):
            same = [e for e in ELEMENT_FORMATS.values() if e.bits == w and e.is_int == mine.is_int]
            if same:
                best = min(same, key=lambda e: (abs(e.ebits - mine.ebits), -e.ebits))
                out.append((w, replace(fmt, element=best.name).name))
        widths = sorted({e.bits for e in ELEMENT_FORMATS.values() if e.is_int == mine.is_int})
        if not out:
            raise PrecisionError(f"--sweep {lo}:{hi}: MX {'int' if mine.is_int else 'float'} elements come in "
                                 f"widths {widths} only; give a range that holds some")
    elif isinstance(fmt, MSFPType):
        out = [(w, replace(fmt, mantissa_bits=w - 9).name) for w in range(max(lo, 10), min(hi, 24) + 1)]
        if not out:
            raise PrecisionError(f"--sweep {lo}:{hi}: MSFP widths are 10..24 (1 + 8 + mantissa bits)")
    else:  # pragma: no cover - parse_format returns one of the above
        raise PrecisionError(f"--sweep: cannot vary the width of {text!r}")
    return out


def series_label(text: str) -> str:
    """The sweep's chart legend: the format with its width shown as W."""
    from conveyor.numerics.config import parse_format
    from conveyor.numerics.fixed import FixedType
    from conveyor.numerics.mx import MXType

    fmt = parse_format(text)
    if isinstance(fmt, FixedType):
        return str(fmt).replace(f"<{fmt.width},", "<W,", 1)
    if isinstance(fmt, MXType):
        return f"mx:{'int' if fmt.element_format.is_int else 'fp'}W elements" + (
            "" if fmt.block_size == 32 else f", block {fmt.block_size}")
    return "msfpW"
