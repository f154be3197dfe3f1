"""One HLS layer per graph node: the hls4ml-style config struct and the call into nnet_utils.

Each writer gets a `Layer` (the node, its resolved precision, the formats of its operands
and result, its quantized parameters, the plan's parallelism) and returns the C++ of its
config struct, of its call, and its parameters flattened in the order nnet_utils reads them.
Inside a board, 4-D values are channels last ([H][W][C], hls4ml's `_cl` kernels); ports and
Flatten carry ONNX's channels-first order. The numerics are nnet_utils' own (the emulator matches them
bit for bit, docs/numerics.md); the reduction order is the emulator's, i.e. the ONNX graph's
(Dense: data index ii = 0 .. n_in-1 into each output, as `DenseLatency` adds them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from conveyor.errors import CodegenError
from conveyor.numerics.fixed import FixedType


def ident(name: str) -> str:
    """A C identifier for a graph name (prefixed so that it never starts with a digit or clashes)."""
    return "t_" + re.sub(r"[^0-9A-Za-z_]", "_", name)


@dataclass(frozen=True)
class Layer:
    node: Any
    index: int
    prec: Any                         # NodePrecision
    in_fmts: tuple                    # formats of the non-parameter inputs
    out_fmt: Any
    in_shapes: tuple
    out_shape: tuple
    params: Mapping[int, tuple[np.ndarray, Any]]   # slot -> (quantized values, format)
    parallelism: int
    consts: Mapping[int, np.ndarray] = field(default_factory=dict)   # slot -> a constant input (Clip bounds, axes)
    output: int = 0                   # which of the node's outputs the board reads (LSTM: Y, Y_h or Y_c)
    in_hwc: tuple = ()                # per data input: whether its C array is channels last (4-D values)

    @property
    def cfg(self) -> str:
        return f"config{self.index}"


def fixed(fmt, where: str) -> FixedType:
    if not isinstance(fmt, FixedType):
        raise CodegenError(f"{where}: format {fmt} is not ap_fixed; code generation takes ap_fixed formats only")
    return fmt


def _size(shape) -> int:
    return int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else int(shape[0])


def exact_accum(fx: FixedType, fw: FixedType, fb: FixedType | None, n: int, wmax: float, bmax: float) -> FixedType:
    """An ap_fixed that holds every partial sum of a dot product exactly ('auto' accum)."""
    frac = max(fx.frac_bits + fw.frac_bits, fb.frac_bits if fb is not None else 0)
    xmax = max(abs(fx.min_value), abs(fx.max_value))
    bound = n * xmax * wmax + bmax
    integer = max(1, math.ceil(math.log2(bound + 2.0 ** -frac)) + 1) if bound > 0 else 1
    return FixedType(integer + frac, integer)


def dense_config(name: str, n_in: int, n_out: int, reuse: int, acc, fb, fw, title: str = "",
                 reuse_note: str = "", index_t: bool = False) -> str:
    """An `nnet::dense_config` over `nnet::DenseLatency` (hls4ml's dense / recr_mult config
    templates, latency strategy); `title` and `reuse_note` become comments."""
    c = lambda text: f"  // {text}" if text else ""  # noqa: E731
    idx = "    typedef ap_uint<1> index_t;\n" if index_t else ""
    return f"""struct {name} : nnet::dense_config {{{c(title)}
    static const unsigned n_in = {n_in};
    static const unsigned n_out = {n_out};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned strategy = nnet::latency;
    static const unsigned reuse_factor = {reuse};{c(reuse_note)}
    static const unsigned n_zeros = 0;
    static const unsigned n_nonzeros = {n_in * n_out};
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
    static const bool store_weights_in_bram = false;
    typedef {acc} accum_t;
    typedef {fb} bias_t;
    typedef {fw} weight_t;
{idx}    template<class data_T, class res_T, class CONFIG_T>
    using kernel = nnet::DenseLatency<data_T, res_T, CONFIG_T>;
    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};
"""


def dense(layer: Layer) -> tuple[str, str]:
    node = layer.node
    if len(layer.in_shapes[0]) != 2:
        raise CodegenError(f"node '{node.name}' (Dense): code generation takes 2-D inputs [1, n], got {layer.in_shapes[0]}")
    (w, fw), (b, fb) = layer.params[1], layer.params[2]
    n_in, n_out = w.shape
    fx = fixed(layer.in_fmts[0], f"node '{node.name}' input")
    fw, fb = fixed(fw, f"node '{node.name}' weight"), fixed(fb, f"node '{node.name}' bias")
    acc = layer.prec.accum
    acc = exact_accum(fx, fw, fb, n_in, float(np.max(np.abs(w))), float(np.max(np.abs(b)))) if acc is None \
        else fixed(acc, f"node '{node.name}' accum")
    reuse = max(1, math.ceil(n_in * n_out / max(layer.parallelism, 1)))
    cfg = dense_config(layer.cfg, n_in, n_out, reuse, acc, fb, fw, title=f"{node.name}: Dense {n_in} -> {n_out}",
                       reuse_note=f"plan: {layer.parallelism} multipliers", index_t=True)
    return cfg, "nnet::dense<{x}_t, {y}_t, %s>({x}, {y}, w%d, b%d);" % (layer.cfg, layer.index, layer.index), \
        {1: w.reshape(-1), 2: b.reshape(-1)}


def gemm(layer: Layer):
    """Gemm as a Dense: W stored [in][out] (B transposed when transB), same reduction order."""
    node = layer.node
    if node.attr("transA", 0) or node.attr("alpha", 1.0) != 1.0 or node.attr("beta", 1.0) != 1.0 or 2 not in layer.params:
        raise CodegenError(f"node '{node.name}' (Gemm): code generation takes transA=0, alpha=beta=1 and a constant C")
    w, fw = layer.params[1]
    if node.attr("transB", 0):
        w = w.T
    return dense(Layer(**{**layer.__dict__, "params": {1: (np.ascontiguousarray(w), fw), 2: layer.params[2]}}))


def _pixel_dense_config(c: str, n_in: int, n_out: int, acc, fb, fw, with_kernel: bool) -> str:
    """`<c>_mult`: the dense_config of one output pixel's products (per group), fully unrolled."""
    kernel = ("    template<class data_T, class res_T, class CONFIG_T>\n"
              "    using kernel = nnet::DenseLatency<data_T, res_T, CONFIG_T>;\n") if with_kernel else ""
    return f"""struct {c}_mult : nnet::dense_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_out = {n_out};
    static const unsigned reuse_factor = 1;
    static const unsigned strategy = nnet::latency;
    static const unsigned n_zeros = 0;
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
    typedef {acc} accum_t;
    typedef {fb} bias_t;
    typedef {fw} weight_t;
{kernel}    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};"""


def conv(layer: Layer):
    """nnet::conv_2d_cl (channels last) with hls4ml's im2col filler; W as [kh][kw][c][f]."""
    node = layer.node
    (w, fw), (b, fb) = layer.params[1], layer.params.get(2, (None, None))
    if len(layer.in_shapes[0]) != 4 or b is None:
        raise CodegenError(f"node '{node.name}' (Conv): code generation takes 2-D convolutions with a bias "
                           f"(got input {layer.in_shapes[0]}, bias {'present' if b is not None else 'absent'})")
    if node.attr("group", 1) != 1:
        return conv_grouped(layer)
    _, ch, h, wd = layer.in_shapes[0]
    _, nf, oh, ow = layer.out_shape
    kh, kw = w.shape[2:]
    top, left, bot, right, sh, sw, dh, dw = _conv_geometry(layer)
    fx = fixed(layer.in_fmts[0], f"node '{node.name}' input")
    fw, fb = fixed(fw, f"node '{node.name}' weight"), fixed(fb, f"node '{node.name}' bias")
    acc = layer.prec.accum
    acc = exact_accum(fx, fw, fb, ch * kh * kw, float(np.max(np.abs(w))), float(np.max(np.abs(b)))) if acc is None \
        else fixed(acc, f"node '{node.name}' accum")
    macs = kh * kw * ch * nf
    reuse = max(1, math.ceil(macs / max(layer.parallelism, 1)))
    c = layer.cfg
    cfg = _pixel_dense_config(c, kh * kw * ch, nf, acc, fb, fw, with_kernel=True) + f"""
struct {c} : nnet::conv2d_config {{  // {node.name}: Conv {ch}x{h}x{wd} -> {nf}x{oh}x{ow}, kernel {kh}x{kw}
    static const unsigned pad_top = {top};
    static const unsigned pad_bottom = {bot};
    static const unsigned pad_left = {left};
    static const unsigned pad_right = {right};
    static const unsigned in_height = {h};
    static const unsigned in_width = {wd};
    static const unsigned n_chan = {ch};
    static const unsigned filt_height = {kh};
    static const unsigned filt_width = {kw};
    static const unsigned kernel_size = filt_height * filt_width;
    static const unsigned n_filt = {nf};
    static const unsigned stride_height = {sh};
    static const unsigned stride_width = {sw};
    static const unsigned out_height = {oh};
    static const unsigned out_width = {ow};
    static const unsigned dilation_height = {dh};
    static const unsigned dilation_width = {dw};
    static const unsigned reuse_factor = {reuse};  // plan: {layer.parallelism} multipliers
    static const unsigned n_zeros = 0;
    static const unsigned multiplier_limit = DIV_ROUNDUP(kernel_size * n_chan * n_filt, reuse_factor) - n_zeros / reuse_factor;
    static const bool store_weights_in_bram = false;
    static const unsigned strategy = nnet::latency;
    static const unsigned n_partitions = {oh * ow};
    static const unsigned n_pixels = out_height * out_width / n_partitions;
    template<class data_T, class CONFIG_T>
    using fill_buffer = conveyor::fill_im2col<data_T, CONFIG_T>;
    typedef {acc} accum_t;
    typedef {fb} bias_t;
    typedef {fw} weight_t;
    typedef {c}_mult mult_config;
}};
"""
    return cfg, "nnet::conv_2d_cl<{x}_t, {y}_t, %s>({x}, {y}, w%d, b%d);" % (c, layer.index, layer.index), \
        {1: np.transpose(w, (2, 3, 1, 0)).reshape(-1), 2: b.reshape(-1)}


def maxpool(layer: Layer):
    node = layer.node
    _, ch, h, wd = layer.in_shapes[0]
    _, _, oh, ow = layer.out_shape
    ph, pw = node.attr("kernel_shape")
    sh, sw = node.attr("strides", [1, 1])
    top, left, bot, right = (list(node.attr("pads", [0, 0, 0, 0])) + [0] * 4)[:4]
    if node.attr("ceil_mode", 0) or any(d != 1 for d in node.attr("dilations", [1, 1])):
        raise CodegenError(f"node '{node.name}' (MaxPool): code generation takes ceil_mode=0 and no dilation")
    cfg = f"""struct {layer.cfg} : nnet::pooling2d_config {{  // {node.name}: MaxPool {ph}x{pw}
    static const unsigned in_height = {h};
    static const unsigned in_width = {wd};
    static const unsigned n_filt = {ch};
    static const unsigned stride_height = {sh};
    static const unsigned stride_width = {sw};
    static const unsigned pool_height = {ph};
    static const unsigned pool_width = {pw};
    static const unsigned out_height = {oh};
    static const unsigned out_width = {ow};
    static const unsigned pad_top = {top};
    static const unsigned pad_bottom = {bot};
    static const unsigned pad_left = {left};
    static const unsigned pad_right = {right};
    static const bool count_pad = false;
    static const nnet::Pool_Op pool_op = nnet::Max;
    static const unsigned reuse_factor = 1;
    typedef {fixed(layer.in_fmts[0], node.name)} accum_t;
}};
"""
    return cfg, "nnet::pooling2d_cl<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


def add(layer: Layer):
    """nnet::add: the exact sum, one cast to the result (no broadcasting)."""
    if len(layer.in_shapes) != 2 or layer.in_shapes[0] != layer.in_shapes[1]:
        raise CodegenError(f"node '{layer.node.name}' (Add): code generation adds two same-shape values, got "
                           f"{list(layer.in_shapes)}")
    cfg = f"""struct {layer.cfg} : nnet::merge_config {{  // {layer.node.name}: Add
    static const unsigned n_elem = {_size(layer.out_shape)};
    static const unsigned n_elem1 = {_size(layer.out_shape)};
    static const unsigned n_elem2 = {_size(layer.out_shape)};
    static const unsigned reuse_factor = 1;
}};
"""
    return cfg, "nnet::add<{x}_t, {x2}_t, {y}_t, %s>({x}, {x2}, {y});" % layer.cfg, {}


def relu(layer: Layer) -> tuple[str, str]:
    n = _size(layer.out_shape)
    cfg = f"""struct {layer.cfg} : nnet::activ_config {{  // {layer.node.name}: Relu
    static const unsigned n_in = {n};
    static const unsigned table_size = 1024;
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned reuse_factor = 1;
    typedef ap_fixed<18,8> table_t;
}};
"""
    return cfg, "nnet::relu<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


def softmax(layer: Layer) -> tuple[str, str]:
    from conveyor.ops import lut
    from conveyor.ops.softmax import softmax_table_sizes

    node, prec = layer.node, layer.prec
    shape = layer.in_shapes[0]
    if len(shape) != 2:
        raise CodegenError(f"node '{node.name}' (Softmax): code generation takes [1, n] inputs, got {shape}")
    n = int(shape[1])
    fin = fixed(layer.in_fmts[0], f"node '{node.name}' input")
    impl = lut.settings(prec, "softmax")["implementation"]
    es, vs = lut.settings(prec, "softmax_exp"), lut.settings(prec, "softmax_inv")
    exp_fmt = lut.fixed_format(es["format"], f"{node}: tables.softmax_exp.format")
    inv_fmt = lut.fixed_format(vs["format"], f"{node}: tables.softmax_inv.format")
    inv_addr = lut.fixed_format(vs.get("input", es["format"]), f"{node}: tables.softmax_inv.input")
    s = int(fin.signed)
    norm = (lut.fixed_format(es["input"], f"{node}: tables.softmax_exp.input") if "input" in es
            else FixedType(fin.width - s, fin.integer - s, signed=False))
    exp_addr = norm if impl == "stable" else fin
    n_exp, n_inv = softmax_table_sizes(fin, impl, int(es["size"]), int(vs["size"]), inv_fmt, exp_addr, inv_addr,
                                       str(node))
    acc = prec.accum
    if acc is None:  # hls4ml's exact accum_t formula (the emulator's 'auto')
        k = math.ceil(math.log2(n))
        acc = FixedType(exp_fmt.width + k, exp_fmt.integer + k, signed=exp_fmt.signed)
    acc = fixed(acc, f"node '{node.name}' accum")
    cfg = f"""struct {layer.cfg} : nnet::activ_config {{  // {node.name}: Softmax ({impl})
    static const unsigned n_in = {n};
    static const unsigned n_slice = {n};
    static const unsigned n_outer = 1;
    static const unsigned n_inner = 1;
    static const unsigned parallelization_factor = -1;
    static const unsigned exp_table_size = {n_exp};
    static const unsigned inv_table_size = {n_inv};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned reuse_factor = 1;
    static const unsigned axis = 1;
    static const nnet::softmax_implementation implementation = nnet::softmax_implementation::{impl};
    static constexpr float exp_scale = 1.0;
    typedef {exp_fmt} exp_table_t;
    typedef {inv_fmt} inv_table_t;
    typedef {acc} accum_t;
    typedef {inv_addr} inv_inp_t;
    typedef {norm if impl == "stable" else "ap_fixed<1,0>"} inp_norm_t;
}};
"""
    return cfg, "nnet::softmax<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}



def _conv_geometry(layer: Layer):
    node = layer.node
    top, left, bot, right = (list(node.attr("pads", [0, 0, 0, 0])) + [0] * 4)[:4]
    sh, sw = node.attr("strides", [1, 1])
    dh, dw = node.attr("dilations", [1, 1])
    return top, left, bot, right, sh, sw, dh, dw


def conv_grouped(layer: Layer):
    """Grouped / depthwise Conv: conveyor::conv_2d_grouped_cl, one nnet::dense_latency per
    pixel and group (conveyor_layers.h); W as [g][kh][kw][c][m]."""
    node = layer.node
    (w, fw), (b, fb) = layer.params[1], layer.params[2]
    group = int(node.attr("group", 1))
    _, ch, h, wd = layer.in_shapes[0]
    _, nf, oh, ow = layer.out_shape
    kh, kw = w.shape[2:]
    cg, mg = ch // group, nf // group
    top, left, bot, right, sh, sw, dh, dw = _conv_geometry(layer)
    fx = fixed(layer.in_fmts[0], f"node '{node.name}' input")
    fw, fb = fixed(fw, f"node '{node.name}' weight"), fixed(fb, f"node '{node.name}' bias")
    acc = layer.prec.accum
    acc = exact_accum(fx, fw, fb, cg * kh * kw, float(np.max(np.abs(w))), float(np.max(np.abs(b)))) if acc is None \
        else fixed(acc, f"node '{node.name}' accum")
    macs = kh * kw * cg * nf
    reuse = max(1, math.ceil(macs / max(layer.parallelism, 1)))
    c = layer.cfg
    cfg = _pixel_dense_config(c, kh * kw * cg, mg, acc, fb, fw, with_kernel=False) + f"""
struct {c} {{  // {node.name}: Conv {ch}x{h}x{wd} -> {nf}x{oh}x{ow}, kernel {kh}x{kw}, {group} groups
    static const unsigned pad_top = {top};
    static const unsigned pad_bottom = {bot};
    static const unsigned pad_left = {left};
    static const unsigned pad_right = {right};
    static const unsigned in_height = {h};
    static const unsigned in_width = {wd};
    static const unsigned n_chan = {ch};
    static const unsigned n_group = {group};
    static const unsigned filt_height = {kh};
    static const unsigned filt_width = {kw};
    static const unsigned n_filt = {nf};
    static const unsigned stride_height = {sh};
    static const unsigned stride_width = {sw};
    static const unsigned out_height = {oh};
    static const unsigned out_width = {ow};
    static const unsigned dilation_height = {dh};
    static const unsigned dilation_width = {dw};
    static const unsigned reuse_factor = {reuse};  // plan: {layer.parallelism} multipliers
    typedef {fb} bias_t;
    typedef {fw} weight_t;
    typedef {c}_mult mult_config;
}};
"""
    flat_w = np.transpose(w.reshape(group, mg, cg, kh, kw), (0, 3, 4, 2, 1)).reshape(-1)
    return cfg, "conveyor::conv_2d_grouped_cl<{x}_t, {y}_t, %s>({x}, {y}, w%d, b%d);" % (c, layer.index, layer.index), \
        {1: flat_w, 2: b.reshape(-1)}


def pool_window(layer: Layer, ch, h, wd, oh, ow, ph, pw, sh, sw) -> tuple[FixedType, str]:
    """A window pool's config fields (sizes, window, strides) and its exact window-sum type."""
    fin = fixed(layer.in_fmts[0], f"node '{layer.node.name}' input")
    g = max(ph * pw - 1, 0).bit_length()
    acc = FixedType(fin.width + g, fin.integer + g, signed=fin.signed)   # the window's exact sum
    fields = (f"    static const unsigned in_height = {h};\n    static const unsigned in_width = {wd};\n"
              f"    static const unsigned n_chan = {ch};\n    static const unsigned pool_height = {ph};\n"
              f"    static const unsigned pool_width = {pw};\n    static const unsigned stride_height = {sh};\n"
              f"    static const unsigned stride_width = {sw};\n    static const unsigned out_height = {oh};\n"
              f"    static const unsigned out_width = {ow};\n")
    return acc, fields


def _avg_config(layer: Layer, ch, h, wd, oh, ow, ph, pw, sh, sw, pads, count_pad: bool, what: str) -> str:
    node = layer.node
    acc, fields = pool_window(layer, ch, h, wd, oh, ow, ph, pw, sh, sw)
    fout = fixed(layer.out_fmt, f"node '{node.name}' result")
    s = fout.frac_bits + 1 - acc.frac_bits
    nw = max(acc.width + max(s, 0), (ph * pw).bit_length() + max(-s, 0)) + 3
    top, left, bot, right = pads
    return f"""struct {layer.cfg} {{  // {node.name}: {what}
{fields}    static const unsigned pad_top = {top};
    static const unsigned pad_bottom = {bot};
    static const unsigned pad_left = {left};
    static const unsigned pad_right = {right};
    static const bool count_pad = {'true' if count_pad else 'false'};
    static const int div_width = {nw};
    typedef {acc} accum_t;  // exact window sum
}};
"""


def avgpool(layer: Layer):
    """AveragePool: conveyor::avgpool_2d_cl, the exact window sum divided by the tap count and
    rounded once to the result (the emulator's; hls4ml truncates the quotient to accum_t first)."""
    from conveyor.ops.conv import window_geometry

    node = layer.node
    if len(layer.in_shapes[0]) != 4 or any(d != 1 for d in node.attr("dilations", [1, 1])):
        raise CodegenError(f"node '{node.name}' (AveragePool): code generation takes 2-D pools without dilation")
    _, ch, h, wd = layer.in_shapes[0]
    _, _, oh, ow = layer.out_shape
    ph, pw = node.attr("kernel_shape")
    geo = window_geometry(node, (h, wd), (ph, pw), ceil_mode=bool(node.attr("ceil_mode", 0)), dilations=(1, 1))
    cfg = _avg_config(layer, ch, h, wd, oh, ow, ph, pw, *geo.strides,
                      (geo.begin[0], geo.begin[1], geo.end[0], geo.end[1]), bool(node.attr("count_include_pad", 0)),
                      f"AveragePool {ph}x{pw}")
    return cfg, "conveyor::avgpool_2d_cl<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


def global_avgpool(layer: Layer):
    """GlobalAveragePool, and ReduceMean over the two spatial axes of a 4-D value: one window
    over the whole plane (conveyor::avgpool_2d_cl)."""
    node = layer.node
    shape = layer.in_shapes[0]
    if len(shape) != 4:
        raise CodegenError(f"node '{node.name}' ({node.op_type}): code generation takes 4-D inputs, got {shape}")
    if node.op_type == "ReduceMean":
        axes = layer.consts[1] if 1 in layer.consts else node.attr("axes")
        axes = sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1)) if axes is not None else None
        if axes != [2, 3]:
            raise CodegenError(f"node '{node.name}' (ReduceMean): code generation takes the mean over axes [2, 3] "
                               f"(H, W) of an NCHW value, got axes {axes}")
    _, ch, h, wd = shape
    cfg = _avg_config(layer, ch, h, wd, 1, 1, h, wd, 1, 1, (0, 0, 0, 0), False, f"{node.op_type} over {h}x{wd}")
    return cfg, "conveyor::avgpool_2d_cl<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


