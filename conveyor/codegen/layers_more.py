"""HLS writers of the ops beyond the CNN set of layers.py (docs/codegen.md, "Covered ops"):
index-table wiring (Transpose, Slice, Gather, Expand, Split, Pad, Resize nearest: the emulator's
own index arithmetic run on the positions of the input), ReduceSum / ReduceMean / ReduceMax over
any axes, MatMul (by constant weights: hls4ml's Dense per row; of two run-time values: hls4ml's
einsum loop), Dense / Gemm on several rows, Softmax over any axis, LayerNormalization (hls4ml's
`nnet::layernormalize`), HardSigmoid (`nnet::hard_sigmoid`), HardSwish, Exp / Sqrt / Reciprocal /
Erf / Gelu and Pow 0.5 / -1 (conveyor's range tables), Sigmoid / Tanh tables over any integer
range, Resize linear (dyadic weights), ConvTranspose (the Conv of its stretched input, on the
Conv writers of layers.py), Conv without a bias, Add / Sub / Mul (broadcasting, constants), Div
by a constant, Neg, Abs.

The kernels are conveyor_more.h; each config text starts with its #include (include guards).
Index tables are computed on the board's storage order: a 4-D value of one item is channels last
inside a board ([1][H][W][C]), any other value in ONNX order (`Layer.in_hwc` says which inputs are).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from conveyor.errors import CodegenError
from conveyor.numerics.fixed import FixedType

if TYPE_CHECKING:
    from conveyor.codegen.layers import Layer

INCLUDE = '#include "conveyor_more.h"\n'


def _fixed(fmt, where: str) -> FixedType:
    from conveyor.codegen.layers import fixed

    return fixed(fmt, where)


def _n(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def storage(shape, hwc: bool) -> np.ndarray:
    """An array shaped like the ONNX value whose entries are each element's position in the
    board's C array (4-D channels last: [N][H][W][C]; else ONNX's row-major order)."""
    shape = tuple(int(d) for d in shape)
    pos = np.arange(_n(shape), dtype=np.int64)
    if hwc and len(shape) == 4:
        n, c, h, w = shape
        return pos.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return pos.reshape(shape)


def _in_hwc(layer: Layer, k: int = 0) -> bool:
    flags = getattr(layer, "in_hwc", ()) or ()
    return bool(flags[k]) if k < len(flags) else len(layer.in_shapes[k]) == 4 and layer.in_shapes[k][0] == 1


def _out_hwc(layer: Layer) -> bool:
    """board.py: a 4-D result of these writers is channels last when it is one item, [1, C, H, W]."""
    return len(layer.out_shape) == 4 and layer.out_shape[0] == 1


def _to_storage(values: np.ndarray, out_shape, hwc: bool) -> np.ndarray:
    """`values` (ONNX-shaped like the output, or with trailing per-element axes) in the output's storage order."""
    pos = storage(out_shape, hwc).reshape(-1)
    flat = values.reshape((pos.size,) + values.shape[len(out_shape):])
    out = np.empty_like(flat)
    out[pos] = flat
    return out


def _c_array(name: str, ctype: str, values) -> tuple[str, str]:
    """(the in-struct declaration, the definition after it) of a static const array member."""
    vals = np.asarray(values).reshape(-1)
    return f"    static const {ctype} {name}[{vals.size}];\n", ", ".join(str(int(v)) for v in vals.tolist())


def _struct(layer: Layer, title: str, fields: str, arrays: dict[str, tuple[str, np.ndarray]],
            name: str | None = None) -> str:
    c = name or layer.cfg
    decls, defs = "", []
    for a, (ctype, values) in arrays.items():
        d, body = _c_array(a, ctype, values)
        decls += d
        defs.append(f"const {ctype} {c}::{a}[{np.asarray(values).size}] = {{{body}}};")
    return INCLUDE + f"struct {c} {{  // {layer.node.name}: {title}\n{fields}{decls}}};\n" + "\n".join(defs) + "\n"


def _gather_config(layer: Layer, index: np.ndarray, n_in: int, title: str, name: str | None = None) -> str:
    return _struct(layer, title, f"    static const unsigned n_in = {n_in};\n"
                                 f"    static const unsigned n_out = {index.size};\n",
                   {"index": ("int", index)}, name)


# ---- index-table wiring -----------------------------------------------------------------

def transpose(layer: Layer):
    """Transpose: a gather whose table is np.transpose of the input's storage positions."""
    from conveyor.ops.shape import _perm

    x_shape = layer.in_shapes[0]
    src = np.transpose(storage(x_shape, _in_hwc(layer)), _perm(layer.node, len(x_shape)))
    idx = _to_storage(src, layer.out_shape, _out_hwc(layer))
    cfg = _gather_config(layer, idx, _n(x_shape), f"Transpose perm {list(_perm(layer.node, len(x_shape)))}")
    return cfg, "conveyor::gather<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


transpose.any_layout = True


