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
from dataclasses import dataclass
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
    cfg = f"""struct {layer.cfg} : nnet::dense_config {{  // {node.name}: Dense {n_in} -> {n_out}
    static const unsigned n_in = {n_in};
    static const unsigned n_out = {n_out};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned strategy = nnet::latency;
    static const unsigned reuse_factor = {reuse};  // plan: {layer.parallelism} multipliers
    static const unsigned n_zeros = 0;
    static const unsigned n_nonzeros = {n_in * n_out};
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
    static const bool store_weights_in_bram = false;
    typedef {acc} accum_t;
    typedef {fb} bias_t;
    typedef {fw} weight_t;
    typedef ap_uint<1> index_t;
    template<class data_T, class res_T, class CONFIG_T>
    using kernel = nnet::DenseLatency<data_T, res_T, CONFIG_T>;
    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};
"""
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


def conv(layer: Layer):
    """nnet::conv_2d_cl (channels last) with hls4ml's im2col filler; W as [kh][kw][c][f]."""
    node = layer.node
    (w, fw), (b, fb) = layer.params[1], layer.params.get(2, (None, None))
    if len(layer.in_shapes[0]) != 4 or node.attr("group", 1) != 1 or b is None:
        raise CodegenError(f"node '{node.name}' (Conv): code generation takes 2-D, group=1 convolutions with a bias "
                           f"(got input {layer.in_shapes[0]}, group {node.attr('group', 1)})")
    _, ch, h, wd = layer.in_shapes[0]
    _, nf, oh, ow = layer.out_shape
    kh, kw = w.shape[2:]
    top, left, bot, right = (list(node.attr("pads", [0, 0, 0, 0])) + [0] * 4)[:4]
    sh, sw = node.attr("strides", [1, 1])
    dh, dw = node.attr("dilations", [1, 1])
    fx = fixed(layer.in_fmts[0], f"node '{node.name}' input")
    fw, fb = fixed(fw, f"node '{node.name}' weight"), fixed(fb, f"node '{node.name}' bias")
    acc = layer.prec.accum
    acc = exact_accum(fx, fw, fb, ch * kh * kw, float(np.max(np.abs(w))), float(np.max(np.abs(b)))) if acc is None \
        else fixed(acc, f"node '{node.name}' accum")
    macs = kh * kw * ch * nf
    reuse = max(1, math.ceil(macs / max(layer.parallelism, 1)))
    c = layer.cfg
    cfg = f"""struct {c}_mult : nnet::dense_config {{
    static const unsigned n_in = {kh * kw * ch};
    static const unsigned n_out = {nf};
    static const unsigned reuse_factor = 1;
    static const unsigned strategy = nnet::latency;
    static const unsigned n_zeros = 0;
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
    typedef {acc} accum_t;
    typedef {fb} bias_t;
    typedef {fw} weight_t;
    template<class data_T, class res_T, class CONFIG_T>
    using kernel = nnet::DenseLatency<data_T, res_T, CONFIG_T>;
    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};
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


#: op type -> writer; `compile` refuses any other op with a CodegenError naming this list
WRITERS: dict[str, Callable[[Layer], tuple]] = {"Dense": dense, "Gemm": gemm, "Conv": conv, "MaxPool": maxpool,
                                                "Add": add, "Relu": relu, "Softmax": softmax}
#: ops that only rewire an array (no arithmetic; a 4-D value leaves channels-last order)
WIRING = ("Flatten", "Reshape", "Identity")
