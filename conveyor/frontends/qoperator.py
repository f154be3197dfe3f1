"""onnxruntime's QOperator format -> QDQ, which frontends/qdq.py reads.

`quantize_static(..., quant_format=QuantFormat.QOperator)` writes integer ops: QLinearConv,
QLinearMatMul (ONNX), QGemm, QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QLinearAveragePool
(com.microsoft contrib ops), with QuantizeLinear / DequantizeLinear at the float boundary and plain ops
(MaxPool, Flatten, ...) on the quantized tensors between them. Each QLinear op computes

    y_q = saturate(round(op(dequantize(inputs)) / y_scale) + y_zero_point)

(QLinearConv / QLinearMatMul / QGemm with an int32 accumulator and int32 bias at scale
x_scale * w_scale), so `to_qdq` writes it as DequantizeLinear on each input, the float op,
and QuantizeLinear on the output; an op on a quantized tensor that keeps its grid (MaxPool,
Flatten, Reshape, ...) gets the same scale and zero point on both sides; any other op reads
the dequantized tensor. The result is a QDQ model with the same quantizers, and the rest is
frontends/qdq.py's: formats for power-of-two scales, integer requantisation for float ones.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from conveyor.errors import ModelError

#: op -> (quantized input slots as (value, scale, zero point), float op, output (scale, zp) slots)
_QLINEAR = {
    "QLinearConv": ([(0, 1, 2), (3, 4, 5)], "Conv", (6, 7)),
    "QLinearMatMul": ([(0, 1, 2), (3, 4, 5)], "MatMul", (6, 7)),
    "QGemm": ([(0, 1, 2), (3, 4, 5)], "Gemm", (7, 8)),
    "QLinearAdd": ([(0, 1, 2), (3, 4, 5)], "Add", (6, 7)),
    "QLinearMul": ([(0, 1, 2), (3, 4, 5)], "Mul", (6, 7)),
    "QLinearGlobalAveragePool": ([(0, 1, 2)], "GlobalAveragePool", (3, 4)),
    "QLinearAveragePool": ([(0, 1, 2)], "AveragePool", (3, 4)),
}
#: ops that keep a quantized tensor's grid: the output has the input's scale and zero point
_GRID_OPS = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Relu")


def is_qoperator(model: onnx.ModelProto) -> bool:
    return any(n.op_type.startswith(("QLinear", "QGemm")) for n in model.graph.node)


def to_qdq(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """A copy of a QOperator model written as QDQ (see the module docstring)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    other = sorted({n.op_type for n in g.node if n.op_type.startswith(("QLinear", "QGemm", "QAttention", "QEmbed"))
                    and n.op_type not in _QLINEAR})
    if other:
        raise ModelError(f"{source}: QOperator ops {other} are not read; accepted: {sorted(_QLINEAR)} (or write the "
                         "model with quantize_static(quant_format=QuantFormat.QDQ))")
    qinfo: dict[str, tuple[str, str]] = {}   # quantized tensor -> (scale, zero point) names
    dq_cache: dict[tuple, str] = {}
    nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []

    def array(name):
        if name not in inits:
            raise ModelError(f"{source}: QOperator scale '{name}' is not an initializer")
        return numpy_helper.to_array(inits[name])

    def dq(t, s, z, axis=None):
        key = (t, s, z, axis)
        if key not in dq_cache:
            out = dq_cache[key] = f"{t}__dq"
            kw = {"axis": axis} if axis is not None else {}
            nodes.append(helper.make_node("DequantizeLinear", [t, s, z] if z else [t, s], [out], **kw))
        return dq_cache[key]

    def q(src, out, s, z):
        nodes.append(helper.make_node("QuantizeLinear", [src, s, z] if z else [src, s], [out]))
        qinfo[out] = (s, z)

    for n in g.node:
        name = n.name or n.output[0]
        if n.op_type == "QuantizeLinear":
            nodes.append(n)
            qinfo[n.output[0]] = (n.input[1], n.input[2] if len(n.input) > 2 else "")
            continue
        if n.op_type == "DequantizeLinear":
            nodes.append(n)
            continue
        if n.op_type in _QLINEAR:
            slots, op, (ys, yz) = _QLINEAR[n.op_type]
            if n.domain not in ("", "ai.onnx", "com.microsoft"):
                raise ModelError(f"{source}: {n.op_type} '{name}' in domain {n.domain!r}; accepted: com.microsoft")
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if attrs.pop("channels_last", 0):
                raise ModelError(f"{source}: {n.op_type} '{name}': channels_last=1 is not read; accepted: 0")
            ins = list(n.input) + [""] * 10
            float_ins = []
            for k, (v, s, z) in enumerate(slots):
                axis = None
                if k == 1 and op in ("Conv", "MatMul", "Gemm") and array(ins[s]).size > 1:   # per channel
                    axis = {"Conv": 0, "MatMul": 1, "Gemm": 0 if attrs.get("transB", 0) else 1}[op]
                float_ins.append(dq(ins[v], ins[s], ins[z], axis))
            bias = {"Conv": 8, "Gemm": 6}.get(op)
            if bias is not None and ins[bias]:
                s_b = (array(ins[1]).astype(np.float32) * array(ins[4]).astype(np.float32)).astype(np.float32)
                bs = f"{ins[bias]}__scale"
                new_inits.append(numpy_helper.from_array(s_b, bs))
                float_ins.append(dq(ins[bias], bs, "", 0 if s_b.size > 1 else None))
            out = n.output[0]
            quantized = bool(ins[ys])   # QGemm without y_scale writes float
            f_out = f"{out}__f" if quantized else out
            nodes.append(helper.make_node(op, float_ins, [f_out], name=name, **attrs))
            if quantized:
                q(f_out, out, ins[ys], ins[yz])
            continue
        qin = [t for t in n.input if t in qinfo]
        if not qin:
            nodes.append(n)
            continue
        for i, t in enumerate(n.input):
            if t in qinfo:
                n.input[i] = dq(t, *qinfo[t])
        if n.op_type in _GRID_OPS and len(qin) == 1:
            out = n.output[0]
            n.output[0] = f"{out}__f"
            nodes.append(n)
            q(n.output[0], out, *qinfo[qin[0]])
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    return model