def movement(layer: Layer):
    """Slice, Gather (constant indices), Expand, Split (the output the board reads), Pad (constant
    0, edge, reflect): a gather whose
    table is the op's own float kernel run on the input's storage positions (+1, so that a
    constant pad reads 0: the zero of conveyor::gather, then one cast as the emulator's Pad)."""
    from conveyor.ops import registry

    node = layer.node
    if node.op_type == "Pad":
        mode = node.attr("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        value = layer.consts.get(2)
        if mode == "constant" and value is not None and np.any(np.asarray(value) != 0):
            raise CodegenError(f"node '{node.name}' (Pad): constant value {np.asarray(value).tolist()}; code "
                               "generation takes constant 0, edge and reflect pads")
    x_shape = layer.in_shapes[0]
    arrays = [storage(x_shape, _in_hwc(layer)).astype(np.float64) + 1.0] + [None] * (len(node.inputs) - 1)
    for slot, v in layer.consts.items():
        arrays[slot] = v
    src = np.asarray(registry.get(node.op_type).run(node, arrays)[layer.output])
    if tuple(src.shape) != tuple(layer.out_shape):
        raise CodegenError(f"node '{node.name}' ({node.op_type}): its run-time inputs must be its data only")
    idx = _to_storage(np.round(src).astype(np.int64) - 1, layer.out_shape, _out_hwc(layer))
    cfg = _gather_config(layer, idx, _n(x_shape), f"{node.op_type} {tuple(x_shape)} -> {tuple(layer.out_shape)}")
    return cfg, "conveyor::gather<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


movement.any_layout = True


def _resize_consts(layer: Layer, x):
    arrays = [x] + [None] * (len(layer.node.inputs) - 1)
    for s, v in layer.consts.items():
        arrays[s] = v
    return arrays


def resize(layer: Layer):
    """Resize / Upsample: nearest as a gather (resize's own kernel run on the positions: its
    coordinate and rounding modes exactly), linear as dyadic weighted taps (resize_linear)."""
    from conveyor.ops import resize as rz

    node = layer.node
    mode = rz._mode(node)
    coord = "asymmetric" if rz._legacy(node) else rz._s(node, "coordinate_transformation_mode", "half_pixel")
    if coord == "tf_crop_and_resize":
        raise CodegenError(f"node '{node.name}' ({node.op_type}): code generation takes every coordinate mode "
                           "but tf_crop_and_resize (its extrapolation value)")
    x_shape = layer.in_shapes[0]
    pos = storage(x_shape, _in_hwc(layer))
    if mode == "nearest":
        src = rz._run(node, _resize_consts(layer, pos.astype(np.float64)))[0]
        idx = _to_storage(np.asarray(src, np.int64), layer.out_shape, _out_hwc(layer))
        cfg = _gather_config(layer, idx, _n(x_shape), f"Resize nearest {tuple(x_shape)} -> {tuple(layer.out_shape)}")
        return cfg, "conveyor::gather<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}
    if mode != "linear":
        raise CodegenError(f"node '{node.name}' ({node.op_type}): code generation takes modes nearest and linear, "
                           f"got {mode}")
    steps, _ = rz.plan(node, x_shape, rz._Consts(_resize_consts(layer, pos)))
    taps = pos[..., None]
    wts = np.ones(taps.shape)
    for axis, scale, n_out, roi, width in steps:
        n_in = taps.shape[axis]
        src, _ = rz.source_coords(node, np.arange(n_out, dtype=np.float64), scale, n_in, n_out, roi, width)
        ix, w = rz._weights(node, src, scale, n_in)
        taps = np.moveaxis(np.take(taps, ix, axis=axis), axis + 1, -2)
        wts = np.moveaxis(np.take(wts, ix, axis=axis) * w.reshape((1,) * axis + w.shape + (1,) * (wts.ndim - axis - 1)),
                          axis + 1, -2)
        taps = taps.reshape(taps.shape[:-2] + (-1,))
        wts = wts.reshape(wts.shape[:-2] + (-1,))
    frac = next((f for f in range(0, 31) if np.all(np.ldexp(wts, f) == np.round(np.ldexp(wts, f)))), None)
    if frac is None:
        raise CodegenError(f"node '{node.name}' ({node.op_type}): linear weights that are not dyadic (scale "
                           f"{[s[1] for s in steps]}); code generation takes weights exact on 2^-30 "
                           "(integer scale factors with half_pixel / asymmetric / align_corners on powers of two)")
    fin = _fixed(layer.in_fmts[0], f"node '{node.name}' input")
    fout = _fixed(layer.out_fmt, f"node '{node.name}' result")
    n_taps = taps.shape[-1]
    wfmt = FixedType(frac + 3, 3)                  # weights in [-4, 4): linear's lie in [0, 1]
    wmax = float(np.max(np.abs(wts), initial=0.0))
    grow = max(1, math.ceil(math.log2(n_taps * max(wmax, 1.0) + 1))) + 1
    acc = FixedType(fin.width + frac + grow, fin.integer + grow, signed=True)   # every partial sum exactly
    idx = _to_storage(taps, layer.out_shape, _out_hwc(layer))
    raw = _to_storage(np.round(np.ldexp(wts, frac)).astype(np.int64), layer.out_shape, _out_hwc(layer))
    fields = (f"    static const unsigned n_in = {_n(x_shape)};\n    static const unsigned n_out = {idx.shape[0]};\n"
              f"    static const unsigned n_taps = {n_taps};\n    typedef {wfmt} weight_t;\n    typedef {acc} accum_t;\n")
    cfg = _struct(layer, f"Resize linear {tuple(x_shape)} -> {tuple(layer.out_shape)} into {fout}", fields,
                  {"index": ("int", idx), "weight": ("long long", raw)})
    return cfg, "conveyor::resize_linear<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


resize.any_layout = True


# ---- reductions ----------------------------------------------------------------------------

_REDUCE_OP = {"ReduceSum": 0, "ReduceMean": 1, "ReduceMax": 2}


def reduce(layer: Layer):
    """ReduceSum / ReduceMean / ReduceMax over any axes (conveyor::reduce); the spatial mean and
    sum of a 4-D value keep their pooling writers (layers.global_avgpool, requant.reduce_sum)."""
    from conveyor.codegen import layers, requant
    from conveyor.ops.reduce import _AXES_INPUT_FROM, _axes

    node = layer.node
    x_shape = tuple(layer.in_shapes[0])
    value = layer.consts.get(1) if node.opset >= _AXES_INPUT_FROM[node.op_type] else None
    axes = _axes(node, len(x_shape), value)
    if axes is None:
        raise CodegenError(f"node '{node.name}' ({node.op_type}): noop_with_empty_axes with no axes (an identity); "
                           "code generation takes reductions over at least one axis")
    if len(x_shape) == 4 and list(axes) == [2, 3] and node.attr("keepdims", 1) and _in_hwc(layer):
        if node.op_type == "ReduceMean":
            return layers.global_avgpool(layer)
        if node.op_type == "ReduceSum":
            return requant.reduce_sum(layer)
    if 0 in axes:
        raise CodegenError(f"node '{node.name}' ({node.op_type}): code generation does not reduce over items (axis 0)")
    pos = storage(x_shape, _in_hwc(layer))
    kept = [a for a in range(len(x_shape)) if a not in axes]
    grid = np.transpose(pos, kept + list(axes)).reshape(_n([x_shape[a] for a in kept]), -1)
    base, offset = grid[:, 0], grid[0] - grid[0, 0]
    if not np.array_equal(grid, base[:, None] + offset[None, :]):   # storage is linear in the index: never
        raise CodegenError(f"node '{node.name}' ({node.op_type}): its inputs are not at base + offset")
    base = _to_storage(base.reshape(layer.out_shape), layer.out_shape, _out_hwc(layer))
    k = grid.shape[1]
    fin = _fixed(layer.in_fmts[0], f"node '{node.name}' input")
    fout = _fixed(layer.out_fmt, f"node '{node.name}' result")
    op = _REDUCE_OP[node.op_type]
    if op == 2:
        acc, div = fin, 1
    else:
        g = max(k - 1, 0).bit_length()
        acc = FixedType(fin.width + g, fin.integer + g, signed=fin.signed)   # the exact sum
        s = fout.frac_bits + 1 - acc.frac_bits
        div = max(acc.width + max(s, 0), k.bit_length() + max(-s, 0)) + 3
    fields = (f"    static const unsigned n_in = {_n(x_shape)};\n    static const unsigned n_out = {base.size};\n"
              f"    static const unsigned n_reduce = {k};\n    static const int op = {op};  // 0 sum, 1 mean, 2 max\n"
              f"    static const int div_width = {div};\n    typedef {acc} accum_t;\n")
    cfg = _struct(layer, f"{node.op_type} over axes {list(axes)} of {x_shape}", fields,
                  {"base": ("int", base), "offset": ("int", offset)})
    return cfg, "conveyor::reduce<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


reduce.any_layout = True


# ---- MatMul ---------------------------------------------------------------------------------

def _absmax(fmt: FixedType) -> float:
    return max(abs(fmt.min_value), abs(fmt.max_value))


def matmul(layer: Layer):
    """MatMul. Constant weights B [K, N] (the emulator's Dense kernel: products cast to accum_t):
    nnet::dense per row of a 2-D / 3-D value, a zero bias. Two run-time values (the emulator's
    einsum, hls4ml's nnet_einsum.h loop: exact products, the running sum cast): conveyor::matmul_einsum
    over any batch axes, numpy's broadcasting, the operands in their board layout."""
    from conveyor.codegen.layers import dense_config, exact_accum

    node = layer.node
    if 0 in layer.consts:
        raise CodegenError(f"node '{node.name}' (MatMul): a constant A times a run-time B; code generation takes "
                           "constant weights as B (input 1) or two run-time values")
    if 1 in layer.params:
        w, fw = layer.params[1]
        x_shape = tuple(layer.in_shapes[0])
        if w.ndim != 2 or len(x_shape) not in (2, 3):
            raise CodegenError(f"node '{node.name}' (MatMul): constant weights take 2-D or 3-D values times a 2-D "
                               f"matrix, got {x_shape} @ {w.shape}")
        n_in, n_out = w.shape
        rows = _n(x_shape[:-1])
        fx = _fixed(layer.in_fmts[0], f"node '{node.name}' input")
        fw = _fixed(fw, f"node '{node.name}' weight")
        acc = layer.prec.accum
        acc = exact_accum(fx, fw, None, n_in, float(np.max(np.abs(w), initial=0.0)), 0.0) if acc is None \
            else _fixed(acc, f"node '{node.name}' accum")
        reuse = max(1, math.ceil(n_in * n_out / max(layer.parallelism, 1)))
        c = layer.cfg
        cfg = INCLUDE + dense_config(f"{c}_dense", n_in, n_out, reuse, acc, fw, fw,
                                     title=f"{node.name}: MatMul {n_in} -> {n_out}",
                                     reuse_note=f"plan: {layer.parallelism} multipliers", index_t=True) + \
            f"struct {c} {{  // {node.name}: MatMul by constant weights, {rows} rows\n" \
            f"    static const unsigned n_rows = {rows};\n    typedef {c}_dense dense;\n    typedef {fw} weight_t;\n}};\n"
        return cfg, "conveyor::dense_rows<{x}_t, {y}_t, %s>({x}, {y}, w%d);" % (c, layer.index), {1: w.reshape(-1)}
    if len(layer.in_shapes) != 2:
        raise CodegenError(f"node '{node.name}' (MatMul): code generation takes constant weights or two run-time values")
    a_shape, b_shape = (tuple(s) for s in layer.in_shapes)
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise CodegenError(f"node '{node.name}' (MatMul): code generation takes operands of rank 2 or more, "
                           f"got {a_shape} @ {b_shape}")
    pa, pb = storage(a_shape, _in_hwc(layer, 0)), storage(b_shape, _in_hwc(layer, 1))
    out = tuple(layer.out_shape)
    k = a_shape[-1]
    a_base = np.broadcast_to(pa[..., :, :1], out[:-1] + (1,))
    b_base = np.broadcast_to(pb[..., :1, :], out[:-2] + (1, out[-1]))
    a_base = np.broadcast_to(a_base, out)
    b_base = np.broadcast_to(b_base, out)
    a_step = int(pa.reshape(-1, *a_shape[-2:])[0, 0, 1] - pa.reshape(-1, *a_shape[-2:])[0, 0, 0]) if k > 1 else 0
    b_step = int(pb.reshape(-1, *b_shape[-2:])[0, 1, 0] - pb.reshape(-1, *b_shape[-2:])[0, 0, 0]) if k > 1 else 0
    fa = _fixed(layer.in_fmts[0], f"node '{node.name}' input A")
    fb = _fixed(layer.in_fmts[1], f"node '{node.name}' input B")
    acc = layer.prec.accum
    acc = exact_accum(fa, fb, None, k, _absmax(fb), 0.0) if acc is None else _fixed(acc, f"node '{node.name}' accum")
    hwc = _out_hwc(layer)
    fields = (f"    static const unsigned n_a = {_n(a_shape)};\n    static const unsigned n_b = {_n(b_shape)};\n"
              f"    static const unsigned n_out = {_n(out)};\n    static const unsigned n_contract = {k};\n"
              f"    static const int a_step = {a_step};\n    static const int b_step = {b_step};\n"
              f"    typedef {acc} accum_t;\n")
    cfg = _struct(layer, f"MatMul {a_shape} @ {b_shape} (einsum)", fields,
                  {"a_base": ("int", _to_storage(np.ascontiguousarray(a_base), out, hwc)),
                   "b_base": ("int", _to_storage(np.ascontiguousarray(b_base), out, hwc))})
    return cfg, "conveyor::matmul_einsum<{xs_t[0]}, {xs_t[1]}, {y}_t, %s>({xs[0]}, {xs[1]}, {y});" % layer.cfg, {}


matmul.any_layout = True


def dense(layer: Layer):
    """Dense (MatMul + Add fused) on [1, n] values: layers.dense; on [rows..., n] values (not
    channels last): nnet::dense per row with the bias (dense_rows_bias), the same products."""
    from conveyor.codegen import layers
    from conveyor.codegen.layers import dense_config, exact_accum

    node = layer.node
    x_shape = tuple(layer.in_shapes[0])
    if len(x_shape) == 2 and x_shape[0] == 1:
        return layers.dense(layer)
    if len(x_shape) == 4 and _in_hwc(layer):
        raise CodegenError(f"node '{node.name}' (Dense): code generation takes 2-D / 3-D inputs (or 4-D ones in ONNX "
                           f"order), got a channels-last {x_shape}")
    (w, fw), (b, fb) = layer.params[1], layer.params[2]
    n_in, n_out = w.shape
    rows = _n(x_shape[:-1])
    fx = _fixed(layer.in_fmts[0], f"node '{node.name}' input")
    fw, fb = _fixed(fw, f"node '{node.name}' weight"), _fixed(fb, f"node '{node.name}' bias")
    acc = layer.prec.accum
    acc = exact_accum(fx, fw, fb, n_in, float(np.max(np.abs(w), initial=0.0)), float(np.max(np.abs(b), initial=0.0))) \
        if acc is None else _fixed(acc, f"node '{node.name}' accum")
    reuse = max(1, math.ceil(n_in * n_out / max(layer.parallelism, 1)))
    c = layer.cfg
    cfg = INCLUDE + dense_config(f"{c}_dense", n_in, n_out, reuse, acc, fb, fw,
                                 title=f"{node.name}: Dense {n_in} -> {n_out}",
                                 reuse_note=f"plan: {layer.parallelism} multipliers", index_t=True) + \
        f"struct {c} {{  // {node.name}: Dense on {rows} rows\n" \
        f"    static const unsigned n_rows = {rows};\n    typedef {c}_dense dense;\n    typedef {fw} weight_t;\n" \
        f"    typedef {fb} bias_t;\n}};\n"
    return cfg, "conveyor::dense_rows_bias<{x}_t, {y}_t, %s>({x}, {y}, w%d, b%d);" % (c, layer.index, layer.index), \
        {1: w.reshape(-1), 2: np.broadcast_to(b, (n_out,)).reshape(-1)}


dense.any_layout = True


def gemm(layer: Layer):
    """Gemm (transA=0, alpha=beta=1): with a constant C on [1, n] values layers.gemm; else the
    rows of A through nnet::dense with B (transposed when transB) and C, or a zero bias."""
    from conveyor.codegen import layers

    node = layer.node
    if node.attr("transA", 0) or node.attr("alpha", 1.0) != 1.0 or node.attr("beta", 1.0) != 1.0 or 1 not in layer.params:
        raise CodegenError(f"node '{node.name}' (Gemm): code generation takes transA=0, alpha=beta=1 and a constant B")
    if 2 in layer.params and tuple(layer.in_shapes[0])[0] == 1:
        return layers.gemm(layer)
    w, fw = layer.params[1]
    w = np.ascontiguousarray(w.T) if node.attr("transB", 0) else w
    if 2 in layer.params:
        return dense(layers.Layer(**{**layer.__dict__, "params": {1: (w, fw), 2: layer.params[2]}}))
    return matmul(layers.Layer(**{**layer.__dict__, "params": {1: (w, fw)}}))


gemm.any_layout = True


# ---- LayerNormalization -------------------------------------------------------------------

def layernorm(layer: Layer):
    """LayerNormalization: hls4ml's nnet::layernormalize (nnet_layernorm.h), whose arithmetic
    the emulator mirrors (conveyor/ops/layernorm.py); scale and bias per normalised element."""
    from conveyor.ops import lut
    from conveyor.ops.layernorm import _axis, auto_accum, epsilon_power_of_10

    node = layer.node
    shape = tuple(layer.in_shapes[0])
    if len(shape) == 4 and _in_hwc(layer):
        raise CodegenError(f"node '{node.name}' (LayerNormalization): code generation takes 2-D / 3-D values "
                           f"(or 4-D ones in ONNX order), got a channels-last {shape}")
    if any(s < len(node.inputs) and node.inputs[s] and s not in layer.params for s in (1, 2)):
        raise CodegenError(f"node '{node.name}' (LayerNormalization): code generation takes a constant scale and bias")
    axis = _axis(node, len(shape))
    if axis == 0:
        raise CodegenError(f"node '{node.name}' (LayerNormalization): axis 0 normalises over items")
    dim = _n(shape[axis:])
    fin = _fixed(layer.in_fmts[0], f"node '{node.name}' input")
    acc = layer.prec.accum if layer.prec.accum is not None else auto_accum(fin, dim)
    acc = _fixed(acc, f"node '{node.name}' accum")
    spec = lut.settings(layer.prec, "layernorm")
    size, p2 = int(spec["size"]), int(spec["range_power2"])
    if p2 < 0:
        raise CodegenError(f"node '{node.name}' (LayerNormalization): tables.layernorm.range_power2 {p2} < 0 is "
                           "conveyor's extension; nnet::layernormalize takes range_power2 >= 0")
    tfmt = lut.fixed_format(spec["format"], f"{node}: tables.layernorm.format")
    fx = _fixed(layer.in_fmts[0], f"node '{node.name}' input")
    # no scale: ones (in the input's format: 1 must be a value of it), no bias: zeros (the emulator's)
    s, fs = layer.params.get(1, (None, FixedType(max(fx.integer, 2) + 1, max(fx.integer, 2))))
    b, fb = layer.params.get(2, (None, fx))
    scale = np.broadcast_to(s, shape[axis:]).reshape(-1) if s is not None else None
    bias = np.broadcast_to(b, shape[axis:]).reshape(-1) if b is not None else None
    c = layer.cfg
    cfg = f"""#include "nnet_layernorm.h"
struct {c} : nnet::layernorm_config {{  // {node.name}: LayerNormalization over {dim} values, {_n(shape) // dim} rows
    static const unsigned n_in = {_n(shape)};
    static const unsigned seq_len = {_n(shape) // dim};
    static const unsigned axis = {axis};
    static const unsigned epsilon_power_of_10 = {epsilon_power_of_10(node)};
    static const unsigned table_range_power2 = {p2};
    static const unsigned table_size = {size};
    typedef {acc} accum_t;
    typedef {_fixed(fb, f"node '{node.name}' bias")} bias_t;
    typedef {_fixed(fs, f"node '{node.name}' scale")} scale_t;
    typedef {tfmt} table_t;
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned reuse_factor = 1;
    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};
"""
    i = layer.index
    pre, sc, bi = "", f"w{i}", f"b{i}"
    if scale is None:
        pre += f"{c}::scale_t ones{i}[{dim}]; for (int j = 0; j < {dim}; j++) ones{i}[j] = 1;\n    "
        sc = f"ones{i}"
    if bias is None:
        pre += f"{c}::bias_t zeros{i}[{dim}]; for (int j = 0; j < {dim}; j++) zeros{i}[j] = 0;\n    "
        bi = f"zeros{i}"
    flat = {k: v for k, v in ((1, scale), (2, bias)) if v is not None}
    return cfg, pre + "nnet::layernormalize<{x}_t, {y}_t, %s>({x}, {y}, %s, %s);" % (c, sc, bi), flat


layernorm.param_arrays = {1: ("w", "scale_t")}


# ---- elementwise: hard sigmoid / swish, range tables ----------------------------------------

def _activ_fields(layer: Layer) -> str:
    return (f"    static const unsigned n_in = {_n(layer.out_shape)};\n"
            "    static const unsigned io_type = nnet::io_parallel;\n    static const unsigned reuse_factor = 1;\n")


def _hard(layer: Layer, alpha: float, beta: float, what: str) -> str:
    from conveyor.ops.math_unary import hard_sigmoid_params

    node = layer.node
    _fixed(layer.in_fmts[0], f"node '{node.name}' input")
    slope, shift, fs, fsh = hard_sigmoid_params(node, layer.prec, alpha, beta)
    c = layer.cfg
    rs, rh = (int(np.asarray(f.quantize_raw(np.array([v])), np.int64)[0]) for v, f in ((slope, fs), (shift, fsh)))
    return (INCLUDE + f"struct {c} : nnet::activ_config {{  // {node.name}: {what}, slope {slope!r}, shift {shift!r}\n"
            + _activ_fields(layer) + f"    typedef {fs} slope_t;\n    typedef {fsh} shift_t;\n"
            "    static const slope_t slope;\n    static const shift_t shift;\n};\n"
            f"const {c}::slope_t {c}::slope = conveyor::fixed_from_raw<{c}::slope_t>({rs});\n"
            f"const {c}::shift_t {c}::shift = conveyor::fixed_from_raw<{c}::shift_t>({rh});\n")


def hard_sigmoid(layer: Layer):
    """HardSigmoid: hls4ml's nnet::hard_sigmoid, alpha / beta in tables.hard_sigmoid's slope_t / shift_t."""
    node = layer.node
    cfg = _hard(layer, float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5)), "HardSigmoid")
    return cfg, "nnet::hard_sigmoid<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


