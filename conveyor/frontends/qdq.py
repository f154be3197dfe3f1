"""A quantized ONNX model's own quantizers -> the float graph plus its precision.

QDQ (QuantizeLinear / DequantizeLinear, what onnxruntime's `quantize_static` writes),
QCDQ (Brevitas: QuantizeLinear -> Clip -> DequantizeLinear) and QONNX's `Quant`
describe fake quantization: a tensor is rounded onto a grid `scale * (q - zero_point)`,
q clipped to an integer range. conveyor keeps no quantizer node: `strip` removes every
quantizer from the ModelProto before the Graph is built and returns what each one said:

- on a constant (weights, biases): the constant is replaced by its dequantized values
  (computed as onnxruntime does, in float32) and the format becomes the `weight` or
  `bias` role of the nodes that read it;
- on an activation: readers of the quantizer read its input, and the format becomes the
  `result` role of the node producing that input (the Emulator casts every result);
- on a graph input: the config's `input` format.

Every other role takes WIDE (exact for the sums of small quantized models) and `accum`
is `auto` (exact), so that only the model's quantizers round. docs/numerics-quantized.md
states the mapping, and where it is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from conveyor.errors import ModelError
from conveyor.graph.passes import drop_dead, drop_passthrough, fold_constants
from conveyor.numerics.config import PrecisionConfig
from conveyor.numerics.fixed import FixedType

#: the format of every value no quantizer of the model names (see module docstring)
WIDE = "ap_fixed<48,24>"
#: the graph passes that keep every node's name and result (folding BatchNorm or fusing
#: MatMul + Add would merge a quantized result into its reader)
PASSES = (drop_passthrough, fold_constants, drop_dead)
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "Quant", "Trunc", "BipolarQuant")
_QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")

# (lowest, highest) stored integer per ONNX integer type
_INT_RANGES = {
    onnx.TensorProto.INT8: (-128, 127), onnx.TensorProto.UINT8: (0, 255),
    onnx.TensorProto.INT4: (-8, 7), onnx.TensorProto.UINT4: (0, 15),
    onnx.TensorProto.INT16: (-32768, 32767), onnx.TensorProto.UINT16: (0, 65535),
    onnx.TensorProto.INT32: (-(2**31), 2**31 - 1),
}
# QONNX rounding_mode (qonnx.custom_op.general.intquant.resolve_rounding_mode) -> ap_fixed mode;
# CEIL and UP have no ap_fixed counterpart
_QONNX_ROUNDING = {"ROUND": "RND_CONV", "HALF_EVEN": "RND_CONV", "FLOOR": "TRN", "DOWN": "TRN_ZERO",
                   "HALF_UP": "RND_INF", "HALF_DOWN": "RND_ZERO"}
# the reference's rounding of a constant, per ap_fixed mode (numpy's round is half to even)
_ROUND_FN = {"RND_CONV": np.round, "TRN": np.floor, "TRN_ZERO": np.trunc,
             "RND_INF": lambda y: np.sign(y) * np.floor(np.abs(y) + 0.5),
             "RND_ZERO": lambda y: np.sign(y) * np.ceil(np.abs(y) - 0.5)}


@dataclass(frozen=True)
class Quantizer:
    """One quantizer of the model and the fixed-point format conveyor reads from it."""

    tensor: str            # the tensor it quantizes (after load: the value its readers see)
    kind: str              # "weight" (a constant) | "activation" | "input"
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    qmin: int
    qmax: int
    rounding: str          # ap_fixed quantization mode of the quantizer
    format: str
    exact: bool            # the format equals the quantizer bit for bit
    note: str = ""

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["scale"], d["zero_point"] = list(self.scale), list(self.zero_point)
        return d


@dataclass(frozen=True)
class ModelPrecision:
    """What a quantized model's quantizers say: the config and one entry per quantizer."""

    config: PrecisionConfig
    quantizers: tuple[Quantizer, ...]

    @property
    def exact(self) -> bool:
        return all(q.exact for q in self.quantizers)


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QUANT_OPS for n in model.graph.node)


def fixed_format(scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int, rounding: str,
                 narrow: bool = False) -> tuple[FixedType, bool, str]:
    """The ap_fixed format of `scale * (clip(q, qmin, qmax) - zero_point)`, whether it is exact, why not.

    Exact when every scale is a power of two and the real range [(qmin - zp) s, (qmax - zp) s]
    is the range of a format (zp 0; or 2**(b-1) on an unsigned type, which is the signed
    range). Otherwise: the LSB is the nearest power of two to the (smallest) scale and the
    format the narrowest covering the real range; values then differ from the reference by up
    to about half the scale's mismatch per quantizer (the test measures it)."""
    scale = np.atleast_1d(np.asarray(scale, np.float64))
    zp = np.atleast_1d(np.asarray(zero_point, np.int64))
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise ModelError(f"quantizer scale {scale.tolist()} must be finite and > 0")
    mant, _ = np.frexp(scale)
    pow2 = bool(np.all(mant == 0.5))
    exps = np.log2(scale)
    # the finest scale sets the grid (per-axis weights keep every channel's resolution)
    frac = int(-np.floor(exps.min())) if pow2 else int(-np.round(exps.min()))
    lo = float(np.min((qmin - zp) * scale))
    hi = float(np.max((qmax - zp) * scale))
    lsb = math.ldexp(1.0, -frac)
    signed = lo < 0
    raw_lo, raw_hi = math.floor(lo / lsb), math.ceil(hi / lsb)
    width = 1
    while not (raw_lo >= (-(1 << (width - 1)) if signed else 0)
               and raw_hi <= ((1 << (width - 1)) - 1 if signed else (1 << width) - 1)):
        width += 1
    symmetric = narrow and signed and raw_lo == -raw_hi and raw_hi == (1 << (width - 1)) - 1
    overflow = "SAT_SYM" if symmetric else "SAT"
    fmt = FixedType(width, width - frac, signed, rounding, overflow)
    why = []
    if not pow2:
        why.append(f"scale {scale.tolist()} is not a power of two: the grid is 2^{-frac}")
    elif np.any(exps != exps.min()):
        why.append(f"per-axis scales {scale.tolist()} differ: the finest one's grid holds them all")
    range_ok = (raw_lo * lsb, raw_hi * lsb) == (fmt.min_value if not symmetric else -fmt.max_value, fmt.max_value)
    if not range_ok:
        why.append(f"range [{lo}, {hi}] is not a format's: saturation is at [{fmt.min_value}, {fmt.max_value}]")
    return fmt, not why, "; ".join(why)


