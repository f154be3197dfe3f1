"""Real models through the real exporters, checked against onnxruntime (and Keras' predict):
torchvision architectures with random weights at small inputs, through torch's dynamo exporter
(conveyor.from_torch's default) and the TorchScript one; a transformer encoder layer; a
Keras 3 CNN and MLP read from .keras / .h5 files."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import onnx
import pytest
import torch

import conveyor
from conveyor.frontends.export import to_onnx
from conveyor.frontends.torchvision_compat import import_torchvision
from tests.helpers import assert_float32_close, ort_run


def _check_against_ort(graph, x, want):
    """conveyor's float reference against another float32 evaluation (torch, onnxruntime): within
    the float32 accumulation bound (tests/helpers.float32_tolerance)."""
    got = graph.run(x)[graph.output_names[0]]
    assert_float32_close(got, want, graph)


def _torch_ref(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("arch,exporter", [
    ("resnet18", "dynamo"),            # global pooling written as ReduceMean
    ("mobilenet_v3_small", "dynamo"),  # HardSwish, HardSigmoid
    ("shufflenet_v2_x0_5", "torchscript"),  # channel shuffle
    ("squeezenet1_1", "torchscript"),
])
def test_torchvision_models_match_onnxruntime(arch, exporter):
    tv = import_torchvision()
    torch.manual_seed(0)
    model = getattr(tv.models, arch)(weights=None, num_classes=10).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a dynamo fallback would warn: fail instead
        g = conveyor.from_torch(model, torch.from_numpy(x), exporter=exporter)
    # onnxruntime runs what conveyor read back (written out by conveyor), and the model itself
    want = _torch_ref(model, x)
    _check_against_ort(g, x, want)
    ort = ort_run(to_onnx(g), {g.input_names[0]: x})[g.output_names[0]]
    np.testing.assert_allclose(ort, want, rtol=1e-3, atol=1e-4)


def test_transformer_encoder_layer_dynamo():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True,
                                             activation="gelu").eval()
    x = np.random.default_rng(1).standard_normal((1, 6, 16)).astype(np.float32)
    g = conveyor.from_torch(layer, torch.from_numpy(x))
    ops = {n.op_type for n in g.nodes}
    assert {"LayerNormalization"} & ops or {"ReduceMean", "Sqrt"} <= ops, ops
    _check_against_ort(g, x, _torch_ref(layer, x))


def test_dynamo_failure_falls_back_with_reason():
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x[x > 0].sum().reshape(1) if bool(x.sum() > 0) else x.sum().reshape(1)

    x = torch.ones(1, 3)
    with pytest.warns(UserWarning, match="dynamo exporter failed.*falling back"):
        try:
            conveyor.from_torch(DataDependent(), x)
        except conveyor.ModelError:
            pass  # what TorchScript then writes may not load; the warning is what is checked


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    assert keras.backend.backend() == "torch"
    return keras


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_cnn_and_mlp_match_predict(keras, tmp_path, suffix):
    keras.utils.set_random_seed(0)
    cnn = keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(6, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5, activation="softmax"),
    ])
    mlp = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="tanh"),
                            keras.layers.Dropout(0.5), keras.layers.Dense(3)])
    rng = np.random.default_rng(2)
    for name, model, shape in (("cnn", cnn, (1, 12, 12, 3)), ("mlp", mlp, (1, 10))):
        path = tmp_path / f"{name}{suffix}"
        model.save(path)
        x = rng.standard_normal(shape).astype(np.float32)
        g = conveyor.load(path)
        got = g.run(x)[g.output_names[0]]
        assert_float32_close(got, model.predict(x, verbose=0), g)
        assert not [n for n in g.nodes if n.op_type == "Cast"], "same-dtype casts should be dropped"
