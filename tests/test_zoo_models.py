"""The model zoo, checked at the ONNX level (onnx checker + onnxruntime), and, once the
ONNX frontend exists, against conveyor's own Graph.run."""

from __future__ import annotations

import functools
import json

import numpy as np
import onnx
import pytest

import conveyor.zoo as zoo
from conveyor.errors import ModelError
from tests.helpers import assert_float32_close, float32_tolerance

import onnxruntime as ort  # noqa: E402  (the float reference; a test dependency)

NAMES = ["alexnet-conv", "vgg16-conv", "resnet18", "jet-mlp", "lstm-small", "digits-cnn"]

OUTPUT_SHAPES = {
    "alexnet-conv": (1, 256, 6, 6),
    "vgg16-conv": (1, 512, 7, 7),
    "resnet18": (1, 1000),
    "jet-mlp": (1, 5),
    "lstm-small": (1, 10),
    "digits-cnn": (1, 10),
}

# number of values in the initializers (resnet18 counts BN running mean/var too)
PARAMS = {
    "alexnet-conv": 2_334_080,
    "vgg16-conv": 14_714_688,
    "resnet18": 11_699_112,
    "jet-mlp": 4_389,
    "lstm-small": 25_738,
    "digits-cnn": 1_898,
}


@functools.lru_cache(maxsize=None)
def _model(name: str) -> onnx.ModelProto:
    return zoo.build_onnx(name)