class _Consts:
    """The model's constants (initializers and Constant nodes) as arrays and element types."""

    def __init__(self, g: onnx.GraphProto):
        self.protos: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.protos[n.output[0]] = a.t
                    elif a.name in ("value_float", "value_int"):
                        v = helper.get_attribute_value(a)
                        self.protos[n.output[0]] = numpy_helper.from_array(
                            np.asarray(v, np.float32 if a.name == "value_float" else np.int64), n.output[0])

    def has(self, name: str) -> bool:
        return bool(name) and name in self.protos

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.protos[name])

    def elem_type(self, name: str) -> int:
        return self.protos[name].data_type


@dataclass
class _Spec:
    """One quantizer as read: the tensor it quantizes and how to fake-quantize a constant."""

    x: str
    chain: list                 # the nodes the quantizer is made of (dropped)
    q: Quantizer
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None            # per-axis quantization axis (None: broadcast as stored, QONNX)
    stored_ints: bool           # x holds the quantized integers (else float values to quantize)

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        """float32 values the reference computes for constant x (onnxruntime / qonnx: float32 x / scale,
        round, + zero point, clip, then (q - zero point) * scale)."""
        s, z = self.scale.astype(np.float32), self.zero_point.astype(np.float32)
        if self.axis is not None and s.size > 1:
            shape = [1] * x.ndim
            shape[self.axis % x.ndim] = s.size
            s, z = s.reshape(shape), np.broadcast_to(z, s.shape).reshape(shape)   # (a DQ without zero point)
        if self.stored_ints:
            return ((x.astype(np.float32) - z) * s).astype(np.float32)
        y = (x.astype(np.float32) / s).astype(np.float32)
        rounded = _ROUND_FN[self.q.rounding](y)
        qv = np.clip(rounded + z, self.q.qmin, self.q.qmax)
        return ((qv - z) * s).astype(np.float32)


REQUANT_MODES = ("nearest", "integer")


def strip(model: onnx.ModelProto, source: str, requant: str = "integer"
          ) -> tuple[onnx.ModelProto, dict[str, tuple[str, Quantizer]]]:
    """A copy of `model` without quantizers, and {tensor: (role, Quantizer)} for what they said
    (role: "weight" for a constant, "result" for an activation, "input" for a graph input).
    `requant="integer"`: float scales in the integer domain where the model allows it (`_integer_domain`)."""
    if requant not in REQUANT_MODES:
        raise ModelError(f"{source}: requant={requant!r}; accepted: {', '.join(map(repr, REQUANT_MODES))}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    consts = _Consts(g)
    _trunc_v1_as_mul(g, consts, source)
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    graph_inputs = {vi.name for vi in g.input}
    specs = []
    for n in g.node:
        if n.op_type == "DequantizeLinear":
            specs.append((n, _dequantizer(n, producer, consts, source)))
        elif n.op_type == "Quant" and n.domain in _QONNX_DOMAINS:
            specs.append((n, _qonnx_quant(n, consts, source)))
        elif n.op_type == "Trunc" and n.domain in _QONNX_DOMAINS:
            specs.append((n, _qonnx_trunc(n, consts, source)))
        elif n.op_type == "Identity" and n.domain == _TRUNC_V1:
            specs.append((n, _qonnx_trunc_v1(n, consts, source)))
    if requant == "integer" and any(not sp.q.exact and not _pow2(sp.scale) for _, sp in specs):
        done = _integer_domain(model, specs, consts, source)
        if not isinstance(done, str):
            return done
        specs = [(n, replace(sp, q=replace(sp.q, note=f"{sp.q.note}; no integer requantisation: {done}")))
                 if not sp.q.exact else (n, sp) for n, sp in specs]
    drop = {id(c) for _, sp in specs for c in sp.chain}
    bipolar = _bipolar(g, consts, source)
    rename: dict[str, str] = {}      # tensor read after a quantizer -> the tensor it quantized
    new_consts: dict[str, np.ndarray] = {}
    found: dict[str, tuple[str, Quantizer]] = {}
    for n, sp in specs:
        out = n.output[0]
        if consts.has(sp.x):
            values = new_consts[out] = sp.fake_quantize(consts.array(sp.x))
            # a constant's format is exact when it holds every value (per-axis scales included)
            held = np.array_equal(FixedType.parse(sp.q.format).quantize(values), values.astype(np.float64))
            found[out] = ("weight", replace(sp.q, tensor=out, kind="weight", exact=held,
                                            note="" if held else sp.q.note))
            continue
        outside = [r.name or r.op_type for r in readers.get(sp.x, []) if id(r) not in drop]
        if outside:
            raise ModelError(f"{source}: tensor '{sp.x}' is read both through quantizer '{n.name or out}' and "
                             f"directly by {outside}; conveyor attaches a quantizer to the tensor's producer, "
                             "so every reader must see the quantized value")
        role = "input" if sp.x in graph_inputs else "result"
        q = replace(sp.q, tensor=sp.x, kind="input" if role == "input" else "activation")
        if sp.x in found and found[sp.x][1].format != q.format:
            raise ModelError(f"{source}: tensor '{sp.x}' has two quantizers ({found[sp.x][1].format}, {q.format})")
        found[sp.x] = (role, q)
        rename[out] = sp.x
    for o in g.output:   # a quantized graph output keeps its name: its producer is renamed to write it
        src = rename.get(o.name)
        if src is None:
            continue
        if src in graph_inputs or src in {x.name for x in g.output}:
            raise ModelError(f"{source}: graph output '{o.name}' only quantizes '{src}'; not supported")
        for k, v in list(rename.items()):
            if v == src:
                rename[k] = o.name
        rename[src] = o.name
        del rename[o.name]
        role, q = found.pop(src)
        found[o.name] = (role, replace(q, tensor=o.name))
    kept = [n for n in g.node if id(n) not in drop]
    for n in kept:
        for i, t in enumerate(n.input):
            n.input[i] = rename.get(t, t)
        for i, t in enumerate(n.output):
            n.output[i] = rename.get(t, t)
    for n in kept:
        if id(n) in bipolar:   # conveyor's own BipolarQuant op (conveyor/ops/quant.py)
            role, q = bipolar[id(n)]
            if consts.has(n.input[0]):
                x = consts.array(n.input[0]).astype(np.float32)
                new_consts[n.output[0]] = np.where(x / np.float32(q.scale[0]) >= 0, 1, -1).astype(np.float32) * np.float32(q.scale[0])
                drop.add(id(n))
                found[n.output[0]] = ("weight", replace(q, kind="weight"))
            else:
                n.ClearField("domain")
                found[n.output[0]] = ("result", q)
    kept = [n for n in kept if id(n) not in drop]
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in new_consts.items())
    return model, found


