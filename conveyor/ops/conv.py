"""Convolution: ONNX Conv (opsets 1, 11, 22), N-d, grouped (incl. depthwise).

The float kernel is `conveyor.ops.conv_float.ConvPlan` (pointwise, depthwise and im2col
methods, float32 arithmetic for float16/float32 inputs as onnxruntime's), planned once per
node by `Graph.run` (`OpDef.prepare`).

This module also holds the sliding-window geometry that Conv and the pooling ops
share (`window_geometry`, `pad_for_windows`): output size, `auto_pad`, `ceil_mode`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from conveyor.errors import ModelError
from conveyor.ops import fixed
from conveyor.ops.conv_float import ConvPlan, strided_windows
from conveyor.ops.registry import OpDef, attr_error, register

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

# ---- shared window geometry ----------------------------------------------------------


def auto_pad_of(node: Any) -> str:
    value = node.attr("auto_pad", "NOTSET")
    if isinstance(value, bytes):
        value = value.decode()
    return value


def int_list(node: Any, key: str) -> list[int] | None:
    value = node.attr(key)
    if value is None:
        return None
    return [int(v) for v in np.asarray(value).reshape(-1)]


def check_window_attrs(node: Any, *, pools: bool) -> None:
    """Attribute checks common to Conv and the pools (values only, no shapes)."""
    auto_pad = auto_pad_of(node)
    if auto_pad not in AUTO_PADS:
        raise attr_error(node, "auto_pad", auto_pad, ", ".join(AUTO_PADS))
    kernel = int_list(node, "kernel_shape")
    if pools and kernel is None:
        raise ModelError(f"{node}: attribute kernel_shape is required; accepted: a list of positive ints")
    if kernel is not None and (not kernel or min(kernel) < 1):
        raise attr_error(node, "kernel_shape", kernel, "a non-empty list of positive ints")
    n = None if kernel is None else len(kernel)
    for key in ("strides", "dilations"):
        v = int_list(node, key)
        if v is None:
            continue
        if not v or min(v) < 1:
            raise attr_error(node, key, v, "a list of positive ints, one per spatial axis")
        if n is not None and len(v) != n:
            raise attr_error(node, key, v, f"{n} values (one per spatial axis of kernel_shape {kernel})")
        n = len(v) if n is None else n
    pads = int_list(node, "pads")
    if pads is not None:
        if min(pads, default=0) < 0:
            raise attr_error(node, "pads", pads, "non-negative ints [x1_begin, x2_begin, ..., x1_end, x2_end, ...]")
        if len(pads) % 2 or (n is not None and len(pads) != 2 * n):
            want = "2 values per spatial axis" if n is None else f"{2 * n} values (begin and end per spatial axis)"
            raise attr_error(node, "pads", pads, want)


@dataclass(frozen=True)
class Windows:
    """Where the windows of a Conv/pool lie along each spatial axis.

    Window `o` along axis i covers input coordinates
    ``o * strides[i] - begin[i] + t * dilations[i]`` for ``t in range(kernel[i])``.
    `end` is the declared (or auto) end padding; with ceil_mode the last window may
    reach past it (implicit padding that is never counted).
    """

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]
    end: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def extent(self) -> tuple[int, ...]:
        """Length of the padded input the windows read, per axis."""
        return tuple(
            (o - 1) * s + (k - 1) * d + 1
            for o, s, k, d in zip(self.out, self.strides, self.kernel, self.dilations)
        )


def window_geometry(
    node: Any,
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    *,
    ceil_mode: bool = False,
    dilations: Sequence[int] | None = None,
) -> Windows:
    """Output size and padding per ONNX Conv/pool shape rules (incl. auto_pad, ceil_mode)."""
    nd = len(in_spatial)
    kernel = tuple(int(k) for k in kernel)
    if len(kernel) != nd:
        raise ModelError(f"{node}: kernel has {len(kernel)} spatial axes but the input has {nd} ({tuple(in_spatial)})")
    strides = tuple(int_list(node, "strides") or [1] * nd)
    if dilations is None:
        dilations = int_list(node, "dilations") or [1] * nd
    dilations = tuple(int(d) for d in dilations)
    for key, v in (("strides", strides), ("dilations", dilations)):
        if len(v) != nd:
            raise attr_error(node, key, list(v), f"{nd} values (one per spatial axis)")
    auto_pad = auto_pad_of(node)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(in_spatial, strides)]
        # ONNX shape inference: total pad from the dilated kernel, clamped at 0; the
        # odd pixel goes at the end (SAME_UPPER) or the beginning (SAME_LOWER).
        total = [max(0, (o - 1) * s + e - i) for o, s, e, i in zip(out, strides, eff, in_spatial)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    else:
        if auto_pad == "VALID":
            begin, end = [0] * nd, [0] * nd
        else:
            pads = int_list(node, "pads") or [0] * (2 * nd)
            if len(pads) != 2 * nd:
                raise attr_error(node, "pads", pads, f"{2 * nd} values (begin and end per spatial axis)")
            begin, end = pads[:nd], pads[nd:]
        out = []
        for i in range(nd):
            span = in_spatial[i] + begin[i] + end[i] - eff[i]
            if span < 0:
                raise ModelError(
                    f"{node}: window of {eff[i]} (kernel {kernel[i]}, dilation {dilations[i]}) is larger than "
                    f"spatial axis {i} of {in_spatial[i]} plus pads {begin[i]}+{end[i]}"
                )
            o = (-(-span // strides[i]) if ceil_mode else span // strides[i]) + 1
            # ceil_mode: a window that would start in the end padding is dropped.
            if ceil_mode and (o - 1) * strides[i] >= in_spatial[i] + begin[i]:
                o -= 1
            out.append(o)
    return Windows(kernel, strides, dilations, tuple(begin), tuple(end), tuple(out))


def pad_for_windows(x: np.ndarray, geo: Windows, fill) -> np.ndarray:
    """`x` (N, C, *spatial) padded with `fill` to exactly the extent the windows read."""
    nd = len(geo.out)
    spatial = x.shape[-nd:]
    extent = geo.extent
    if all(b == 0 for b in geo.begin) and tuple(extent) == tuple(spatial):
        return x
    if all(b == 0 for b in geo.begin) and all(e <= s for e, s in zip(extent, spatial)):
        return x[(Ellipsis,) + tuple(slice(0, e) for e in extent)]
    out = np.full(x.shape[:-nd] + tuple(extent), fill, dtype=x.dtype)
    dst, src = [], []
    for b, e, s in zip(geo.begin, extent, spatial):
        n = max(0, min(s, e - b))
        dst.append(slice(b, b + n))
        src.append(slice(0, n))
    out[(Ellipsis,) + tuple(dst)] = x[(Ellipsis,) + tuple(src)]
    return out


# ---- Conv ----------------------------------------------------------------------------


def _conv_check(node) -> None:
    check_window_attrs(node, pools=False)
    group = node.attr("group", 1)
    if not isinstance(group, (int, np.integer)) or group < 1:
        raise attr_error(node, "group", group, "a positive int dividing the input and output channels")


def _conv_shapes(node, x_shape, w_shape, b_shape=None):
    """(geometry, group) after validating X, W (and B) shapes against each other."""
    if len(x_shape) < 3:
        raise ModelError(f"{node}: input X must be (N, C, D1, ...), got shape {tuple(x_shape)}")
    if len(w_shape) != len(x_shape):
        raise ModelError(f"{node}: weight W of shape {tuple(w_shape)} does not match input rank {len(x_shape)} "
                         f"(X {tuple(x_shape)}); expected (M, C/group, k1, ...)")
    group = int(node.attr("group", 1))
    c, m = x_shape[1], w_shape[0]
    if c % group or m % group or w_shape[1] * group != c:
        raise ModelError(
            f"{node}: group={group} does not fit X channels {c} and W {tuple(w_shape)}; "
            f"need C % group == 0, M % group == 0 and W.shape[1] == C / group"
        )
    kernel = tuple(int(k) for k in w_shape[2:])
    attr_kernel = int_list(node, "kernel_shape")
    if attr_kernel is not None and tuple(attr_kernel) != kernel:
        raise attr_error(node, "kernel_shape", attr_kernel, f"the spatial shape of W, {list(kernel)}")
    if b_shape is not None and tuple(b_shape) != (m,):
        raise ModelError(f"{node}: bias B must have shape ({m},), got {tuple(b_shape)}")
    return window_geometry(node, x_shape[2:], kernel), group


def _conv_infer(node, ins):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    geo, _ = _conv_shapes(node, x.shape, w.shape, None if b is None else b.shape)
    return [((int(x.shape[0]), int(w.shape[0])) + geo.out, x.dtype)]


def _conv_run(node, arrays):
    x, w = arrays[0], arrays[1]
    b = arrays[2] if len(arrays) > 2 else None
    geo, group = _conv_shapes(node, x.shape, w.shape, None if b is None else b.shape)
    return (conv_nd(x, w, b, geo, group),)


def conv_nd(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geo: Windows, group: int) -> np.ndarray:
    """Grouped N-d convolution of x (N, C, *spatial) by w (M, C/group, *kernel) over the
    windows `geo`, plus bias b (M,): the float kernel of Conv (and of ConvTranspose, which
    is a Conv of its stretched input). See `conveyor.ops.conv_float`."""
    return ConvPlan(x.shape, x.dtype, w, b, geo, group)(x)


#: the bit-accurate path's float sums (`fixed.dot`'s float_dot) get the same weight array of a
#: node every call (the emulator quantizes its parameters once): its ConvPlan, whose layout work
#: costs more than a batch-1 convolution of a small image, is kept per (node, input shape,
#: weights), the weight array held so that its id stays its own; oldest first out once the held
#: weights pass _FIXED_PLANS_BYTES (a precision sweep of a big model must not pile up its weights)
_FIXED_PLANS: dict[tuple, tuple[np.ndarray, ConvPlan]] = {}
_FIXED_PLANS_BYTES = 256 << 20


def _conv_sum_fixed(node, x, w, exact_bits: float | None = None, bias: np.ndarray | None = None):
    """The exact float64 sums of grid values x and w (plus `bias`, (M,), where given: the
    plan adds it in its own pass; every partial sum is exact, so where it is added does not
    change a bit). `exact_bits`: the headroom below 2^53 (bits) that the caller
    (`fixed._exact_sum`) has proved for the direct sum, from a bound on max|x| max|w| (not a
    per-output one); with at least `winograd.EXACT_BITS` a unit-stride 3x3 Conv may take the
    Winograd method (its intermediates need 4.83 bits more: docs/numerics.md), otherwise
    im2col or the taps."""
    from conveyor.ops.winograd import EXACT_BITS

    wino = exact_bits is not None and exact_bits >= EXACT_BITS
    key = (node.name, x.shape, x.dtype.str, id(w), w.shape, wino, None if bias is None else id(bias))
    hit = _FIXED_PLANS.get(key)
    if hit is None or hit[0] is not w or getattr(hit[1], "bias_source", None) is not bias:
        geo, group = _conv_shapes(node, x.shape, w.shape, None if bias is None else bias.shape)
        plan = ConvPlan(x.shape, x.dtype, w, bias, geo, group, exact_bits=exact_bits if wino else None)
        plan.bias_source = bias  # held, so that its id stays its own while the plan is kept
        hit = (w, plan)
        if w.nbytes > _FIXED_PLANS_BYTES:
            return hit[1](x)
        held = sum(v[0].nbytes for v in _FIXED_PLANS.values())
        while _FIXED_PLANS and held + w.nbytes > _FIXED_PLANS_BYTES:
            held -= _FIXED_PLANS.pop(next(iter(_FIXED_PLANS)))[0].nbytes
        _FIXED_PLANS[key] = hit
    return hit[1](x)


#: `fixed._exact_sum` passes its proof (exact_bits=) to the float_dots that take it
_conv_sum_fixed.takes_exact_bits = True
#: and may hand it the bias (a parameter, the same array run after run: plans are kept by it)
_conv_sum_fixed.takes_bias = True


def _conv_prepare(node, ins):
    """`OpDef.prepare`: with constant weights (and bias), a `ConvPlan` built once."""
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if w.value is None or (b is not None and b.value is None):
        return None
    geo, group = _conv_shapes(node, x.shape, w.shape, None if b is None else b.shape)
    plan = ConvPlan(x.shape, x.dtype, w.value, None if b is None else b.value, geo, group)

    def run(arrays):
        return (plan(arrays[0]),)
    # the fused float plan (graph.float_plan) merges a following Relu/Clip into the bias pass
    run.with_act = lambda act, lo=0.0, hi=0.0: (lambda arrays: (plan.call_act(arrays[0], act, lo, hi),))
    return run


def _conv_macs(node, ins, outs):
    # Each output element is a dot product over (C/group) * prod(kernel) taps.
    w = ins[1].shape
    return int(np.prod(outs[0][0], dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))


def _conv_taps(node, x, w):
    """Conv as taps for `fixed.dot`'s sequential path, in hls4ml's order: per group, kernel
    positions row-major with the input channel fastest (the im2col rows of
    `conv_2d_latency_cl`, `(kh * KW + kw) * C + c`). Tap k is one strided window of the
    padded input times one weight per output channel: (N, M, *out)."""
    geo, group = _conv_shapes(node, x.shape, w.shape)
    return conv_taps(x, w, geo, group)


def conv_taps(x: np.ndarray, w: np.ndarray, geo: Windows, group: int):
    """`_conv_taps` for given windows and group (shared with ConvTranspose)."""
    n, c = x.shape[:2]
    m, nd = w.shape[0], len(geo.out)
    cg, mg = c // group, m // group
    xp = pad_for_windows(x, geo, 0.0)
    wg = w.reshape((group, mg, cg) + geo.kernel)
    taps = list(itertools.product(*(range(k) for k in geo.kernel), range(cg)))
    spread = (None,) * nd

    def term(i):
        *pos, ci = taps[i]
        win = tuple(slice(p * d, p * d + (o - 1) * s + 1, s)
                    for p, d, o, s in zip(pos, geo.dilations, geo.out, geo.strides))
        xs = xp[(slice(None), slice(ci, None, cg)) + win]           # (N, G, *out): channel g*cg + ci
        ws = wg[(slice(None), slice(None), ci) + tuple(pos)]          # (G, Mg)
        return (xs[:, :, None] * ws[(None, Ellipsis) + spread]).reshape((n, m) + geo.out)

    return len(taps), (n, m) + geo.out, term


def _conv_matrix(node, x, w):
    """Conv as `fixed.DotSpec.matrix`: per group, rows (N, *out) and columns in the order of
    `_conv_taps` (kernel positions row-major, input channel fastest): hls4ml's im2col."""
    geo, group = _conv_shapes(node, x.shape, w.shape)
    n, c = x.shape[:2]
    m, nd = w.shape[0], len(geo.out)
    cg, mg = c // group, m // group
    xp = pad_for_windows(x, geo, 0)
    win = strided_windows(xp, geo, n, group, cg)
    # (G, N, *out, *kernel, Cg): one row per output position, its taps in hls4ml's order
    perm = (1, 0) + tuple(range(3, 3 + 2 * nd)) + (2,)
    rows = n * int(np.prod(geo.out, dtype=np.int64))
    k_size = int(np.prod(geo.kernel, dtype=np.int64)) * cg
    cols = np.ascontiguousarray(win.transpose(perm)).reshape(group, rows, k_size)
    wg = w.reshape((group, mg, cg) + geo.kernel)
    wg = wg.transpose((0,) + tuple(range(3, 3 + nd)) + (2, 1)).reshape(group, k_size, mg)

    def assemble(accs):
        acc = np.stack(accs).reshape((group, n) + geo.out + (mg,))  # (G, N, *out, Mg)
        acc = np.moveaxis(acc, 0, -2).reshape((n,) + geo.out + (m,))
        return np.ascontiguousarray(np.moveaxis(acc, -1, 1))

    return list(cols), list(wg), assemble