def concat(layer: Layer):
    """Concat: conveyor::concat2 (chained for more than two inputs), each value cast to the
    result; in a board's channels-last order for 4-D values."""
    node = layer.node
    shapes = layer.in_shapes
    nd = len(layer.out_shape)
    axis = int(node.attr("axis")) % nd
    if nd == 4:
        _, c, h, w = layer.out_shape
        # channels-last [H][W][C]: the ONNX axis 1 (C) is the innermost
        outer, inner = {1: (h * w, lambda s: s[1]), 2: (1, lambda s: s[2] * w * c), 3: (h, lambda s: s[3] * c)}[axis]
    elif nd in (2, 3):
        outer = int(np.prod(layer.out_shape[1:axis], dtype=np.int64)) if axis > 1 else 1
        rest = int(np.prod(layer.out_shape[axis + 1:], dtype=np.int64))
        inner = (lambda s: s[axis] * rest)  # noqa: E731
        if axis == 0:
            raise CodegenError(f"node '{node.name}' (Concat): code generation does not concatenate items (axis 0)")
    else:
        raise CodegenError(f"node '{node.name}' (Concat): code generation takes 2-, 3- or 4-D values, got {nd}-D")
    sizes = [int(inner(s)) for s in shapes]
    lines, prev, prev_n = [], "{xs[0]}", sizes[0]
    for k in range(1, len(shapes)):
        last = k == len(shapes) - 1
        dst = "{y}" if last else "{y}_c%d" % k
        if not last:
            lines.append("{y}_t %s[%d];" % (dst, outer * (prev_n + sizes[k])))
        src_t = "{xs_t[0]}" if k == 1 else "{y}_t"
        lines.append("conveyor::concat2<%s, {xs_t[%d]}, {y}_t, %d, %d, %d>(%s, {xs[%d]}, %s);"
                     % (src_t, k, outer, prev_n, sizes[k], prev, k, dst))
        prev, prev_n = dst, prev_n + sizes[k]
    cfg = f"// {layer.cfg}: {node.name}: Concat axis {axis} of {len(shapes)} values ({sizes} x {outer})\n"
    return cfg, " ".join(lines), {}


