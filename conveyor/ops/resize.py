"""Resize (opsets 10, 11, 13, 18, 19) and Upsample (opsets 7, 9): nearest, linear and cubic
interpolation along any axes, with every coordinate_transformation_mode, nearest_mode,
exclude_outside, antialias, extrapolation_value, axes and keep_aspect_ratio_policy the spec
defines. Scales, sizes and roi must be constants (shapes are static).

The kernel is separable, one axis at a time, as onnx's reference implementation
(onnx/reference/ops/op_resize.py) and onnxruntime are: per output position along an axis, the
source coordinate ``x`` (from the coordinate_transformation_mode; `scale` is the given scale, or
``out / in`` when sizes are given), then
- nearest: the source index ``round(x)`` by nearest_mode (round_prefer_floor ``ceil(x - 1/2)``,
  round_prefer_ceil ``floor(x + 1/2)``, floor, ceil; opsets < 11: asymmetric coordinates and
  onnxruntime's "simple" rounding, floor when upsampling and ceil when downsampling), clamped
  to [0, in - 1]; a gather;
- linear / cubic: ``n`` neighbours ``p + j`` for ``j = 1 - n/2 .. n/2`` with ``p = ceil(x) - 1``
  and ``r = x - p`` in (0, 1], weighted by the kernel at ``|j - r|`` (linear ``1 - t``; cubic
  Keys' with ``cubic_coeff_a``; antialias: the kernel stretched by ``1 / min(scale, 1)`` and
  normalised), indices clamped (edge padding), or their weights zeroed and renormalised with
  exclude_outside. tf_crop_and_resize writes extrapolation_value where ``x`` leaves [0, in - 1].
Weights and sums in float64.

Fixed point (docs/numerics.md, "Resize"): nearest is data movement, the output keeps the input's
format, as hls4ml's `resize_nearest` (nnet_image.h) copies `data_T` to `data_T`, and its indices
``(j * ((W << 16) / W_out + 1)) >> 16`` equal ONNX's asymmetric/floor ones for the integer
factors PyTorch's nn.Upsample exports (tf_crop_and_resize's extrapolation value is cast to the
result format). Linear and cubic (which hls4ml's Vivado backend does not implement) compute in
float64, exact when the weights are dyadic (scale 2 with half_pixel: weights 1/4 and 3/4), and
cast once to the node's result format.
"""

from __future__ import annotations

import numpy as np

from conveyor.errors import ModelError
from conveyor.ops import fixed
from conveyor.ops.registry import OpDef, attr_error, register, require_const

MODES = ("nearest", "linear", "cubic")
COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
          "tf_crop_and_resize")
NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
POLICIES = ("stretch", "not_larger", "not_smaller")


def _s(node, key, default):
    v = node.attr(key, default)
    return v.decode() if isinstance(v, bytes) else v


def _mode(node) -> str:
    mode = _s(node, "mode", "nearest")
    # Upsample-7/9 and Resize-10 call linear interpolation "linear" (older tools: "bilinear")
    return "linear" if mode == "bilinear" else mode


def _check(node) -> None:
    mode = _mode(node)
    if mode not in MODES:
        raise attr_error(node, "mode", mode, ", ".join(MODES))
    for key, default, accepted in (("coordinate_transformation_mode", "half_pixel", COORDS),
                                   ("nearest_mode", "round_prefer_floor", NEAREST),
                                   ("keep_aspect_ratio_policy", "stretch", POLICIES)):
        v = _s(node, key, default)
        if v not in accepted:
            raise attr_error(node, key, v, ", ".join(accepted))
    if node.attr("antialias", 0) and mode == "nearest":
        raise attr_error(node, "antialias", node.attr("antialias"), "0 with mode nearest (1 with linear or cubic)")


def _legacy(node) -> bool:
    return node.op_type == "Upsample" or node.opset < 11


def _inputs(node, ins):
    """(roi, scales, sizes) as constants (None where omitted or empty)."""
    def const(slot, what):
        v = require_const(node, ins, slot, what)
        return None if v is None or np.size(v) == 0 else np.asarray(v)

    if node.op_type == "Upsample" and node.opset < 9:
        scales = node.attr("scales")
        return None, (None if scales is None else np.asarray(scales, dtype=np.float64)), None
    if _legacy(node):
        return None, const(1, "scales"), None
    return const(1, "roi"), const(2, "scales"), const(3, "sizes")