def _dequantizer(dq: onnx.NodeProto, producer, consts: _Consts, source: str) -> _Spec:
    """One DequantizeLinear and what it dequantizes (stored integers, or a QuantizeLinear [-> Clip])."""
    name = dq.name or dq.output[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
    if not consts.has(dq.input[1]):
        raise ModelError(f"{source}: DequantizeLinear '{name}': scale '{dq.input[1]}' is not a constant")
    scale = consts.array(dq.input[1])
    zp_name = dq.input[2] if len(dq.input) > 2 else ""
    zp = consts.array(zp_name).astype(np.int64) if consts.has(zp_name) else np.zeros(1, np.int64)
    chain, src, clip_range = [dq], dq.input[0], None
    clip = producer.get(src)
    if clip is not None and clip.op_type == "Clip":   # QCDQ: the Clip narrows the integer range
        clip_range = tuple(int(consts.array(clip.input[k]).item()) for k in (1, 2))
        chain.append(clip)
        src = clip.input[0]
    ql = producer.get(src)
    if consts.has(src):            # stored integers: a weight or bias
        elem, x, stored = consts.elem_type(src), src, True
    elif ql is not None and ql.op_type == "QuantizeLinear":
        zq = ql.input[2] if len(ql.input) > 2 else ""
        elem = consts.elem_type(zq) if consts.has(zq) else onnx.TensorProto.UINT8
        if not np.array_equal(consts.array(ql.input[1]), scale):
            raise ModelError(f"{source}: QuantizeLinear '{ql.name}' and DequantizeLinear '{name}' scales differ")
        x, stored = ql.input[0], False
        chain.append(ql)
    else:
        raise ModelError(f"{source}: DequantizeLinear '{name}' reads '{src}', which is neither a constant nor "
                         "a QuantizeLinear's output; conveyor reads quantizer pairs")
    if elem not in _INT_RANGES:
        raise ModelError(f"{source}: DequantizeLinear '{name}': integer type "
                         f"{onnx.TensorProto.DataType.Name(elem)} unsupported; accepted: int/uint 4, 8, 16, int32")
    qmin, qmax = _INT_RANGES[elem]
    narrow = False
    if clip_range is not None:
        qmin, qmax = max(qmin, clip_range[0]), min(qmax, clip_range[1])
        narrow = qmin == -qmax
    q = _quantizer(dq.output[0], scale, zp, qmin, qmax, "RND_CONV", narrow)
    return _Spec(x, chain, q, scale, zp, int(attrs.get("axis", 1)), stored)


def _quantizer(tensor, scale, zp, qmin, qmax, rounding, narrow) -> Quantizer:
    fmt, exact, note = fixed_format(scale, zp, qmin, qmax, rounding, narrow)
    return Quantizer(tensor, "weight", tuple(float(s) for s in np.ravel(scale)), tuple(int(z) for z in np.ravel(zp)),
                     qmin, qmax, rounding, str(fmt), exact, note)


def _qonnx_attrs(n: onnx.NodeProto, default_mode: str, where: str) -> tuple[dict, str]:
    """A QONNX node's attributes and its rounding_mode (upper case), checked against those ap_fixed has."""
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    mode = attrs.get("rounding_mode", default_mode)
    mode = (mode.decode() if isinstance(mode, bytes) else str(mode)).upper()
    if mode not in _QONNX_ROUNDING:
        raise ModelError(f"{where}: rounding_mode {mode!r}; accepted: {sorted(_QONNX_ROUNDING)}")
    return attrs, mode


def _qonnx_quant(n: onnx.NodeProto, consts: _Consts, source: str) -> _Spec:
    """A QONNX Quant(x, scale, zeropt, bitwidth; signed, narrow, rounding_mode)."""
    name = n.name or n.output[0]
    for k in (1, 2, 3):
        if not consts.has(n.input[k]):
            raise ModelError(f"{source}: Quant '{name}': input {k} '{n.input[k]}' is not a constant")
    attrs, mode = _qonnx_attrs(n, "ROUND", f"{source}: Quant '{name}'")
    scale, zp = consts.array(n.input[1]), consts.array(n.input[2])
    bits = float(consts.array(n.input[3]))
    if bits != int(bits) or bits < 1:
        raise ModelError(f"{source}: Quant '{name}': bitwidth {bits} must be a positive integer")
    bits, signed, narrow = int(bits), bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
    qmin, qmax = _int_range(bits, signed, narrow)
    if np.any(zp != np.round(zp)):
        raise ModelError(f"{source}: Quant '{name}': zero point {np.ravel(zp).tolist()} is not an integer")
    zpi = np.asarray(zp).astype(np.int64)
    q = _quantizer(n.output[0], scale, zpi, qmin, qmax, _QONNX_ROUNDING[mode], narrow)
    return _Spec(n.input[0], [n], q, np.asarray(scale), zpi, None, False)


_TRUNC_V1 = "conveyor.trunc_v1"   # marks the Identity that carries a Trunc v1's quantizer (dropped)


def _trunc_v1_as_mul(g: onnx.GraphProto, consts: _Consts, source: str) -> None:
    """QONNX Trunc v1 (x, scale, zeropt, input_bit_width, output_bit_width; rounding_mode) in place.

    qonnx.custom_op.general.trunc.trunc_v1 computes, with t = input_bit_width - output_bit_width,
        y = (rounding_mode(round(x / scale + zeropt) / 2^t) - zeropt) * scale
    and clips nothing: its output keeps the input's scale (the value is x / 2^t, rounded onto the
    scale's grid). On an input on its grid with zeropt 0 that is Mul(x, 2^-t) whose result is cast
    to the grid of `scale` by rounding_mode: a Mul node plus a quantizer (on a marker Identity that
    `strip` drops), with output_bit_width + 1 signed bits, which hold every signed or unsigned
    output_bit_width-bit result, so that it never saturates."""
    out = []
    for n in g.node:
        if not (n.op_type == "Trunc" and n.domain in _QONNX_DOMAINS and len(n.input) == 5):
            out.append(n)
            continue
        name = n.name or n.output[0]
        for k in range(1, 5):
            if not consts.has(n.input[k]):
                raise ModelError(f"{source}: Trunc '{name}': input {k} '{n.input[k]}' is not a constant")
        zp = consts.array(n.input[2])
        if np.any(zp != 0):
            raise ModelError(f"{source}: Trunc v1 '{name}': zero point {np.ravel(zp).tolist()}; accepted: 0 "
                             "(v1 subtracts the unscaled zero point from the truncated value)")
        ib, ob = float(consts.array(n.input[3])), float(consts.array(n.input[4]))
        if ib != int(ib) or ob != int(ob) or not 1 <= ob <= ib:
            raise ModelError(f"{source}: Trunc v1 '{name}': bit widths {ib} -> {ob}; accepted: integers, "
                             "1 <= output_bit_width <= input_bit_width")
        c = f"{n.output[0]}__trunc_scale"
        g.initializer.append(numpy_helper.from_array(np.float32(2.0 ** -(ib - ob)), c))
        consts.protos[c] = g.initializer[-1]
        mid = f"{n.output[0]}__trunc"
        marker = helper.make_node("Identity", [mid] + list(n.input[1:]), [n.output[0]], name=name, domain=_TRUNC_V1)
        marker.attribute.extend(n.attribute)
        out += [helper.make_node("Mul", [n.input[0], c], [mid], name=f"{name}_shift"), marker]
    del g.node[:]
    g.node.extend(out)


def _qonnx_trunc_v1(n: onnx.NodeProto, consts: _Consts, source: str) -> _Spec:
    """The quantizer of a Trunc v1 after `_trunc_v1_as_mul`: the input's scale, output_bit_width + 1 bits."""
    attrs, mode = _qonnx_attrs(n, "FLOOR", f"{source}: Trunc '{n.name}'")
    scale = consts.array(n.input[1]).astype(np.float64)
    ob = int(float(consts.array(n.input[4])))
    zpi = np.zeros(1, np.int64)
    q = _quantizer(n.output[0], scale, zpi, -(2 ** ob), 2 ** ob - 1, _QONNX_ROUNDING[mode], False)
    return _Spec(n.input[0], [n], q, scale, zpi, None, False)


def _qonnx_trunc(n: onnx.NodeProto, consts: _Consts, source: str) -> _Spec:
    """A QONNX Trunc (v2: x, scale, zeropt, input_bit_width, output_scale, output_bit_width).

    qonnx.custom_op.general.trunc.trunc_v2 rounds x / scale + zeropt (x is on that grid), divides
    by output_scale / scale, clips to the output bit width's range and rounds by rounding_mode
    (default FLOOR): on an input already on its grid that is a quantizer with the output scale,
    zero point zeropt / (output_scale / scale) and the output bit width."""
    name = n.name or n.output[0]
    if len(n.input) != 6:
        raise ModelError(f"{source}: Trunc '{name}' has {len(n.input)} inputs; conveyor reads QONNX Trunc v2 "
                         "(x, scale, zeropt, input_bit_width, output_scale, output_bit_width) and v1 (x, scale, "
                         "zeropt, input_bit_width, output_bit_width)")
    for k in range(1, 6):
        if not consts.has(n.input[k]):
            raise ModelError(f"{source}: Trunc '{name}': input {k} '{n.input[k]}' is not a constant")
    attrs, mode = _qonnx_attrs(n, "FLOOR", f"{source}: Trunc '{name}'")
    scale, zp, out_scale = (consts.array(n.input[k]).astype(np.float64) for k in (1, 2, 4))
    bits = int(consts.array(n.input[5]))
    signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
    qmin, qmax = _int_range(bits, signed, narrow)
    trunc_scale = 2.0 ** np.round(np.log2(out_scale / scale))
    zpo = zp / trunc_scale
    if np.any(zpo != np.round(zpo)):
        raise ModelError(f"{source}: Trunc '{name}': output zero point {np.ravel(zpo).tolist()} is not an integer")
    zpi = np.asarray(zpo).astype(np.int64)
    q = _quantizer(n.output[0], out_scale, zpi, qmin, qmax, _QONNX_ROUNDING[mode], narrow)
    return _Spec(n.input[0], [n], q, out_scale, zpi, None, False)


def _bipolar(g: onnx.GraphProto, consts: _Consts, source: str) -> dict[int, tuple[str, Quantizer]]:
    """QONNX BipolarQuant(x, scale) nodes: values +-scale, the format ap_fixed<2, 2 - f> for scale 2^-f."""
    out = {}
    for n in g.node:
        if n.op_type != "BipolarQuant" or n.domain not in _QONNX_DOMAINS:
            continue
        if not consts.has(n.input[1]) or consts.array(n.input[1]).size != 1:
            raise ModelError(f"{source}: BipolarQuant '{n.name or n.output[0]}': scale must be one constant")
        s = np.float64(consts.array(n.input[1]).item())
        q = _quantizer(n.output[0], s, np.zeros(1, np.int64), -1, 1, "TRN", False)
        fmt = FixedType.parse(q.format)
        exact = bool(np.array_equal(fmt.quantize(np.array([-s, s])), [-s, s]))
        out[id(n)] = ("result", replace(q, kind="activation", exact=exact,
                                        note="" if exact else f"scale {s} is not a power of two"))
    return out


def _int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """qonnx.custom_op.general.quant.min_int / max_int."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1 - int(narrow)


def attach(graph, found: dict[str, tuple[str, Quantizer]], source: str) -> "ModelPrecision":
    """The PrecisionConfig that puts each quantizer's format on the role it maps to in `graph`."""
    from conveyor import ops

    nodes: dict[str, dict[str, str]] = {}
    inputs = set()
    lost = []
    for tensor, (role, q) in found.items():
        if role == "input":
            inputs.add(q.format)
            continue
        if role == "requant":   # the Requant node is named after its tensor (frontends/qdq.py)
            prod = graph.producer(tensor)
            if prod is not None:
                nodes.setdefault(prod.name, {})["result"] = q.format
            continue
        if role == "result":
            prod = graph.producer(tensor)
            if prod is None:
                lost.append(tensor)
                continue
            nodes.setdefault(prod.name, {})["result"] = q.format
            continue
        readers = [(n, slot) for n in graph.consumers(tensor) for slot, t in enumerate(n.inputs) if t == tensor]
        for n, slot in readers:
            opdef = ops.get(n.op_type, n)
            if slot in opdef.param_slots:
                nodes.setdefault(n.name, {})["bias" if slot in opdef.bias_slots else "weight"] = q.format
    if lost:
        raise ModelError(f"{source}: quantized tensors {lost} are produced by no node")
    if len(inputs) > 1:
        raise ModelError(f"{source}: graph inputs are quantized to different formats {sorted(inputs)}; "
                         "conveyor has one input format")
    config = {"default": WIDE, "accum": "auto", "nodes": nodes}
    if inputs:
        config["input"] = inputs.pop()
    if any(role == "requant" for role, _ in found.values()):
        # the integer domain: every value no Requant writes is an integer (int32 sums, grid ops on
        # q - z); the graph input stays the host's float values, quantized by the first Requant
        config.update(default=INT_FORMAT, input=config.get("input", WIDE))
    return ModelPrecision(PrecisionConfig.from_dict(config, source=source),
                          tuple(q for _, q in found.values()))


def _pow2(scale) -> bool:
    return bool(np.all(np.frexp(np.asarray(scale, np.float64))[0] == 0.5))


#: ops that keep their input's integer grid (q - zero point in, the same out)
_GRID_OPS = ("Relu", "MaxPool", "Flatten", "Reshape", "Identity", "Transpose", "Squeeze", "Unsqueeze")
_DOT_OPS = ("Conv", "MatMul", "Gemm")
INT_FORMAT = "ap_fixed<32,32>"   # an int32 accumulator, as integer-only pipelines keep it


def _multiplier(m: float) -> tuple[int, int]:
    """M = M0 * 2^-shift with M0 an int32 in [2^30, 2^31) (TFLite's QuantizeMultiplier, Q31)."""
    mant, exp = math.frexp(m)            # m = mant * 2^exp, mant in [0.5, 1)
    m0 = round(mant * 2**31)
    if m0 == 2**31:
        m0, exp = m0 // 2, exp + 1
    return m0, 31 - exp


def dequantized_format(scale, lo: int, hi: int) -> str:
    """The ap_fixed that holds every float32 `k * scale` (k an integer in [lo, hi]) exactly: float32's
    24-bit significand puts `scale` on the grid 2^(e - 24) (scale = mant * 2^e, mant in [0.5, 1)), and
    every rounded product, at least `scale` in magnitude, on a multiple of it."""
    scale = np.float32(scale)
    _, e = math.frexp(float(scale))
    frac = 24 - e
    top = max(abs(int(lo)), abs(int(hi)))
    raw = int(np.float64(np.float32(top) * scale) * 2.0**frac)
    width = raw.bit_length() + 1
    return f"ap_fixed<{width},{width - frac}>"


class _OnnxAttrs:
    """An onnx NodeProto's attributes behind conveyor's `node.attr(key, default)` (ops/conv.py's geometry)."""

    def __init__(self, n: onnx.NodeProto):
        self.name, self.op_type = n.name or n.output[0], n.op_type
        self.attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}

    def attr(self, key, default=None):
        return self.attrs.get(key, default)

    def __str__(self) -> str:
        return f"node '{self.name}' ({self.op_type})"