def batchnorm(layer: Layer):
    """An unfolded BatchNormalization: nnet::normalize, res = data * scale + bias (exact), cast once."""
    node = layer.node
    (a, fa), (b, fb) = layer.params[1], layer.params[2]
    shape = layer.out_shape
    if len(shape) not in (2, 4):
        raise CodegenError(f"node '{node.name}' (BatchNormalization): code generation takes 2-D or 4-D values, got {shape}")
    c = int(shape[1])
    cfg = f"""struct {layer.cfg} : nnet::batchnorm_config {{  // {node.name}: BatchNormalization over {c} channels
    static const unsigned n_in = {_size(shape)};
    static const unsigned n_filt = {c if len(shape) == 4 else -1};
    static const unsigned n_scale_bias = {c};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned reuse_factor = 1;
    static const unsigned multiplier_limit = {_size(shape)};
    static const bool store_weights_in_bram = false;
    static const unsigned n_zeros = 0;
    typedef {fixed(fb, f"node '{node.name}' bias")} bias_t;
    typedef {fixed(fa, f"node '{node.name}' weight")} scale_t;
    typedef scale_t weight_t;
    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};
"""
    return cfg, "nnet::normalize<{x}_t, {y}_t, %s>({x}, {y}, w%d, b%d);" % (layer.cfg, layer.index, layer.index), \
        {1: a.reshape(-1), 2: b.reshape(-1)}


