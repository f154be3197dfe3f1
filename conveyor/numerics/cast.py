"""Casting exact float64 values into a number format, and counting overflows.

One entry point for every format family, so that kernels need not know whether a
role is ap_fixed or block floating point.
"""

from __future__ import annotations

import numpy as np

from conveyor.numerics import fixed_quantize as _fq


from conveyor.numerics.fixed import FixedType  # noqa: E402  (fixed imports fixed_quantize only)


def is_fixed(fmt) -> bool:
    return isinstance(fmt, FixedType)


def cast(values: np.ndarray, fmt, axis: int = -1, inplace: bool = False, relu: bool = False) -> np.ndarray:
    """`values` assigned to `fmt`: ap_fixed semantics for FixedType, block quantization
    along `axis` for block formats; None means 'keep exact'. Returns float64. With
    `inplace`, a float64 `values` the caller owns may be overwritten with the result
    (and returned), which saves an array; otherwise `values` is never modified.
    `relu`: the cast values then go through max(., 0) (a Relu fused after the cast)."""
    if fmt is None:
        y = np.asarray(values, dtype=np.float64)
        return np.maximum(y, 0.0) if relu else y
    if is_fixed(fmt):
        if isinstance(values, np.ndarray) and values.dtype == np.float64:
            # the common case, no value overflows: one rounding per value, no masks
            fast = _fq.quantize_in_range(fmt, values, inplace=inplace and values.flags.writeable, relu=relu)
            if fast is not None:
                return fast
        y = fmt.quantize(values)
        return np.maximum(y, 0.0, out=y) if relu else y
    if relu:
        return np.maximum(cast(values, fmt, axis), 0.0)
    if values.ndim == 0:
        return np.asarray(fmt.quantize(values.reshape(1), axis=-1), dtype=np.float64).reshape(())
    return np.asarray(fmt.quantize(values, axis=axis), dtype=np.float64)


def overflow_count(values: np.ndarray, fmt) -> int | None:
    """How many values, once rounded to `fmt`'s grid, fall outside its range; None for
    block formats (their saturation is not counted yet)."""
    if fmt is None:
        return 0
    if not is_fixed(fmt):
        return None
    rounded = fmt.unbounded().quantize(values)
    return int(np.count_nonzero((rounded > fmt.max_value) | (rounded < fmt.min_value)))


def frac_bits(fmt) -> int | None:
    """Fractional bits of a fixed format's grid (negative when the LSB weighs more than 1);
    None for block formats, whose grid moves with the block's scale."""
    return fmt.frac_bits if is_fixed(fmt) else None