def _sum_pool(n: onnx.NodeProto, scale_of: dict, dims) -> onnx.NodeProto | str:
    """A quantized AveragePool as SumPool (conveyor/ops/quant.py), the exact integer sum of each window,
    and its scale s_x / k for the next Requant (M = s_x / (k s_y)): one scale, or one per output position
    where the windows count different taps k (count_include_pad=0 with padding, ceil_mode's last
    windows); or why not (dilation, a window that counts no tap)."""
    from conveyor.ops.conv import window_geometry
    from conveyor.ops.pool import _counts_1d

    where = f"node '{n.name or n.output[0]}' (AveragePool)"
    x = n.input[0]
    if x not in scale_of or scale_of[x][1] is not None or scale_of[x][0].size != 1:
        return f"{where} reads a tensor that is not a per-tensor quantized activation"
    if not dims or len(dims) < 3 or not all(dims):
        return f"{where}: the input's shape is not known"
    node = _OnnxAttrs(n)
    kernel = [int(k) for k in node.attr("kernel_shape", [])]
    if any(int(d) != 1 for d in node.attr("dilations", [1] * len(kernel))):
        return f"{where} is dilated"
    spatial = tuple(dims[2:])
    ceil = int(node.attr("ceil_mode", 0))
    geo = window_geometry(node, spatial, kernel, ceil_mode=bool(ceil), dilations=[1] * len(kernel))
    include = bool(node.attr("count_include_pad", 0))
    k = np.ones((), np.int64)
    for i in range(len(kernel)):   # taps counted per output position (ops/pool.py's rule)
        k = np.multiply.outer(k, _counts_1d(geo, i, spatial[i], include))
    if np.any(k == 0):
        return f"{where} has a window that counts no tap (padding at least the kernel)"
    scales = scale_of[x][0] / k.reshape(-1).astype(np.float64)
    uniform = bool(np.all(k == k.reshape(-1)[0]))
    scale_of[n.output[0]] = (scales[:1], "acc", 1) if uniform else (scales, "acc", "spatial")
    return helper.make_node("SumPool", [x], list(n.output), name=n.name, kernel_shape=kernel,
                            strides=list(geo.strides), pads=list(geo.begin) + list(geo.end), ceil_mode=ceil)