def _activ(layer: Layer, what: str, extra: str = "") -> str:
    return f"""struct {layer.cfg} : nnet::activ_config {{  // {layer.node.name}: {what}
    static const unsigned n_in = {_size(layer.out_shape)};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned reuse_factor = 1;
{extra}}};
"""


def table_activation(layer: Layer):
    """Sigmoid / Tanh: hls4ml's nnet::sigmoid / nnet::tanh with the config's table size and format
    (their tables span hls4ml's fixed ranges [-8, 8) and [-4, 4))."""
    from conveyor.ops import lut

    node = layer.node
    name = node.op_type.lower()
    size, lo, hi, tfmt = lut.range_spec(node, layer.prec, name)
    want = (int(lut.DEFAULTS[name]["min"]), int(lut.DEFAULTS[name]["max"]))
    if (lo, hi) != want:
        raise CodegenError(f"node '{node.name}' ({node.op_type}): tables.{name} spans [{lo}, {hi}); nnet::{name}'s "
                           f"table spans [{want[0]}, {want[1]}), the only range code generation takes")
    fixed(layer.in_fmts[0], f"node '{node.name}' input")
    cfg = _activ(layer, f"{node.op_type}, {size}-entry table of {tfmt}",
                 f"    static const unsigned table_size = {size};\n    typedef {tfmt} table_t;\n")
    return cfg, "nnet::%s<{x}_t, {y}_t, %s>({x}, {y});" % (name, layer.cfg), {}