def hard_swish(layer: Layer):
    """HardSwish: x * hard_sigmoid(x) with ONNX's alpha 1/6 (as the float32 attribute) and beta 0.5."""
    cfg = _hard(layer, float(np.float32(1 / 6)), 0.5, "HardSwish")
    return cfg, "conveyor::hard_swish<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


_TABLE_OF = {"Exp": "exp", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Erf": "erf", "Gelu": "gelu",
             "Sigmoid": "sigmoid", "Tanh": "tanh"}


def _range_table(layer: Layer, table: str, fn: str, times_x: bool, what: str):
    from conveyor.ops import lut

    node = layer.node
    _fixed(layer.in_fmts[0], f"node '{node.name}' input")
    size, lo, hi, tfmt = lut.range_spec(node, layer.prec, table)
    if table == "sqrt" and lo < 0:
        raise CodegenError(f"node '{node.name}' ({node.op_type}): tables.sqrt min {lo} < 0")
    cfg = (INCLUDE + f"struct {layer.cfg} {{  // {node.name}: {what}, {size}-entry table of {tfmt} over [{lo}, {hi})\n"
           + _activ_fields(layer) + f"    static const conveyor::table_fn fn = conveyor::table_fn::{fn};\n"
           f"    static const bool times_x = {'true' if times_x else 'false'};\n"
           f"    static const unsigned table_size = {size};\n    static const int table_min = {lo};\n"
           f"    static const int table_max = {hi};\n    typedef {tfmt} table_t;\n}};\n")
    return cfg, "conveyor::range_table<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