def _integer_domain(model, specs, consts: _Consts, source: str):
    """A float-scale QDQ model (onnxruntime quantize_static) in the integer domain, as an
    integer-only pipeline runs it (conveyor/ops/quant.py, Requant), or why not (an op outside
    Conv/MatMul/Gemm, Add, AveragePool (SumPool), GlobalAveragePool (ReduceSum) and the grid-keeping
    ops): then `strip` takes the nearest power of two."""
    g = model.graph
    by_out = {n.output[0]: sp for n, sp in specs}
    chain_ids = {id(c) for _, sp in specs for c in sp.chain}
    graph_inputs = {vi.name for vi in g.input}
    outputs = {o.name for o in g.output}
    scale_of: dict[str, tuple[np.ndarray, int | None]] = {}   # integer-domain tensor -> (scale, axis)
    weight_int: dict[str, np.ndarray] = {}                     # DQ output of a constant -> its integers
    found: dict[str, tuple[str, Quantizer]] = {}
    new_nodes = []
    extra_inits: list[onnx.TensorProto] = []
    shapes = None

    def shape_of(t):
        nonlocal shapes
        if shapes is None:
            inferred = onnx.shape_inference.infer_shapes(model).graph
            shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                      for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output)}
        return shapes.get(t)

    def int_format(lo, hi):
        width = max(int(lo).bit_length(), int(hi).bit_length()) + 1
        return f"ap_fixed<{width},{width}>"

    for n, sp in specs:   # constants: their stored integers (minus zero point)
        out = n.output[0]
        if consts.has(sp.x):
            if not sp.stored_ints:
                return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
            ints = consts.array(sp.x).astype(np.int64)
            zp = sp.zero_point
            if sp.axis is not None and zp.size > 1:
                shape = [1] * ints.ndim
                shape[sp.axis % ints.ndim] = zp.size
                zp = zp.reshape(shape)
            v = ints - zp
            if np.max(np.abs(v), initial=0) >= 2**24:   # the float graph holds them in float32
                return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
            weight_int[out] = v
            fmt = int_format(v.min(initial=0), v.max(initial=0))
            found[out] = ("weight", replace(sp.q, tensor=out, kind="weight", format=fmt, exact=True,
                                            note=f"stored integers (scale {list(sp.q.scale)[:4]} moves to the "
                                                 "next Requant's multiplier)"))
    for n in g.node:
        if id(n) in chain_ids or n.op_type == "Constant":
            if n.op_type == "DequantizeLinear" and n.output[0] in by_out and n.output[0] not in weight_int:
                sp = by_out[n.output[0]]
                src = sp.x
                in_scale, axis = None, 1
                srcs = [src]
                if src in graph_inputs:
                    in_scale = np.zeros(0)
                elif src in scale_of and scale_of[src][1] == "sum":   # an Add of two grid tensors
                    in_scale, srcs = scale_of[src][0], scale_of[src][2]
                elif src in scale_of and scale_of[src][1] == "acc":
                    in_scale, axis = scale_of[src][0], scale_of[src][2]
                elif src in scale_of:   # requantising a grid tensor
                    in_scale = scale_of[src][0]
                else:
                    return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
                s_out = np.ravel(sp.scale).astype(np.float32)
                if s_out.size != 1:
                    return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
                attrs = dict(scale=[float(s_out[0])], zero_point=[int(z) for z in np.ravel(sp.zero_point)],
                             qmin=sp.q.qmin, qmax=sp.q.qmax, axis=1 if axis == "spatial" else axis,
                             dequantize=int(n.output[0] in outputs))
                if axis == "spatial":   # one multiplier per position (an AveragePool's border windows)
                    attrs["spatial"] = 1
                note = "input quantizer: float32 x / scale, round half to even (the host's job)"
                if in_scale.size:
                    ms = [_multiplier(float(m)) for m in np.ravel(in_scale.astype(np.float64) / np.float64(s_out[0]))]
                    attrs.update(in_scale=[float(v) for v in np.ravel(in_scale)],
                                 multiplier=[m for m, _ in ms], shift=[k for _, k in ms])
                    if min(k for _, k in ms) < 1 or max(k for _, k in ms) > 62:
                        return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
                    note = (f"integer requantisation: acc * M0 >> shift, M0 = {ms[0][0]}, shift = {ms[0][1]}"
                            + (f" (and {len(ms) - 1} more {'positions' if axis == 'spatial' else 'channels'})"
                               if len(ms) > 1 and len(srcs) == 1 else ""))
                    if len(srcs) > 1:
                        if max(k for _, k in ms) - min(k for _, k in ms) > 20:   # int64: 9 + 31 + 20 bits
                            return "an Add's input scales differ by more than 2^20"
                        note = ("integer requantisation of a sum: (a * Ma0 << (n - na) + b * Mb0 << (n - nb)) >> n, "
                                + ", ".join(f"M0 = {m}, shift = {k}" for m, k in ms))
                new_nodes.append(helper.make_node("Requant", srcs, [n.output[0]], name=n.name or n.output[0],
                                                  **attrs))
                zp = int(np.ravel(sp.zero_point)[0])
                fmt = int_format(sp.q.qmin - zp, sp.q.qmax - zp)
                if attrs["dequantize"]:
                    fmt = dequantized_format(s_out[0], sp.q.qmin - zp, sp.q.qmax - zp)
                    note += f"; dequantized: float32 (q - z) * scale, every value held exactly by {fmt}"
                found[n.output[0]] = ("requant", replace(sp.q, tensor=n.output[0],
                                      kind="input" if src in graph_inputs else "activation",
                                      format=fmt, exact=False, note=note))
                if n.output[0] not in outputs:
                    scale_of[n.output[0]] = (s_out.astype(np.float64), None)
            elif n.op_type == "Constant":
                new_nodes.append(n)
            continue
        if any(t in scale_of and scale_of[t][1] == "sum" for t in n.input):
            return f"the Add '{n.output[0]}' is read by {n.op_type}, not by its quantizer"
        if n.op_type in _GRID_OPS:
            if n.input[0] not in scale_of:   # (monotone, 0 -> 0: they commute with the Requant)
                return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
            scale_of[n.output[0]] = scale_of[n.input[0]]
        elif n.op_type == "GlobalAveragePool":
            # the integer sum over H, W (ReduceSum), requantised with M = s_x / (H W s_y), as onnxruntime's
            # QLinearGlobalAveragePool sums in int32
            x = n.input[0]
            if x not in scale_of or scale_of[x][1] is not None or scale_of[x][0].size != 1:
                return f"node '{n.name or n.output[0]}' (GlobalAveragePool) reads a tensor that is not quantized"
            dims = shape_of(x)
            if not dims or len(dims) < 3 or not all(dims[2:]):
                return f"node '{n.name or n.output[0]}' (GlobalAveragePool): the input's shape is not known"
            axes = f"{n.output[0]}__axes"
            extra_inits.append(numpy_helper.from_array(np.arange(2, len(dims), dtype=np.int64), axes))
            new_nodes.append(helper.make_node("ReduceSum", [x, axes], list(n.output), name=n.name, keepdims=1))
            scale_of[n.output[0]] = (scale_of[x][0] / float(np.prod(dims[2:])), "acc", 1)
            continue
        elif n.op_type == "AveragePool":
            done = _sum_pool(n, scale_of, shape_of(n.input[0]))
            if isinstance(done, str):
                return done
            new_nodes.append(done)
            continue
        elif n.op_type == "Add" and len(n.input) == 2:
            # requantised with its quantizer: q = round(a * s_a / s_y + b * s_b / s_y) + z (one Requant)
            if not all(t in scale_of and scale_of[t][1] is None and scale_of[t][0].size == 1 for t in n.input):
                return (f"node '{n.name or n.output[0]}' (Add) reads a tensor that is not a per-tensor "
                        "quantized activation")
            scale_of[n.output[0]] = (np.concatenate([scale_of[t][0] for t in n.input]), "sum", list(n.input))
            continue
        elif n.op_type in _DOT_OPS:
            a, w = n.input[0], n.input[1]
            if a not in scale_of or scale_of[a][1] is not None or w not in weight_int:
                return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
            attrs = {x.name: helper.get_attribute_value(x) for x in n.attribute}
            if n.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                                        or attrs.get("beta", 1.0) != 1.0):
                return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
            s_a = scale_of[a][0].astype(np.float32)
            s_w = np.ravel(by_out[w].scale).astype(np.float32)
            if s_w.size > 1:   # per output channel
                want = {"Conv": 0, "MatMul": 1, "Gemm": 0 if attrs.get("transB", 0) else 1}[n.op_type]
                if by_out[w].axis % weight_int[w].ndim != want:
                    return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
            acc_scale = (s_a * s_w).astype(np.float32)   # onnxruntime's bias scale
            if len(n.input) > 2 and n.input[2]:
                b = n.input[2]
                if b not in weight_int or not np.allclose(np.ravel(by_out[b].scale), acc_scale, rtol=1e-6, atol=0):
                    return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
            scale_of[n.output[0]] = (s_a.astype(np.float64) * s_w.astype(np.float64), "acc",
                                     1 if n.op_type == "Conv" else -1)
        else:
            return (f"node '{n.name or n.output[0]}' ({n.op_type}) is none of Conv/MatMul/Gemm, Add, AveragePool, "
                    f"GlobalAveragePool and the ops that keep a grid ({'/'.join(_GRID_OPS)})")
        new_nodes.append(n)
    if not all(o in found and found[o][0] == "requant" for o in outputs):
        return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
    # readers of a tensor in the integer domain must all read it so (no float reader left)
    for n in new_nodes:
        for t in n.input:
            if t in by_out and t not in weight_int and t not in found:
                return "its quantizers are not laid out as onnxruntime's quantize_static writes them"
    del g.node[:]
    g.node.extend(new_nodes)
    keep = {t.name: t for t in g.initializer}
    for out, v in weight_int.items():
        keep[out] = numpy_helper.from_array(v.astype(np.float32), out)
    del g.initializer[:]
    g.initializer.extend(list(keep.values()) + extra_inits)
    return model, found