def _conv_window(node, x, w):
    """Conv as `fixed.DotSpec.window` (2-D or 1-D, one group): the padded input, the weights
    as [KH, KW, C, M] (taps kernel rows, columns, then channels: hls4ml's im2col order)."""
    geo, group = _conv_shapes(node, x.shape, w.shape)
    nd = len(geo.out)
    if group != 1 or nd not in (1, 2):
        return None
    xp = pad_for_windows(x, geo, 0.0)
    if nd == 1:  # a 1-D conv is a 2-D one on a 1-row image
        xp, w = xp[:, :, None, :], w[:, :, None, :]
        geo = Windows((1,) + geo.kernel, (1,) + geo.strides, (1,) + geo.dilations, (0,) + geo.begin,
                      (0,) + geo.end, (1,) + geo.out)
    wk = np.transpose(w, (2, 3, 1, 0))
    out_shape = (x.shape[0], w.shape[0]) + tuple(geo.out[-nd:])
    return xp, wk, geo.strides, geo.dilations, geo.out, out_shape


register(OpDef(
    "Conv", infer=_conv_infer, run=_conv_run, macs=_conv_macs, check=_conv_check, prepare=_conv_prepare,
    param_slots=(1, 2), bias_slots=(2,),
    run_fixed=fixed.dot(_conv_sum_fixed,
                        reduce_len=lambda w: int(np.prod(w.shape[1:])), bias_shape=fixed.conv_bias_shape,
                        taps=_conv_taps, rows=True, matrix=_conv_matrix, window=_conv_window),
))