def table_fn(layer: Layer):
    """Exp, Sqrt, Reciprocal, Erf (res = table[index(x)]) and Gelu (x * Phi_table[index(x)]):
    conveyor's own range tables (lut.own_table), as the emulator builds and addresses them."""
    node = layer.node
    table = _TABLE_OF[node.op_type]
    fn = table
    if node.op_type == "Gelu" and node.attr("approximate", "none") == "tanh":
        fn = "gelu_tanh"
    return _range_table(layer, table, fn, node.op_type == "Gelu", node.op_type)


def sigmoid_tanh(layer: Layer):
    """Sigmoid / Tanh: hls4ml's nnet::sigmoid / nnet::tanh over their own ranges ([-8, 8), [-4, 4));
    over any other integer range, conveyor::range_table with hls4ml's float entries."""
    from conveyor.codegen.layers import table_activation
    from conveyor.ops import lut

    node = layer.node
    name = node.op_type.lower()
    _, lo, hi, _ = lut.range_spec(node, layer.prec, name)
    if (lo, hi) == (int(lut.DEFAULTS[name]["min"]), int(lut.DEFAULTS[name]["max"])):
        return table_activation(layer)
    return _range_table(layer, name, name, False, f"{node.op_type} (another range than nnet::{name}'s)")


def pow_(layer: Layer):
    """Pow by a constant 0.5 (the Sqrt table) or -1 (the Reciprocal table); integer exponents refused."""
    from conveyor.ops.math_unary import _pow_exponent

    node = layer.node
    e = _pow_exponent(node, layer.consts.get(1))
    if e == 0.5:
        return _range_table(layer, "sqrt", "sqrt", False, "Pow 0.5")
    if e == -1.0:
        return _range_table(layer, "reciprocal", "reciprocal", False, "Pow -1")
    raise CodegenError(f"node '{node.name}' (Pow): exponent {e:g}; code generation takes 0.5 and -1 (the "
                       "Sqrt / Reciprocal tables)")


