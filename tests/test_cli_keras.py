"""The CLI on a Keras 3 file: `conveyor inspect m.keras` and `conveyor quantize m.keras`, with
an upsampling decoder (Conv2DTranspose, UpSampling2D) in the model; Keras on torch writes
Conv2DTranspose's crop arithmetic with Neg."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="enc"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu", name="dec"),
        keras.layers.UpSampling2D(2, name="up"),
        keras.layers.Conv2D(2, 1, name="head"),
    ])
    path = tmp_path_factory.mktemp("keras") / "m.keras"
    model.save(path)
    x = np.random.default_rng(0).standard_normal((6, 8, 8, 3)).astype(np.float32)
    data = path.with_suffix(".npz")
    np.savez(data, x=x)
    return path, data, model.predict(x, verbose=0)


def test_inspect_keras_file(capsys, keras_file):
    path, _, _ = keras_file
    code, out, _ = run_cli(capsys, "inspect", str(path), "--json")
    assert code == 0
    data = json.loads(out)
    ops = [layer["op_type"] for layer in data["layers"]]
    assert {"Conv", "ConvTranspose", "MaxPool"} <= set(ops)  # UpSampling2D: Resize, or Expand + Reshape on torch
    ct = next(layer for layer in data["layers"] if layer["op_type"] == "ConvTranspose")
    assert ct["macs"] == 4 * 4 * 4 * 4 * 9            # 4 channels x 4x4 inputs x (4 outputs x 3x3 taps)
    assert ct["params"] in (4 * 4 * 9, 4 * 4 * 9 + 4)  # the bias may follow as an Add
    assert data["outputs"][0]["shape"][-3:] in ([2, 16, 16], [16, 16, 2])
    code, out, _ = run_cli(capsys, "inspect", str(path))
    assert code == 0 and "ConvTranspose" in out and "total" in out


def test_quantize_keras_file(capsys, keras_file):
    path, data, _ = keras_file
    code, out, _ = run_cli(capsys, "quantize", str(path), "--precision", "ap_fixed<16,6,AP_RND_CONV>",
                           "--precision", "ap_fixed<6,2>", "--data", str(data), "--json")
    assert code == 0, out
    good, bad = json.loads(out)["reports"]
    assert good["samples"] == 6
    assert {layer["op_type"] for layer in good["layers"]} >= {"Conv", "ConvTranspose"}
    last = lambda r: r["layers"][-1]["rms_rel_error"]  # noqa: E731  (the output layer's error against float)
    assert last(good) < 0.01 < last(bad)
