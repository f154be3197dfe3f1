"""Building blocks of the bit-accurate kernels (`OpDef.run_fixed`).

Every kernel takes float64 arrays whose values lie exactly on their formats' grids and
returns (outputs, output formats). Three shapes of kernel cover the ops so far:

- `movement`: data movement (Reshape, Flatten, Transpose, Pad, Identity, Dropout):
  values pass unchanged and keep their format, as wires do in HLS;
- `exact_then_cast`: the float kernel computes the exact result in float64 (max,
  compare, add, subtract, multiply of grid values, a sum divided by a count), then the
  result is cast to the node's `result` format (Relu, MaxPool, Add, Concat, ...);
- `dot`: products and sums of a Conv / Dense / Gemm / MatMul, accumulated in the
  node's `accum` format (exactly, when 'auto') and cast to its `result` format.
The exact arithmetic of each is in docs/numerics.md.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from conveyor.errors import PrecisionError
from conveyor.numerics.cast import frac_bits, is_fixed

Kernel = Callable[..., tuple[tuple[np.ndarray, ...], tuple]]

_EXACT_UNITS = 2.0 ** 53  # float64 sums of integers below this are exact in any order


def result_axis(ndim: int) -> int:
    """Block formats group activations over channels (axis 1) for NC... tensors, else the last axis."""
    return 1 if ndim > 2 else -1


def movement(float_run) -> Kernel:
    def run_fixed(node, args, fmts, prec, ctx):
        outs = float_run(node, args)
        return tuple(outs), tuple(fmts[0] if o.dtype.kind == "f" else None for o in outs)

    return run_fixed


def exact_then_cast(float_run) -> Kernel:
    def run_fixed(node, args, fmts, prec, ctx):
        _require_exact_inputs(node, args, fmts)
        outs = float_run(node, args)
        y = ctx.cast(node, np.asarray(outs[0], dtype=np.float64), prec.result, result_axis(outs[0].ndim))
        rest = tuple(outs[1:])  # e.g. MaxPool indices: integers, not cast
        return (y,) + rest, (prec.result,) + (None,) * len(rest)

    return run_fixed


def _require_exact_inputs(node, args, fmts) -> None:
    """An add/multiply of grid values is exact in float64 only below 53 significant bits."""
    widths = [getattr(f, "width", 0) for f, a in zip(fmts, args) if a is not None and f is not None]
    if sum(widths) > 53 and node.op_type == "Mul":
        raise PrecisionError(f"{node}: a product of {widths}-bit operands exceeds float64's 53-bit exact range")


def dot(float_dot: Callable[..., np.ndarray], reduce_len: Callable[[np.ndarray], int],
        x_slot: int = 0, w_slot: int = 1, b_slot: int | None = 2,
        bias_shape: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> Kernel:
    """A products-and-sums kernel. `float_dot(node, x, w)` is the float kernel without bias;
    `reduce_len(w)` the number of products summed per output; `bias_shape(b, y)` shapes
    the bias to broadcast over the output (default: as given)."""

    def run_fixed(node, args, fmts, prec, ctx):
        x, w = args[x_slot], args[w_slot]
        b = args[b_slot] if b_slot is not None and b_slot < len(args) else None
        fx, fw = fmts[x_slot], fmts[w_slot]
        fb = fmts[b_slot] if b is not None else None
        _check_accum_exact(node, x, w, b, fx, fw, fb, prec.accum, reduce_len(w))
        y = float_dot(node, x, w)
        if b is not None:
            y = y + (bias_shape(b, y) if bias_shape else b)
        y = ctx.cast(node, y, prec.result, result_axis(y.ndim))
        return (y,), (prec.result,)

    return run_fixed


def _check_accum_exact(node, x, w, b, fx, fw, fb, accum, k: int) -> None:
    """The float64 product-sum equals the HLS accumulation only when no partial sum is
    rounded: prove it from the grids and an interval bound, or refuse."""
    grids = [frac_bits(f) for f in (fx, fw)]
    if None in grids:
        return  # block floating point: accumulated in float64 by definition (docs/numerics.md)
    prod_frac = grids[0] + grids[1]
    bias_frac = frac_bits(fb) if fb is not None else prod_frac
    frac = max(prod_frac, bias_frac if bias_frac is not None else prod_frac)
    xmax = float(np.max(np.abs(x))) if x.size else 0.0
    wmax = float(np.max(np.abs(w))) if w.size else 0.0
    bmax = float(np.max(np.abs(b))) if b is not None and b.size else 0.0
    bound = k * xmax * wmax + bmax
    if bound * 2.0 ** frac >= _EXACT_UNITS:
        raise PrecisionError(
            f"{node}: sums reach {bound:.3g} on a 2^-{frac} grid, beyond float64's exact range; "
            "narrower weight/activation formats are needed for bit-accurate emulation"
        )
    if accum is None:
        return  # 'auto': the accumulator is as wide as the exact sum
    if not is_fixed(accum):
        raise PrecisionError(f"{node}: accum format {accum} is a block format; accum must be ap_fixed or 'auto'")
    if accum.frac_bits < frac or bound > min(accum.max_value, -accum.min_value):
        raise PrecisionError(
            f"{node}: accumulator {accum} can round or overflow (products need {frac} fractional bits, "
            f"sums reach {bound:.6g}); use accum 'auto' or a wider accumulator — emulating a lossy "
            "accumulator is not supported yet"
        )


def conv_bias_shape(b: np.ndarray, y: np.ndarray) -> np.ndarray:
    return b.reshape((1, -1) + (1,) * (y.ndim - 2))


__all__: Sequence[str] = ["movement", "exact_then_cast", "dot", "conv_bias_shape", "result_axis"]