# ---- Softmax over any axis ------------------------------------------------------------------

def softmax(layer: Layer):
    """Softmax over any axis of any value (opset 13's, or before it the rows of the value made
    2-D at `axis`): each row through nnet::softmax (layers.softmax's config for its length);
    [1, n] values keep layers.softmax itself."""
    from conveyor.codegen import layers
    from conveyor.ops.softmax import _axis

    node = layer.node
    shape = tuple(layer.in_shapes[0])
    if len(shape) == 2 and _axis(node, 2) == 1:
        return layers.softmax(layer)
    axis = _axis(node, len(shape))
    pos = storage(shape, _in_hwc(layer))
    if axis == 0:
        raise CodegenError(f"node '{node.name}' (Softmax): code generation does not take the softmax over items (axis 0)")
    def as_rows(p):
        return np.moveaxis(p, axis, -1).reshape(-1, shape[axis]) if node.opset >= 13 else p.reshape(_n(shape[:axis]), -1)

    rows, out_rows = as_rows(pos), as_rows(storage(shape, _out_hwc(layer)))
    n = rows.shape[1]
    row_layer = layers.Layer(**{**layer.__dict__, "in_shapes": ((1, n),), "out_shape": (1, n)})
    row_cfg, _, _ = layers.softmax(row_layer)
    c = layer.cfg
    row_cfg = row_cfg.replace(f"struct {c} :", f"struct {c}_row :", 1)
    fields = (f"    static const unsigned n_in = {_n(shape)};\n    static const unsigned n_rows = {rows.shape[0]};\n"
              f"    typedef {c}_row row;\n")
    cfg = row_cfg + _struct(layer, f"Softmax over axis {axis} of {shape}, {rows.shape[0]} rows of {n}", fields,
                            {"index": ("int", rows.reshape(-1)), "out_index": ("int", out_rows.reshape(-1))})
    return cfg, "conveyor::softmax_rows<{x}_t, {y}_t, %s>({x}, {y});" % c, {}