def leaky_relu(layer: Layer):
    """nnet::leaky_relu with alpha in the node's weight format (the emulator's param_t)."""
    node = layer.node
    fw = fixed(layer.prec.weight, f"node '{node.name}' weight (alpha)")
    alpha = float(node.attr("alpha", 0.01))
    raw = int(np.asarray(fw.quantize_raw(np.asarray([alpha], np.float64)), dtype=np.int64)[0])
    cfg = _activ(layer, f"LeakyRelu alpha {alpha!r}", f"    typedef {fw} param_t;\n    static const long long alpha_raw = {raw};\n")
    c = layer.cfg
    return cfg, ("{c}::param_t a{i}; conveyor::from_raw(a{i}, {c}::alpha_raw); "
                 "nnet::leaky_relu<{{x}}_t, {c}::param_t, {{y}}_t, {c}>({{x}}, a{i}, {{y}});").format(c=c, i=layer.index), {}


def clip(layer: Layer):
    """Clip (ReLU6 among others): conveyor::clip with the model's bounds as doubles."""
    node = layer.node
    if node.opset < 11:
        lo, hi = node.attr("min"), node.attr("max")
    else:
        lo, hi = layer.consts.get(1), layer.consts.get(2)
        named = [t for t in node.inputs[1:] if t]
        if len(named) > len([v for v in (lo, hi) if v is not None]):
            raise CodegenError(f"node '{node.name}' (Clip): its bounds must be constants")
    lo = None if lo is None else float(np.asarray(lo).reshape(-1)[0])
    hi = None if hi is None else float(np.asarray(hi).reshape(-1)[0])
    fixed(layer.in_fmts[0], f"node '{node.name}' input")
    extra = (f"    static const bool has_lo = {'true' if lo is not None else 'false'};\n"
             f"    static constexpr double lo = {repr(lo if lo is not None else 0.0)};\n"
             f"    static const bool has_hi = {'true' if hi is not None else 'false'};\n"
             f"    static constexpr double hi = {repr(hi if hi is not None else 0.0)};\n")
    return _activ(layer, f"Clip [{lo}, {hi}]", extra), "conveyor::clip<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}



