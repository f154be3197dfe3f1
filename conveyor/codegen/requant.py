"""HLS writers of the integer domain a float-scale quantized model loads into
(`conveyor.load(path, requant="integer")`, docs/numerics-quantized.md): Requant (integer
multiplier + shift, or the graph input's quantizer), SumPool (an AveragePool's window sum)
and ReduceSum over H, W (a GlobalAveragePool's sum). The C++ is conveyor_requant.h; each
config struct carries the node's multipliers, shifts and zero point as constants, and the
arithmetic is conveyor/ops/quant.py's (int64 products, round half to even, saturation to
[qmin, qmax]), so that C simulation equals the emulator bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from conveyor.errors import CodegenError
from conveyor.numerics.fixed import FixedType

if TYPE_CHECKING:
    from conveyor.codegen.layers import Layer


def fixed(fmt, where: str) -> FixedType:
    """layers.fixed (imported here at call time: layers.py registers this module's writers)."""
    from conveyor.codegen.layers import fixed as check

    return check(fmt, where)

#: the writer's header, included once per parameters.h (its include guard)
INCLUDE = '#include "conveyor_requant.h"\n'


def _size(shape) -> int:
    return int(np.prod(shape[1:], dtype=np.int64))


def _f32(v: float) -> str:
    """A float32 as a C++ float literal that the compiler reads back to the same float."""
    return f"{float(np.float32(v))!r}f"


def _table(name: str, values) -> str:
    vals = ", ".join(str(int(v)) for v in values)
    return (f"    static long long {name}(unsigned c) {{ static const long long v[{len(values)}] = {{{vals}}}; "
            f"return v[c]; }}\n")


def requant(layer: Layer):
    """Requant: conveyor::requant (one accumulator), requant2 (an Add's two inputs) or quantize
    (the graph input's float values, float32 x / scale as onnxruntime's QuantizeLinear)."""
    node = layer.node
    for k, f in enumerate(layer.in_fmts):
        fixed(f, f"node '{node.name}' input {k}")
    fy = fixed(layer.out_fmt, f"node '{node.name}' result")
    n = _size(layer.out_shape)
    zp = [int(z) for z in node.attr("zero_point")]
    if len(set(zp)) != 1:
        raise CodegenError(f"node '{node.name}' (Requant): code generation takes one zero point, got {zp}")
    in_scale = node.attr("in_scale", [])
    m0, shift = list(node.attr("multiplier", [])), list(node.attr("shift", []))
    nd = len(layer.out_shape)
    axis = int(node.attr("axis", 1)) % nd
    spatial = bool(node.attr("spatial", 0))
    if len(m0) > 1 and len(layer.in_fmts) == 1 and not (nd == 2 and axis == 1 and not spatial or nd == 4):
        raise CodegenError(f"node '{node.name}' (Requant): per-{'position' if spatial else 'channel'} multipliers "
                           f"of a {nd}-D value; code generation takes per-channel ones of 2-D and 4-D values and "
                           "per-position ones of 4-D values")
    if len(m0) > 1 and nd == 4 and not spatial and axis != 1:
        raise CodegenError(f"node '{node.name}' (Requant): multipliers along axis {axis}; code generation takes "
                           "the channel axis (1)")
    stride = int(layer.out_shape[1]) if spatial else 1   # channels last: a position's C values are adjacent
    common = (f"    static const unsigned n_elem = {n};\n"
              f"    static const long long zero_point = {zp[0]};\n"
              f"    static const long long qmin = {int(node.attr('qmin'))};\n"
              f"    static const long long qmax = {int(node.attr('qmax'))};\n"
              f"    static const bool dequantize = {'true' if node.attr('dequantize', 0) else 'false'};\n"
              f"    static constexpr float scale = {_f32(node.attr('scale')[0])};  // the output quantizer's\n")
    c = layer.cfg
    if not len(in_scale):
        what, call = "the graph input's quantizer, float32 x / scale", "quantize"
        body = "    static const unsigned n_chan = 1;\n    static const unsigned chan_stride = 1;\n"
    elif len(layer.in_fmts) == 1:
        what, call = f"acc * M0 >> shift, {len(m0)} multiplier{'s' if len(m0) > 1 else ''}", "requant"
        body = (f"    static const unsigned n_chan = {len(m0)};  // per {'position' if spatial else 'channel'}\n"
                f"    static const unsigned chan_stride = {stride};\n" + _table("multiplier", m0) + _table("shift", shift))
    elif len(layer.in_fmts) == 2 and len(m0) == 2:
        top = max(shift)
        ma, mb = (int(m) << (top - int(k)) for m, k in zip(m0, shift))
        what, call = f"an Add's two inputs, M0 = {m0}, shift = {shift}", "requant2"
        body = (f"    static const unsigned n_chan = 1;\n    static const unsigned chan_stride = 1;\n"
                f"    static const long long m_a = {ma};\n"
                f"    static const long long m_b = {mb};\n" + _table("shift", [top]))
        if layer.in_shapes[0] != layer.in_shapes[1]:
            raise CodegenError(f"node '{node.name}' (Requant): its two inputs differ in shape {list(layer.in_shapes)}")
    else:
        raise CodegenError(f"node '{node.name}' (Requant): {len(layer.in_fmts)} inputs and {len(m0)} multipliers; "
                           "code generation takes one accumulator or an Add's two inputs")
    cfg = f"{INCLUDE}struct {c} {{  // {node.name}: Requant, {what} -> {fy}\n{common}{body}}};\n"
    if call == "requant2":
        return cfg, "conveyor::requant2<{x}_t, {x2}_t, {y}_t, %s>({x}, {x2}, {y});" % c, {}
    return cfg, "conveyor::%s<{x}_t, {y}_t, %s>({x}, {y});" % (call, c), {}


def _sum_config(layer: Layer, ch, h, wd, oh, ow, ph, pw, sh, sw, pads, what: str) -> str:
    from conveyor.codegen.layers import pool_window  # at call time: layers.py registers this module

    node = layer.node
    acc, fields = pool_window(layer, ch, h, wd, oh, ow, ph, pw, sh, sw)
    fixed(layer.out_fmt, f"node '{node.name}' result")
    top, left = pads
    return f"""{INCLUDE}struct {layer.cfg} {{  // {node.name}: {what}
{fields}    static const unsigned pad_top = {top};
    static const unsigned pad_left = {left};
    typedef {acc} accum_t;  // exact window sum
}};
"""


def sum_pool(layer: Layer):
    """SumPool: conveyor::sumpool_2d_cl, the exact window sum (zero padding), cast once."""
    node = layer.node
    if len(layer.in_shapes[0]) != 4:
        raise CodegenError(f"node '{node.name}' (SumPool): code generation takes 2-D pools, got {layer.in_shapes[0]}")
    _, ch, h, wd = layer.in_shapes[0]
    _, _, oh, ow = layer.out_shape
    ph, pw = (int(k) for k in node.attr("kernel_shape"))
    sh, sw = (int(s) for s in node.attr("strides", [1, 1]))
    top, left = (int(p) for p in list(node.attr("pads", [0, 0, 0, 0]))[:2])
    cfg = _sum_config(layer, ch, h, wd, oh, ow, ph, pw, sh, sw, (top, left), f"SumPool {ph}x{pw}")
    return cfg, "conveyor::sumpool_2d_cl<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


def reduce_sum(layer: Layer):
    """ReduceSum over the two spatial axes of a 4-D value: one window over the whole plane."""
    node = layer.node
    shape = layer.in_shapes[0]
    axes = layer.consts[1] if 1 in layer.consts else node.attr("axes")
    axes = sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1)) if axes is not None and len(shape) == 4 else None
    if axes != [2, 3]:
        raise CodegenError(f"node '{node.name}' (ReduceSum): code generation takes the sum over axes [2, 3] (H, W) "
                           f"of an NCHW value, got axes {axes} of shape {shape}")
    _, ch, h, wd = shape
    cfg = _sum_config(layer, ch, h, wd, 1, 1, h, wd, 1, 1, (0, 0), f"ReduceSum over {h}x{wd}")
    return cfg, "conveyor::sumpool_2d_cl<{x}_t, {y}_t, %s>({x}, {y});" % layer.cfg, {}


WRITERS = {"Requant": requant, "SumPool": sum_pool, "ReduceSum": reduce_sum}