def _session(model: onnx.ModelProto):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _with_all_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` that also outputs every intermediate tensor."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    have = {o.name for o in inferred.graph.output}
    inferred.graph.output.extend(vi for vi in inferred.graph.value_info if vi.name not in have)
    return inferred


def test_names():
    assert zoo.names() == NAMES


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelError) as exc:
        zoo.build_onnx("alexnet")
    for name in NAMES:
        assert name in str(exc.value)
    with pytest.raises(ModelError):
        zoo.describe("nope")


@pytest.mark.parametrize("name", NAMES)
def test_describe_is_one_line(name):
    text = zoo.describe(name)
    assert text.startswith(name) and "\n" not in text


@pytest.mark.parametrize("name", NAMES)
def test_valid_onnx(name):
    model = _model(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    for init in model.graph.initializer:
        assert init.data_type == onnx.TensorProto.FLOAT, init.name
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), vi.name
    assert all(node.name for node in model.graph.node)
    assert sum(int(np.prod(t.dims)) for t in model.graph.initializer) == PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_runs_with_sane_activations(name):
    model = _with_all_outputs(_model(name))
    sess = _session(model)
    outs = sess.run(None, _feeds(_model(name)))
    names = [o.name for o in sess.get_outputs()]
    assert names[0] == "output"
    assert outs[0].shape == OUTPUT_SHAPES[name]
    assert len(names) >= len(_model(name).graph.node)  # every intermediate is checked
    for tensor, value in zip(names, outs):
        assert np.isfinite(value).all(), tensor
        # seeded weights are scaled to keep activations O(1..10): far from overflow
        assert np.abs(value).max() < 100.0, (tensor, float(np.abs(value).max()))
    assert np.abs(outs[0]).max() > 1e-3  # not collapsed to zero


def test_alexnet_conv1_macs():
    model = _model("alexnet-conv")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in inferred.graph.value_info}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    conv1 = next(n for n in model.graph.node if n.name == "conv1")
    assert conv1.op_type == "Conv"
    cout, cin_per_group, kh, kw = weights[conv1.input[1]]
    n, c, oh, ow = shapes[conv1.output[0]]
    assert (cout, cin_per_group, kh, kw) == (96, 3, 11, 11)
    assert (n, c, oh, ow) == (1, 96, 55, 55)
    assert n * c * oh * ow * cin_per_group * kh * kw == 105_415_200
    order = [node.name for node in model.graph.node]
    assert order == ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2",
                     "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5"]
    groups = {node.name: next((a.i for a in node.attribute if a.name == "group"), 1)
              for node in model.graph.node if node.op_type == "Conv"}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}


def test_resnet18_structure():
    ops = [n.op_type for n in _model("resnet18").graph.node]
    assert ops.count("Conv") == 20 and ops.count("BatchNormalization") == 20
    assert ops.count("Add") == 8 and ops[-3:] == ["GlobalAveragePool", "Flatten", "Gemm"]
    downs = [n for n in _model("resnet18").graph.node if n.name.endswith("downsample.conv")]
    assert len(downs) == 3
    for node in downs:
        attrs = {a.name: list(a.ints) for a in node.attribute}
        assert attrs["kernel_shape"] == [1, 1] and attrs["strides"] == [2, 2]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in _model("resnet18").graph.initializer}
    for p in ("scale", "bias", "mean", "var"):  # a BN-folding pass has real work to do
        v = inits[f"layer1.0.bn1.{p}"]
        assert np.ptp(v) > 0 and not np.allclose(v, {"scale": 1, "var": 1}.get(p, 0))


def test_jet_mlp_is_matmul_add_pairs():
    model = _model("jet-mlp")
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["MatMul", "Add", "Relu"] * 3 + ["MatMul", "Add", "Softmax"]
    kernels = [t.dims for t in model.graph.initializer if t.name.endswith(".kernel")]
    assert kernels == [[16, 64], [64, 32], [32, 32], [32, 5]]
    out = _session(model).run(None, _feeds(model))[0]
    assert np.isclose(out.sum(), 1.0, atol=1e-5)


def test_lstm_small_has_bias():
    model = _model("lstm-small")
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    assert len(lstm.input) >= 4 and lstm.input[3] == "lstm.B"
    assert [i.type.tensor_type.shape.dim[k].dim_value for i in model.graph.input for k in range(3)] == [16, 1, 32]


def test_digits_dataset_split():
    x_test, y_test = zoo.digits_dataset("test")
    x_train, y_train = zoo.digits_dataset("train")
    assert x_test.shape == (360, 1, 8, 8) and x_train.shape == (1437, 1, 8, 8)
    assert x_test.dtype == np.float32 and y_test.dtype == np.int64
    assert 0.0 <= x_test.min() and x_test.max() <= 1.0
    assert np.bincount(y_test).min() >= 35  # stratified: every class ~36 times
    x2, y2 = zoo.digits_dataset("test")
    assert np.array_equal(x_test, x2) and np.array_equal(y_test, y2)
    with pytest.raises(ModelError):
        zoo.digits_dataset("valid")


def test_digits_cnn_accuracy_matches_record():
    record = zoo.digits_record()
    x, y = zoo.digits_dataset("test")
    sess = _session(_model("digits-cnn"))
    pred = np.array([sess.run(None, {"input": xi[None]})[0].argmax() for xi in x])
    acc = float((pred == y).mean())
    assert acc >= 0.97
    assert acc == pytest.approx(record["test_accuracy"], abs=1e-9)
    assert record["split"]["test_size"] == 0.2 and record["split"]["random_state"] == 0
    assert zoo.digits.ONNX_PATH.stat().st_size < 50_000


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic(name):
    assert zoo.build_onnx(name).SerializeToString() == _model(name).SerializeToString()


@pytest.mark.parametrize("name", NAMES)
def test_graph_run_matches_onnxruntime(name):
    model = _model(name)
    feeds = _feeds(model, seed=1)
    expected = _session(model).run(None, feeds)
    graph = zoo.build(name)
    got = graph.run(feeds)
    assert set(got) == {o.name for o in model.graph.output}
    for out, ref in zip(model.graph.output, expected):
        # both sum in float32, in different orders: the float32 accumulation bound (tests/helpers.py)
        assert_float32_close(got[out.name], ref, graph, err_msg=f"{name}:{out.name}")