def lrn(layer: Layer):
    """LRN: conveyor::lrn_cl (conveyor_layers.h; hls4ml has none), the emulator's table (tables.lrn)."""
    from conveyor.ops import lut
    from conveyor.ops.norm import lrn_sum_format

    node = layer.node
    shape = layer.in_shapes[0]
    if len(shape) != 4:
        raise CodegenError(f"node '{node.name}' (LRN): code generation takes 4-D inputs, got {shape}")
    fin = fixed(layer.in_fmts[0], f"node '{node.name}' input")
    n, lo, hi, tfmt = lut.range_spec(node, layer.prec, "lrn")
    size = int(node.attr("size"))
    acc = lrn_sum_format(fin, size) if layer.prec.accum is None else fixed(layer.prec.accum, f"node '{node.name}' accum")
    _, ch, h, w = shape
    cfg = f"""struct {layer.cfg} {{  // {node.name}: LRN size {size}
    static const unsigned n_chan = {ch};
    static const unsigned n_spatial = {h * w};
    static const unsigned size = {size};
    static const unsigned table_size = {n};
    static const int table_min = {lo};
    static const int table_max = {hi};
    static constexpr double alpha = {float(node.attr("alpha", 1e-4))!r}, beta = {float(node.attr("beta", 0.75))!r}, bias = {float(node.attr("bias", 1.0))!r};
    typedef {tfmt} table_t;
    typedef {acc} accum_t;
}};
"""
    return cfg, "conveyor::lrn_cl<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}