# ---- conveyor's integer-domain ops as ONNX ops (frontends/export.py: the CPU/GPU backends, profile) ----

def to_onnx_nodes(node, graph) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Requant and SumPool (conveyor/ops/quant.py) as standard ONNX ops computing their float
    kernels (`run`) bit for bit in float32: Requant as Mul (by in_scale; an Add of two scaled
    inputs), Div by the output scale, Round (half to even), Add zero point, Clip, Sub zero point
    (and Mul by the scale on a dequantizing output); SumPool as a depthwise Conv with all-ones
    weights (float32 sums of integers below 2^24 are exact)."""
    name, out = node.name, node.outputs[0]
    inits: list[onnx.TensorProto] = []

    def const(tag, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), f"{name}__{tag}"))
        return inits[-1].name

    def step(op, ins, tag, **attrs):
        y = f"{out}__{tag}"
        nodes.append(helper.make_node(op, ins, [y], name=f"{name}__{tag}", **attrs))
        return y

    nodes: list[onnx.NodeProto] = []
    if node.op_type == "SumPool":
        c = int(graph.tensors[node.inputs[0]].shape[1])
        k = [int(v) for v in node.attr("kernel_shape")]
        w = const("ones", np.ones([c, 1, *k]))
        x, pads = node.inputs[0], list(node.attr("pads", [0] * 2 * len(k)))
        if node.attr("ceil_mode", 0):   # Conv has no ceil_mode: the end padding that ceil_mode's last windows read
            from conveyor.ops.quant import _sum_geometry

            geo = _sum_geometry(node, graph.tensors[x].shape)
            spatial = graph.tensors[x].shape[2:]
            ends = [max(e, (o - 1) * s + kk - b - i) for e, o, s, kk, b, i in
                    zip(geo.end, geo.out, geo.strides, k, geo.begin, spatial)]
            pads = list(geo.begin) + ends
        nodes.append(helper.make_node("Conv", [x, w], [out], name=name, group=c, kernel_shape=k,
                                      strides=list(node.attr("strides", [1] * len(k))), pads=pads))
        return nodes, inits
    ndim = len(graph.tensors[out].shape)

    def shaped(v):
        v = np.asarray(v, np.float32)
        if v.size == 1:
            return v.reshape(())
        if node.attr("spatial", 0):
            return v.reshape((1, 1) + tuple(graph.tensors[out].shape[2:]))
        shape = [1] * ndim
        shape[int(node.attr("axis", 1)) % ndim] = v.size
        return v.reshape(shape)

    in_scale = list(node.attr("in_scale", []))
    x = node.inputs[0]
    if len(node.inputs) > 1:
        terms = [step("Mul", [a, const(f"s{i}", s)], f"term{i}") for i, (a, s) in enumerate(zip(node.inputs, in_scale))]
        x = terms[0]
        for i, t in enumerate(terms[1:]):
            x = step("Add", [x, t], f"sum{i}")
    elif in_scale:
        # the scale first: onnxruntime's ConvMulFusion folds Mul(conv, scale) into the Conv's weights,
        # whose products then are no longer exact integers (measured: 43 of 1000 outputs one step off)
        x = step("Mul", [const("in_scale", shaped(in_scale)), x], "dq")
    zp = const("zp", shaped(node.attr("zero_point")))
    q = step("Round", [step("Div", [x, const("scale", shaped(node.attr("scale")))], "div")], "round")
    q = step("Clip", [step("Add", [q, zp], "zp_in"), const("qmin", node.attr("qmin")), const("qmax", node.attr("qmax"))],
             "clip")
    if node.attr("dequantize", 0):
        q = step("Sub", [q, zp], "zp_out")
        nodes.append(helper.make_node("Mul", [q, f"{name}__scale"], [out], name=name))
    else:
        nodes.append(helper.make_node("Sub", [q, zp], [out], name=name))
    return nodes, inits


#: the ops `to_onnx_nodes` writes
ONNX_LOWERED = ("Requant", "SumPool")
