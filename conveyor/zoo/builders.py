"""A tiny ONNX graph writer with seeded weights, shared by the zoo builders.

`Builder` appends nodes and initializers in order (so the graph comes out
topologically sorted) and draws every weight from one `numpy.random.default_rng(seed)`,
so a builder called twice yields the same bytes.

Weights use He-style scaling (variance ``gain / fan_in``) so that, for an input of
unit variance, each layer's pre-activation stays near unit variance: the models are
meant to be quantized to fixed point, where exploding activations would be useless.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
PRODUCER = "conveyor.zoo"


class Builder:
    """Collects nodes, initializers and inputs of one ONNX graph."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._taken: set[str] = set()

    # -- plumbing ---------------------------------------------------------------
    def _claim(self, name: str) -> str:
        if name in self._taken:
            raise ValueError(f"zoo builder {self.name!r}: tensor name {name!r} used twice")
        self._taken.add(name)
        return name

    def input(self, name: str, shape: Sequence[int]) -> str:
        self.inputs.append(helper.make_tensor_value_info(self._claim(name), TensorProto.FLOAT, list(shape)))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        array = np.asarray(value)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        self.initializers.append(numpy_helper.from_array(array, self._claim(name)))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, *, out: str | Sequence[str] | None = None,
           **attrs) -> str | list[str]:
        """Append one node named `name`; its output tensor is `out` (default: `name`)."""
        outs = [name] if out is None else ([out] if isinstance(out, str) else list(out))
        for o in outs:
            if o:  # "" marks an omitted optional output
                self._claim(o)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0] if isinstance(out, str) or out is None else outs

    # -- seeded tensors -----------------------------------------------------------
    def he(self, shape: Sequence[int], fan_in: int, gain: float = 2.0) -> np.ndarray:
        """Normal weights with variance gain / fan_in (gain 2 for ReLU, 1 for linear)."""
        return self.rng.standard_normal(tuple(shape), dtype=np.float32) * np.float32(np.sqrt(gain / fan_in))

    def small(self, shape: Sequence[int], scale: float = 0.05) -> np.ndarray:
        """Small non-zero values (biases)."""
        return self.rng.standard_normal(tuple(shape), dtype=np.float32) * np.float32(scale)

    def uniform(self, shape: Sequence[int], low: float, high: float) -> np.ndarray:
        return self.rng.uniform(low, high, tuple(shape)).astype(np.float32)

    # -- layers -----------------------------------------------------------------
    def conv(self, x: str, name: str, cin: int, cout: int, k: int, *, stride: int = 1, pad: int = 0,
             group: int = 1, bias: bool = True, gain: float = 2.0, out: str | None = None) -> str:
        fan_in = cin // group * k * k
        ins = [x, self.const(f"{name}.weight", self.he((cout, cin // group, k, k), fan_in, gain))]
        if bias:
            ins.append(self.const(f"{name}.bias", self.small((cout,))))
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        if group != 1:
            attrs["group"] = group
        return self.op("Conv", ins, name, out=out, **attrs)

    def batchnorm(self, x: str, name: str, c: int, *, gamma: tuple[float, float] = (0.6, 1.2),
                  eps: float = 1e-5, out: str | None = None) -> str:
        """Inference BatchNormalization with non-trivial seeded scale, bias, mean and variance."""
        scale = self.uniform((c,), *gamma)
        shift = self.small((c,), 0.1)
        mean = self.small((c,), 0.1)
        var = self.uniform((c,), 0.6, 1.6)
        ins = [x] + [self.const(f"{name}.{p}", v) for p, v in
                     (("scale", scale), ("bias", shift), ("mean", mean), ("var", var))]
        return self.op("BatchNormalization", ins, name, out=out, epsilon=eps)

    def relu(self, x: str, name: str, out: str | None = None) -> str:
        return self.op("Relu", [x], name, out=out)

    def maxpool(self, x: str, name: str, k: int, stride: int, pad: int = 0, out: str | None = None) -> str:
        return self.op("MaxPool", [x], name, out=out, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4)

    def gemm(self, x: str, name: str, fin: int, fout: int, *, gain: float = 1.0, out: str | None = None) -> str:
        """Fully connected layer as PyTorch exports it: Gemm(x, W[out, in], b, transB=1)."""
        w = self.const(f"{name}.weight", self.he((fout, fin), fin, gain))
        b = self.const(f"{name}.bias", self.small((fout,)))
        return self.op("Gemm", [x, w, b], name, out=out, transB=1)

    def dense(self, x: str, name: str, fin: int, fout: int, *, gain: float = 2.0, out: str | None = None) -> str:
        """Fully connected layer as Keras/tf2onnx exports it: MatMul(x, W[in, out]) then Add(b)."""
        w = self.const(f"{name}.kernel", self.he((fin, fout), fin, gain))
        b = self.const(f"{name}.bias", self.small((fout,)))
        y = self.op("MatMul", [x, w], f"{name}.matmul")
        return self.op("Add", [y, b], f"{name}.add", out=out if out is not None else name)

    # -- result -----------------------------------------------------------------
    def model(self, outputs: dict[str, Sequence[int]], doc: str = "") -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs.items()]
        graph = helper.make_graph(self.nodes, self.name, self.inputs, outs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  ir_version=IR_VERSION, producer_name=PRODUCER, doc_string=doc)
        return model