def plan(node, x_shape, ins):
    """Per axis to resize: (axis, scale, out_len, roi (start, end) or None, output_width). And the
    output shape. output_width is the spec's length before rounding (``scale * in`` from scales)."""
    rank = len(x_shape)
    roi, scales, sizes = _inputs(node, ins)
    axes = node.attr("axes")
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    if (scales is None) == (sizes is None):
        raise ModelError(f"{node}: exactly one of scales and sizes must be given (got "
                         f"{'both' if scales is not None else 'neither'})")
    given = scales if scales is not None else sizes
    if len(given) != len(axes):
        raise ModelError(f"{node}: {'scales' if scales is not None else 'sizes'} has {len(given)} values for "
                         f"{len(axes)} axes of input shape {tuple(x_shape)}")
    out = list(x_shape)
    scale = [1.0] * rank
    width = [float(d) for d in x_shape]  # the spec's output_width: fractional from a scale
    if scales is not None:
        if np.any(np.asarray(scales) <= 0):
            raise ModelError(f"{node}: scales {scales.tolist()} must be positive")
        for a, s in zip(axes, scales.astype(np.float64)):
            scale[a] = float(s)
            width[a] = float(s) * x_shape[a]
            out[a] = int(width[a])
    else:
        for a, n in zip(axes, sizes.astype(np.int64)):
            scale[a] = int(n) / x_shape[a]
            out[a] = width[a] = int(n)
        policy = _s(node, "keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            s = pick(scale[a] for a in axes)
            for a in axes:
                scale[a] = s
                width[a] = s * x_shape[a]
                out[a] = int(width[a] + 0.5)
    rois = [None] * rank
    if roi is not None:
        roi = np.asarray(roi, dtype=np.float64).reshape(-1)
        if len(roi) == 2 * len(axes):
            for i, a in enumerate(axes):
                rois[a] = (float(roi[i]), float(roi[len(axes) + i]))
        elif len(roi) == 2 * rank:
            rois = [(float(roi[a]), float(roi[rank + a])) for a in range(rank)]
        else:
            raise ModelError(f"{node}: roi has {len(roi)} values; accepted: 2 per resized axis")
    if min(out) < 0:
        raise ModelError(f"{node}: output shape {out} has a negative dimension")
    steps = [(a, scale[a], out[a], rois[a], width[a]) for a in axes
             if not (out[a] == x_shape[a] and scale[a] == 1.0 and rois[a] in (None, (0.0, 1.0)))]
    return steps, tuple(out)


def _infer(node, ins):
    _, out = plan(node, ins[0].shape, ins)
    return [(out, ins[0].dtype)]


def source_coords(node, y, scale: float, n_in: int, n_out: int, roi, width: float):
    """Source coordinate of each output index `y` along one axis, and where tf_crop_and_resize
    extrapolates (or None). As the spec writes them, `length_resized` being `width` (the
    fractional ``scale * in`` when scales are given, as in onnx's reference and the backend suite;
    onnxruntime takes the rounded length there, which differs only when that product is not
    an integer), in float32 arithmetic as onnxruntime computes them (a tie such as
    ``3.5 / 0.7f - 0.5 = 4.5`` rounds as onnxruntime rounds it)."""
    mode = "asymmetric" if _legacy(node) else _s(node, "coordinate_transformation_mode", "half_pixel")
    f = np.float32
    y = np.asarray(y, dtype=f)
    sc, n_in_f, n_out_f, width_f = f(scale), f(n_in), f(n_out), f(width)
    extra = None
    if mode == "align_corners":
        x = np.zeros_like(y) if width == 1 else y * (n_in_f - f(1)) / (width_f - f(1))
    elif mode == "asymmetric":
        x = y / sc
    elif mode == "tf_crop_and_resize":
        if roi is None:
            raise ModelError(f"{node}: coordinate_transformation_mode tf_crop_and_resize needs the roi input")
        start, end = f(roi[0]), f(roi[1])
        if width == 1:
            x = np.full_like(y, f(0.5) * (start + end) * (n_in_f - f(1)))
        else:
            x = start * (n_in_f - f(1)) + y * (end - start) * (n_in_f - f(1)) / (width_f - f(1))
        extra = (x < 0) | (x > n_in - 1)
    elif mode == "pytorch_half_pixel":
        x = np.zeros_like(y) if width == 1 else (y + f(0.5)) / sc - f(0.5)
    elif mode == "half_pixel":
        x = (y + f(0.5)) / sc - f(0.5)
    else:  # half_pixel_symmetric
        adjustment = n_out_f / width_f
        offset = n_in_f / f(2) * (f(1) - adjustment)
        x = offset + (y + f(0.5)) / sc - f(0.5)
    return np.asarray(x, dtype=np.float64), extra


def _nearest_index(node, x, scale: float) -> np.ndarray:
    if _legacy(node):
        idx = np.ceil(x) if scale < 1 else np.floor(x)
    else:
        mode = _s(node, "nearest_mode", "round_prefer_floor")
        idx = {"round_prefer_floor": lambda: np.ceil(x - 0.5), "round_prefer_ceil": lambda: np.floor(x + 0.5),
               "floor": lambda: np.floor(x), "ceil": lambda: np.ceil(x)}[mode]()
    return idx.astype(np.int64)


def _kernel(node, t: np.ndarray) -> np.ndarray:
    if _mode(node) == "linear":
        return np.clip(1.0 - t, 0.0, None)
    a = float(node.attr("cubic_coeff_a", -0.75))
    t2, t3 = t * t, t * t * t
    return np.where(t <= 1, (a + 2) * t3 - (a + 3) * t2 + 1, np.where(t < 2, a * t3 - 5 * a * t2 + 8 * a * t - 4 * a, 0.0))


def _weights(node, x, scale: float, n_in: int):
    """(indices (out, n), weights (out, n)) of the neighbours of each source coordinate."""
    antialias = bool(node.attr("antialias", 0))
    base = 1 if _mode(node) == "linear" else 2  # the kernel's half-width
    s = min(scale, 1.0) if antialias else 1.0
    n = -2 * int(np.floor(-base / s)) if antialias else 2 * base
    p = np.ceil(x) - 1
    r = x - p                                   # in (0, 1]
    j = np.arange(1 - n // 2, n // 2 + 1, dtype=np.float64)
    idx = p[:, None].astype(np.int64) + j[None, :].astype(np.int64)
    w = _kernel(node, np.abs(j[None, :] - r[:, None]) * s)
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    if node.attr("exclude_outside", 0):
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, n_in - 1), w


def _resize(node, x: np.ndarray, ins) -> np.ndarray:
    steps, _ = plan(node, x.shape, ins)
    mode = _mode(node)
    out_dtype = x.dtype
    y = x if mode == "nearest" else np.asarray(x, dtype=np.float64)
    fill = node.attr("extrapolation_value", 0.0)
    for axis, scale, n_out, roi, width in steps:
        n_in = y.shape[axis]
        src, extra = source_coords(node, np.arange(n_out, dtype=np.float64), scale, n_in, n_out, roi, width)
        if mode == "nearest":
            y = np.take(y, np.clip(_nearest_index(node, src, scale), 0, n_in - 1), axis=axis)
        else:
            idx, w = _weights(node, src, scale, n_in)
            g = np.take(y, idx.reshape(-1), axis=axis)
            g = g.reshape(y.shape[:axis] + idx.shape + y.shape[axis + 1:])
            y = np.einsum("...ok,ok->...o", np.moveaxis(g, (axis, axis + 1), (-2, -1)), w)
            y = np.moveaxis(y, -1, axis)
        if extra is not None and extra.any():
            y = np.array(y, copy=True)
            y[(slice(None),) * axis + (extra,)] = fill
    if out_dtype.kind in "iu":
        y = np.clip(np.rint(y), np.iinfo(out_dtype).min, np.iinfo(out_dtype).max)
    return np.ascontiguousarray(y).astype(out_dtype, copy=False)


class _Consts:
    """The constant inputs as `ValueInfo`-like objects for `plan` at run time."""

    def __init__(self, arrays):
        self.items = [None if a is None else type("V", (), {"value": a, "shape": np.shape(a)})() for a in arrays]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _run(node, arrays):
    return (_resize(node, arrays[0], _Consts(arrays)),)


def _macs(node, ins, outs):
    if _mode(node) == "nearest":
        return 0
    steps, out = plan(node, ins[0].shape, ins)
    taps = 2 if _mode(node) == "linear" else 4
    return int(np.prod(out, dtype=np.int64)) * taps * max(1, len(steps))


def _run_fixed(node, args, fmts, prec, ctx):
    if _mode(node) == "nearest" and not (
            not _legacy(node) and _s(node, "coordinate_transformation_mode", "") == "tf_crop_and_resize"):
        return fixed.movement(_run)(node, args, fmts, prec, ctx)
    return fixed.exact_then_cast(_run)(node, args, fmts, prec, ctx)


for _op in ("Resize", "Upsample"):
    register(OpDef(_op, infer=_infer, run=_run, macs=_macs, check=_check, run_fixed=_run_fixed))