softmax.any_layout = True


# ---- Conv without a bias ---------------------------------------------------------------------

def _zero_bias_call(layer: Layer, call: str, n: int) -> str:
    """A conv call reading b<i> made to read a local zero bias (a node without one: acc starts at 0)."""
    c, i = layer.cfg, layer.index
    return (f"{c}::bias_t bz{i}[{n}]; for (int j = 0; j < {n}; j++) bz{i}[j] = 0;\n    "
            + call.replace(f", b{i});", f", bz{i});"))


def conv(layer: Layer):
    """Conv: layers.conv / conv_grouped; without a bias, with a local zero bias (the emulator's
    accumulator starts at 0 either way)."""
    from conveyor.codegen import layers

    if 2 in layer.params or 1 not in layer.params:
        return layers.conv(layer)
    w, fw = layer.params[1]
    cfg, call, flat = layers.conv(layers.Layer(**{**layer.__dict__, "params": {**layer.params,
                                                                              2: (np.zeros(w.shape[0]), fw)}}))
    return cfg, _zero_bias_call(layer, call, int(w.shape[0])), {1: flat[1]}


# ---- ConvTranspose ---------------------------------------------------------------------------

def conv_transpose(layer: Layer):
    """ConvTranspose (2-D, with or without a bias): the Conv of its stretched input, as the emulator computes
    it (conveyor/ops/conv_transpose.py): a gather writes the input with s - 1 zeros between values
    and the padding / cropping, then layers.conv (group 1) or conv_grouped runs with the kernel
    flipped and its channel axes swapped, stride 1, the node's dilations."""
    from conveyor.codegen import layers
    from conveyor.ops.conv_transpose import equivalent_conv

    node = layer.node
    x_shape = tuple(layer.in_shapes[0])
    if len(x_shape) != 4:
        raise CodegenError(f"node '{node.name}' (ConvTranspose): code generation takes 2-D transposed convolutions "
                           f"(got input {x_shape})")
    (w, fw) = layer.params[1]
    bias = layer.params.get(2)
    pos = storage(x_shape, True).astype(np.float64) + 1.0   # 0 marks an inserted zero
    xs, wc_q, geo, group = equivalent_conv(node, pos, w)   # the kernel: pure indexing of w
    stretched = tuple(xs.shape)
    idx = _to_storage(np.round(xs).astype(np.int64) - 1, stretched, True)
    s_cfg = _gather_config(layer, idx, _n(x_shape), f"ConvTranspose input stretched to {stretched}",
                           name=f"{layer.cfg}_s")
    conv_node = SimpleNamespace(name=node.name, op_type="Conv", opset=node.opset,
                                attr=lambda k, d=None: {"group": group, "pads": [0, 0, 0, 0], "strides": [1, 1],
                                                        "dilations": list(geo.dilations)}.get(k, d))
    conv_layer = layers.Layer(**{**layer.__dict__, "node": conv_node, "in_shapes": (stretched,),
                                 "params": {1: (wc_q, fw), 2: bias if bias is not None else (np.zeros(wc_q.shape[0]), fw)}})
    cfg, call, flat = layers.conv(conv_layer)
    if bias is None:   # no bias: a local zero one (the emulator's accumulator starts at 0)
        call, flat = _zero_bias_call(layer, call, int(wc_q.shape[0])), {1: flat[1]}
    n = _n(stretched)
    call = ("{x}_t {y}_s[%d];\n    conveyor::gather<{x}_t, {x}_t, %s_s>({x}, {y}_s);\n    " % (n, layer.cfg)
            + call.replace("({x},", "({y}_s,"))
    return s_cfg + cfg, call, flat


