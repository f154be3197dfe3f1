"""Shape arithmetic the exporters write (x.view(x.size(0), -1), LSTM initial states, channel
shuffles) folds into constants at load: the graph left is the computation, and it matches
onnxruntime."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch

import conveyor
from tests.helpers import ort_run

SHAPE_OPS = {"Shape", "Size", "Gather", "Concat", "Unsqueeze", "Squeeze", "Cast", "Expand",
             "ConstantOfShape", "Equal", "Where", "Mod", "Range", "Slice"}


class ViewHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


class Shuffle(torch.nn.Module):
    """ShuffleNet's channel shuffle, written with sizes read from the tensor."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)

    def forward(self, x):
        b, c, h, w = x.size()
        y = self.conv(x).view(b, 2, c // 2, h, w).transpose(1, 2).contiguous()
        return y.view(b, -1, h, w)


class LSTMState(torch.nn.Module):
    """An LSTM whose zero initial state is built from the input's batch size."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 5, batch_first=True)

    def forward(self, x):
        h0 = torch.zeros(1, x.size(0), 5)
        c0 = torch.zeros(1, x.size(0), 5)
        return self.lstm(x, (h0, c0))[0]


def _export(module, x):
    buf = io.BytesIO()
    torch.onnx.export(module.eval(), (x,), buf, opset_version=17, input_names=["input"], dynamo=False,
                      dynamic_axes={"input": {0: "batch"}})  # a symbolic batch keeps the shape arithmetic
    return onnx.load_from_string(buf.getvalue())


@pytest.mark.parametrize("make,shape", [(ViewHead, (2, 3, 8, 8)), (Shuffle, (1, 4, 3, 3)), (LSTMState, (2, 4, 3))])
def test_shape_arithmetic_folds_and_matches_onnxruntime(make, shape):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    model = _export(make(), x)
    assert {n.op_type for n in model.graph.node} & SHAPE_OPS, "the export should carry shape arithmetic"
    want = ort_run(model, {"input": x.numpy()})
    for optimize in (True, False):
        g = conveyor.from_model(model, optimize=optimize, input_shapes={"input": shape})
        got = g.run(x.numpy())
        for name, ref in zip([o.name for o in model.graph.output], want.values() if isinstance(want, dict) else want):
            np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5)
        if optimize:
            # What is left computes on data: no node reads shapes or makes integers.
            left = [n for n in g.nodes if n.op_type in ("Shape", "Size")
                    or any(g.tensors[o].dtype.kind in "biu" for o in n.outputs if o)]
            assert not left, f"shape arithmetic left at run time: {left}"


def test_unsupported_ops_listed_by_type_with_fold_hint():
    from onnx import TensorProto, helper

    from conveyor.errors import ModelError
    from tests.helpers import make_model

    nodes = [helper.make_node("Relu", ["x"], [f"r{i}"]) for i in range(10)]
    nodes += [helper.make_node("Einsum", [f"r{i}", f"r{i}"], [f"e{i}"], name=f"ein{i}", equation="i,i->i") for i in range(10)]
    nodes += [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("NonZero", ["s"], ["nz"], name="nz0"),
              helper.make_node("Cast", ["nz"], ["nzf"], to=TensorProto.FLOAT),
              helper.make_node("Add", ["e9", "nzf"], ["y"])]
    model = make_model(nodes, [("x", [3])], [("y", [3])])
    with pytest.raises(ModelError) as e:
        conveyor.from_model(model, source="m.onnx")
    msg = str(e.value)
    assert "2 unsupported op types" in msg and "Einsum x10" in msg and "'ein0'" in msg and "NonZero x1" in msg
    assert "computes on data" in msg.split("NonZero")[0] and "would fold" in msg.split("NonZero")[1]


@pytest.mark.parametrize("optimize", [True, False])
def test_training_mode_dropout_declined_either_way(optimize):
    from onnx import TensorProto, helper

    from conveyor.errors import ModelError
    from tests.helpers import make_model

    model = make_model([helper.make_node("Dropout", ["x", "ratio", "train"], ["y"], name="drop")],
                       [("x", [3])], [("y", [3])], initializers={"train": np.array(True), "ratio": np.array(0.5, np.float32)})
    with pytest.raises(ModelError, match="training_mode"):
        conveyor.from_model(model, optimize=optimize)


def test_float_only_op_is_refused_under_a_precision_by_name():
    from onnx import helper

    from conveyor.errors import PrecisionError
    from tests.helpers import make_model

    model = make_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mod", ["r", "d"], ["y"], fmod=1)],
                       [("x", [4])], [("y", [4])], initializers={"d": np.array([4.0], np.float32)})
    g = conveyor.from_model(model)
    x = np.array([0.0, 1.0, 4.0, 9.0], np.float32)
    np.testing.assert_allclose(g.run(x)["y"], [0, 1, 0, 1])
    with pytest.raises(PrecisionError, match="Mod"):
        g.run(x, precision="ap_fixed<16,6>")


def test_reduce_mean_runs_bit_accurately_like_global_average_pool():
    from onnx import helper

    from tests.helpers import make_model

    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    rm = make_model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)],
                    [("x", [1, 3, 4, 4])], [("y", [1, 3, 1, 1])], opset=17)
    gap = make_model([helper.make_node("GlobalAveragePool", ["x"], ["y"])],
                     [("x", [1, 3, 4, 4])], [("y", [1, 3, 1, 1])], opset=17)
    a = conveyor.from_model(rm).run(x, precision="ap_fixed<10,3>")["y"]
    b = conveyor.from_model(gap).run(x, precision="ap_fixed<10,3>")["y"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, x.mean(axis=(2, 3), keepdims=True), atol=2 ** -5)  # input and result truncation, 2^-6 each
