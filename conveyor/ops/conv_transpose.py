"""ConvTranspose (opsets 1, 11, 22): N-d transposed convolution, grouped, strided, dilated,
padded, with output_padding, output_shape and auto_pad as the ONNX spec defines them.

Shape rule (ONNX ConvTranspose): per spatial axis i, with k_eff = (k - 1) * d + 1,
``out = s * (in - 1) + output_padding + k_eff - pad_begin - pad_end``; when `output_shape`
is given (or auto_pad is SAME_*, where out = in * s) the total padding is derived from it and
split as the spec says (SAME_UPPER: the odd one at the end; otherwise at the beginning).

Float kernel (col2im): per group one GEMM ``W_g^T (Mg * K, Cg) @ X_g (Cg, N * spatial)`` in
float64, then each kernel tap's slab is added into the output at stride `s`, offset `t * d`
(the "scatter" form: no multiplications by inserted zeros), and the result cropped by the pads.

Fixed point: ConvTranspose is the Conv of its *stretched* input, ``s - 1`` zeros inserted
between input values, padded by ``k_eff - 1 - pad`` at each side (+ output_padding at the end;
a negative amount crops), with the kernel flipped along every spatial axis and its two channel
axes swapped per group. The bit-accurate kernel is `fixed.dot` over that Conv: products exact,
summed in the node's `accum` format in Conv's (hls4ml's) tap order; the inserted zeros give
zero products, which leave an accumulator unchanged in every ap_fixed mode (the running sum
is already on accum's grid and in its range), so only the real products count. hls4ml 1.3.0
has no transposed convolution in its Vivado nnet_utils, so there is no other order to mirror
(docs/numerics.md, "ConvTranspose").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conveyor.errors import ModelError
from conveyor.ops import fixed
from conveyor.ops.conv import Windows, auto_pad_of, check_window_attrs, conv_taps, int_list
from conveyor.ops.registry import OpDef, attr_error, register


@dataclass(frozen=True)
class Geometry:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]   # pads at the start of each axis (may be negative: output_shape larger)
    end: tuple[int, ...]
    output_padding: tuple[int, ...]
    out: tuple[int, ...]
    group: int


def _check(node) -> None:
    check_window_attrs(node, pools=False)
    group = node.attr("group", 1)
    if not isinstance(group, (int, np.integer)) or group < 1:
        raise attr_error(node, "group", group, "a positive int dividing the input and output channels")
    op = int_list(node, "output_padding")
    if op is not None and min(op, default=0) < 0:
        raise attr_error(node, "output_padding", op, "non-negative ints, one per spatial axis")


def geometry(node, x_shape, w_shape, b_shape=None) -> Geometry:
    if len(x_shape) < 3:
        raise ModelError(f"{node}: input X must be (N, C, D1, ...), got shape {tuple(x_shape)}")
    if len(w_shape) != len(x_shape):
        raise ModelError(f"{node}: weight W of shape {tuple(w_shape)} does not match input rank {len(x_shape)} "
                         f"(X {tuple(x_shape)}); expected (C, M/group, k1, ...)")
    nd = len(x_shape) - 2
    group = int(node.attr("group", 1))
    c = int(x_shape[1])
    if c % group or int(w_shape[0]) != c:
        raise ModelError(f"{node}: group={group} does not fit X channels {c} and W {tuple(w_shape)}; "
                         "need C % group == 0 and W.shape[0] == C")
    m = int(w_shape[1]) * group
    kernel = tuple(int(k) for k in w_shape[2:])
    attr_kernel = int_list(node, "kernel_shape")
    if attr_kernel is not None and tuple(attr_kernel) != kernel:
        raise attr_error(node, "kernel_shape", attr_kernel, f"the spatial shape of W, {list(kernel)}")
    if b_shape is not None and tuple(b_shape) != (m,):
        raise ModelError(f"{node}: bias B must have shape ({m},), got {tuple(b_shape)}")

    def per_axis(key, default):
        v = int_list(node, key)
        v = [default] * nd if v is None else v
        if len(v) != nd:
            raise attr_error(node, key, v, f"{nd} values (one per spatial axis)")
        return tuple(v)

    strides, dilations = per_axis("strides", 1), per_axis("dilations", 1)
    output_padding = per_axis("output_padding", 0)
    ins = tuple(int(v) for v in x_shape[2:])
    eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    natural = tuple(s * (i - 1) + p + e for s, i, p, e in zip(strides, ins, output_padding, eff))
    auto_pad = auto_pad_of(node)
    out_shape = int_list(node, "output_shape")
    if out_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if out_shape is None:
            out_shape = [i * s for i, s in zip(ins, strides)]
        out_shape = out_shape[-nd:]  # some exporters write (N, C, *spatial)
        if len(out_shape) != nd or min(out_shape) < 1:
            raise attr_error(node, "output_shape", int_list(node, "output_shape"), f"{nd} positive ints")
        total = [n - o for n, o in zip(natural, out_shape)]
        if auto_pad == "SAME_UPPER":
            begin, end = [t // 2 for t in total], [t - t // 2 for t in total]
        else:
            begin, end = [t - t // 2 for t in total], [t // 2 for t in total]
    elif auto_pad == "VALID":
        begin, end = [0] * nd, [0] * nd
    else:
        pads = int_list(node, "pads") or [0] * (2 * nd)
        if len(pads) != 2 * nd:
            raise attr_error(node, "pads", pads, f"{2 * nd} values (begin and end per spatial axis)")
        begin, end = pads[:nd], pads[nd:]
    out = tuple(n - b - e for n, b, e in zip(natural, begin, end))
    if min(out) < 1:
        raise ModelError(f"{node}: pads {list(begin) + list(end)} leave no output along an axis "
                         f"(input {ins}, kernel {kernel}, strides {strides})")
    return Geometry(kernel, strides, dilations, tuple(begin), tuple(end), output_padding, out, group)


def _infer(node, ins):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    g = geometry(node, x.shape, w.shape, None if b is None else b.shape)
    return [((int(x.shape[0]), int(w.shape[1]) * g.group) + g.out, x.dtype)]


def _scatter(node, x, w, b=None):
    """The float kernel (col2im), float64 inside, no rounding before the end."""
    g = geometry(node, x.shape, w.shape, None if b is None else b.shape)
    out_dtype = x.dtype
    work = np.float64 if x.dtype in (np.float16, np.float32) else x.dtype
    x = np.asarray(x, dtype=work)
    w = np.asarray(w, dtype=work)
    n, c = x.shape[:2]
    nd = len(g.out)
    ins = x.shape[2:]
    cg, mg = c // g.group, w.shape[1]
    k_size = int(np.prod(g.kernel))
    # (G, Mg * K, Cg) @ (G, Cg, N * spatial) -> (G, Mg, *kernel, N, *spatial)
    wt = w.reshape(g.group, cg, mg * k_size).transpose(0, 2, 1)
    xs = x.reshape(n, g.group, cg, -1).transpose(1, 2, 0, 3).reshape(g.group, cg, -1)
    cols = np.matmul(wt, xs).reshape((g.group, mg) + g.kernel + (n,) + tuple(ins))
    # The full (unpadded) output spans s * (in - 1) + k_eff (+ output_padding); the kept
    # window starts at `begin` and may reach past either end (negative pads): zeros there.
    lo = [min(0, b) for b in g.begin]
    full = [max(s * (i - 1) + (k - 1) * d + 1, b + o) - lo_
            for s, i, k, d, b, o, lo_ in zip(g.strides, ins, g.kernel, g.dilations, g.begin, g.out, lo)]
    y = np.zeros((n, g.group, mg) + tuple(full), dtype=work)
    for tap in np.ndindex(*g.kernel):
        dst = tuple(slice(t * d - l, t * d - l + s * (i - 1) + 1, s)
                    for t, d, l, s, i in zip(tap, g.dilations, lo, g.strides, ins))
        src = cols[(slice(None), slice(None)) + tap]               # (G, Mg, N, *spatial)
        y[(slice(None),) * 3 + dst] += np.moveaxis(src, 2, 0)
    keep = tuple(slice(b - l, b - l + o) for b, l, o in zip(g.begin, lo, g.out))
    y = y.reshape((n, g.group * mg) + tuple(full))[(slice(None), slice(None)) + keep]
    if b is not None:
        y = y + np.asarray(b, dtype=work).reshape((-1,) + (1,) * nd)
    return np.ascontiguousarray(y).astype(out_dtype, copy=False)


def _run(node, arrays):
    b = arrays[2] if len(arrays) > 2 else None
    return (_scatter(node, arrays[0], arrays[1], b),)


def equivalent_conv(node, x: np.ndarray, w: np.ndarray):
    """(stretched input, Conv weights (M, C/group, *kernel), Windows, group): the Conv that
    computes this ConvTranspose (see the module docstring)."""
    g = geometry(node, x.shape, w.shape)
    n, c = x.shape[:2]
    nd = len(g.out)
    ins = x.shape[2:]
    stretched = tuple(s * (i - 1) + 1 for s, i in zip(g.strides, ins))
    eff = tuple((k - 1) * d + 1 for k, d in zip(g.kernel, g.dilations))
    before = [e - 1 - b for e, b in zip(eff, g.begin)]
    after = [e - 1 - e_ + p for e, e_, p in zip(eff, g.end, g.output_padding)]
    size = tuple(st + max(0, a) + max(0, z) for st, a, z in zip(stretched, before, after))
    xs = np.zeros((n, c) + size, dtype=np.float64)
    xs[(slice(None), slice(None)) + tuple(slice(max(0, a), max(0, a) + st, s)
                                          for a, st, s in zip(before, stretched, g.strides))] = x
    crop = tuple(slice(max(0, -a), sz - max(0, -z)) for a, z, sz in zip(before, after, size))
    xs = xs[(slice(None), slice(None)) + crop]
    cg, mg = c // g.group, w.shape[1]
    flip = (slice(None), slice(None)) + (slice(None, None, -1),) * nd
    wc = w.reshape((g.group, cg, mg) + g.kernel).swapaxes(1, 2).reshape((g.group * mg, cg) + g.kernel)[flip]
    geo = Windows(g.kernel, (1,) * nd, g.dilations, (0,) * nd, (0,) * nd, g.out)
    return xs, np.ascontiguousarray(wc), geo, g.group


def _taps(node, x, w):
    xs, wc, geo, group = equivalent_conv(node, x, w)
    return conv_taps(xs, wc, geo, group)


def _macs(node, ins, outs):
    # every input value meets every weight of its group: N * C * prod(in) * (M/group) * prod(k)
    x, w = ins[0].shape, ins[1].shape
    return int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))


register(OpDef(
    "ConvTranspose", infer=_infer, run=_run, macs=_macs, check=_check,
    param_slots=(1, 2), bias_slots=(2,),
    # products per output: at most C * prod(kernel) (an upper bound, whatever the group and strides)
    run_fixed=fixed.dot(lambda node, x, w: _scatter(node, x, w), reduce_len=lambda w: int(np.prod(w.shape[:1] + w.shape[2:])),
                        bias_shape=fixed.conv_bias_shape, taps=_taps, rows=True),
))