#: op type -> writer; `compile` refuses any other op with a CodegenError naming this list
WRITERS: dict[str, Callable[[Layer], tuple]] = {
    "Dense": dense, "Gemm": gemm, "Conv": conv, "MaxPool": maxpool, "AveragePool": avgpool,
    "GlobalAveragePool": global_avgpool, "ReduceMean": global_avgpool, "Add": add, "Concat": concat,
    "BatchNormalization": batchnorm, "LRN": lrn, "Relu": relu, "LeakyRelu": leaky_relu, "Clip": clip,
    "Sigmoid": table_activation, "Tanh": table_activation, "Softmax": softmax}
from conveyor.codegen.recurrent import WRITERS as _RECURRENT  # noqa: E402 (it imports Layer from here)

WRITERS.update(_RECURRENT)
#: ops that only rewire an array (no arithmetic; a 4-D value leaves channels-last order)
WIRING = ("Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Cast", "Dropout")   # Cast: float to float

from conveyor.codegen.requant import WRITERS as _REQUANT_WRITERS  # noqa: E402 (integer-domain quantized models)

WRITERS.update(_REQUANT_WRITERS)

from conveyor.codegen.layers_more import WRITERS as _MORE_WRITERS  # noqa: E402 (transformer / upsampling ops)

WRITERS.update(_MORE_WRITERS)