# ---- elementwise arithmetic ---------------------------------------------------------------

def exact_format(values: np.ndarray, where: str) -> FixedType:
    """The narrowest signed ap_fixed holding every value of a float constant exactly (<= 64 bits)."""
    v = np.asarray(values, np.float64).reshape(-1)
    frac = next((f for f in range(0, 61) if np.all(np.ldexp(v, f) == np.round(np.ldexp(v, f)))), None)
    m = float(np.max(np.abs(v), initial=0.0))
    integer = max(1, math.ceil(math.log2(m + 2.0 ** -(frac or 0))) + 1) if m > 0 else 1
    if frac is None or integer + frac > 64:
        raise CodegenError(f"{where}: constant values {v[:4].tolist()} need more than 64 bits as ap_fixed")
    return FixedType(integer + frac, integer)


_BINARY_OP = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 2}


def _broadcast_index(pos: np.ndarray, out_shape) -> np.ndarray:
    pos = pos.reshape((1,) * (len(out_shape) - pos.ndim) + pos.shape)
    return np.ascontiguousarray(np.broadcast_to(pos, tuple(out_shape)))


def binary(layer: Layer):
    """Add / Sub / Mul of two values (any broadcast) or of a value and a float constant (its exact
    ap_fixed), Div by a constant (times its reciprocal in the weight format, the emulator's):
    conveyor::binary, the exact result cast once. Two same-shape values keep nnet::add."""
    from conveyor.codegen import layers

    node = layer.node
    out = tuple(layer.out_shape)
    hwc = _out_hwc(layer)
    if node.op_type == "Add" and len(layer.in_shapes) == 2 and layer.in_shapes[0] == layer.in_shapes[1] \
            and all(_in_hwc(layer, k) == (len(out) == 4) for k in range(2)):
        return layers.add(layer)
    op = _BINARY_OP[node.op_type]
    c = layer.cfg
    ia = _broadcast_index(storage(layer.in_shapes[0], _in_hwc(layer, 0)), out)
    flat = {}
    pre = ""
    if len(layer.in_shapes) == 2:
        ib = _broadcast_index(storage(layer.in_shapes[1], _in_hwc(layer, 1)), out)
        n_b, b_t, b_arg, b_decl = _n(layer.in_shapes[1]), "{xs_t[1]}", "{xs[1]}", ""
    else:
        if node.op_type == "Div":
            recip, fw = layer.params[1]
            const, cfmt, slot = np.asarray(recip, np.float64), _fixed(fw, f"node '{node.name}' weight"), 1
        else:
            slot = next(iter(layer.consts))
            const = np.asarray(layer.consts[slot], np.float64)
            cfmt = exact_format(const, f"node '{node.name}' ({node.op_type})")
            if slot == 0:   # a constant first operand: swap (b - a for Sub)
                op = {0: 0, 1: 5, 2: 2}[op]
        ib = _broadcast_index(np.arange(const.size).reshape(const.shape), out)
        n_b = const.size
        if node.op_type == "Div":
            b_t, b_arg = f"{c}::weight_t", f"w{layer.index}"
            flat = {1: const.reshape(-1)}
        else:
            b_t, b_arg = f"{c}::const_t", f"c{layer.index}"
            pre = f"{c}::const_t c{layer.index}[{n_b}]; conveyor::load_const<{c}>(c{layer.index});\n    "
    fields = (f"    static const unsigned n_a = {_n(layer.in_shapes[0])};\n    static const unsigned n_b = {n_b};\n"
              f"    static const unsigned n_out = {_n(out)};\n    static const int op = {op};  // 0 +, 1 -, 2 *, 5 b - a\n")
    arrays = {"a_index": ("int", _to_storage(ia, out, hwc)), "b_index": ("int", _to_storage(ib, out, hwc))}
    if len(layer.in_shapes) == 1:
        fields += f"    typedef {cfmt} {'weight_t' if node.op_type == 'Div' else 'const_t'};\n"
        if node.op_type != "Div":
            arrays["const_raw"] = ("long long", np.asarray(cfmt.quantize_raw(const.reshape(-1)), np.int64))
    cfg = _struct(layer, f"{node.op_type} {[tuple(s) for s in layer.in_shapes]} -> {out}", fields, arrays)
    return cfg, pre + "conveyor::binary<{xs_t[0]}, %s, {y}_t, %s>({xs[0]}, %s, {y});" % (b_t, c, b_arg), flat


binary.any_layout = True


def where(layer: Layer):
    """Where with a constant condition (comparisons have no fixed-point kernel): a selection of
    X or Y (run-time values or float constants, held exactly), cast once (conveyor::select)."""
    node = layer.node
    if 0 not in layer.consts:
        raise CodegenError(f"node '{node.name}' (Where): its condition is a run-time value; code generation takes "
                           "a constant condition")
    out = tuple(layer.out_shape)
    hwc = _out_hwc(layer)
    c, i = layer.cfg, layer.index
    pick = _broadcast_index(np.asarray(layer.consts[0], bool).astype(np.int64), out)
    ops, types, pre, fields, arrays = [], [], "", "", {"pick": ("int", _to_storage(pick, out, hwc))}
    k = 0
    for slot, name in ((1, "a"), (2, "b")):
        if slot in layer.consts:   # a constant branch
            v = np.asarray(layer.consts[slot], np.float64)
            fmt = exact_format(v, f"node '{node.name}' (Where)")
            fields += f"    typedef {fmt} {name}_t;\n    static const unsigned n_{name} = {v.size};\n"
            arrays[f"{name}_raw"] = ("long long", np.asarray(fmt.quantize_raw(v.reshape(-1)), np.int64))
            pre += (f"{c}::{name}_t {name}{i}[{v.size}]; for (int j = 0; j < {v.size}; j++) {name}{i}[j] = "
                    f"conveyor::fixed_from_raw<{c}::{name}_t>({c}::{name}_raw[j]);\n    ")
            pos = np.arange(v.size).reshape(v.shape)
            ops.append(f"{name}{i}")
            types.append(f"{c}::{name}_t")
        else:
            shape = layer.in_shapes[k]
            pos = storage(shape, _in_hwc(layer, k))
            fields += f"    static const unsigned n_{name} = {_n(shape)};\n"
            ops.append("{xs[%d]}" % k)
            types.append("{xs_t[%d]}" % k)
            k += 1
        arrays[f"{name}_index"] = ("int", _to_storage(_broadcast_index(pos, out), out, hwc))
    fields += f"    static const unsigned n_out = {_n(out)};\n"
    cfg = _struct(layer, f"Where {out}", fields, arrays)
    return cfg, pre + "conveyor::select<%s, %s, {y}_t, %s>(%s, %s, {y});" % (types[0], types[1], c, ops[0], ops[1]), {}


where.any_layout = True


def bipolar_quant(layer: Layer):
    """QONNX's BipolarQuant (constant scale): +-scale, selected by the sign of x / scale, cast once."""
    node = layer.node
    if 1 not in layer.consts:
        raise CodegenError(f"node '{node.name}' (BipolarQuant): code generation takes a constant scale")
    out = tuple(layer.out_shape)
    hwc = _out_hwc(layer)
    scale = np.asarray(layer.consts[1], np.float64)
    fmt = exact_format(scale, f"node '{node.name}' (BipolarQuant) scale")
    acc = FixedType(fmt.width + 1, fmt.integer + 1)
    ia = _broadcast_index(storage(layer.in_shapes[0], _in_hwc(layer)), out)
    sc = _to_storage(np.broadcast_to(scale.reshape((1,) * (len(out) - scale.ndim) + scale.shape), out).copy(), out, hwc)
    fields = (f"    static const unsigned n_in = {_n(layer.in_shapes[0])};\n    static const unsigned n_out = {_n(out)};\n"
              f"    typedef {fmt} const_t;\n    typedef {acc} accum_t;\n")
    cfg = _struct(layer, "BipolarQuant", fields, {"a_index": ("int", _to_storage(ia, out, hwc)),
                                                  "const_raw": ("long long", np.asarray(fmt.quantize_raw(sc.reshape(-1)),
                                                                                        np.int64))})
    return cfg, "conveyor::bipolar<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


bipolar_quant.any_layout = True


def sign(layer: Layer):
    """Neg / Abs: the exact value (one bit wider), cast once to the result."""
    fin = _fixed(layer.in_fmts[0], f"node '{layer.node.name}' input")
    acc = FixedType(fin.width + 1, fin.integer + 1, signed=True)
    fields = (f"    static const unsigned n_in = {_n(layer.out_shape)};\n"
              f"    static const int op = {3 if layer.node.op_type == 'Neg' else 4};\n    typedef {acc} accum_t;\n")
    return _struct(layer, layer.node.op_type, fields, {}), "conveyor::sign<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


WRITERS = {"Transpose": transpose, "Resize": resize, "Upsample": resize, "ReduceSum": reduce,
           "ReduceMean": reduce, "ReduceMax": reduce, "MatMul": matmul, "LayerNormalization": layernorm,
           "HardSigmoid": hard_sigmoid, "HardSwish": hard_swish, "Exp": table_fn, "Sqrt": table_fn,
           "Reciprocal": table_fn, "Erf": table_fn, "Gelu": table_fn, "Sigmoid": sigmoid_tanh,
           "Tanh": sigmoid_tanh, "Pow": pow_, "ConvTranspose": conv_transpose, "Slice": movement,
           "Gather": movement, "Expand": movement, "Pad": movement, "Split": movement, "Softmax": softmax,
           "Dense": dense, "Gemm": gemm, "Conv": conv, "Add": binary, "Sub": binary, "Mul": binary, "Div": binary,
           "Neg": sign, "Abs": sign, "Where": where, "BipolarQuant": bipolar_quant}
#: the writers above that take over an op of layers.py keep its writer for the cases it covers
#: (Dense / Gemm / Softmax on [1, n], Conv with a bias, Add of two same-layout values, the spatial
#: ReduceMean / ReduceSum, Sigmoid / Tanh over hls4ml's ranges): the generated C++ stays the same
