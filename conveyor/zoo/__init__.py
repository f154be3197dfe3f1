"""Model zoo: ONNX models built locally, with seeded weights; nothing is downloaded.

    names()             -> list of model names
    build_onnx(name)    -> onnx.ModelProto (opset 17, float32, static batch-1 shapes)
    build(name)         -> conveyor Graph (through the ONNX frontend)
    build(name, size=S) -> the CNNs (alexnet-conv, vgg16-conv, resnet18) on an SxS input:
                           the same layers and weights, smaller activations (tests, csim)
    describe(name)      -> one line about the model
    digits_dataset(split) -> (x [N,1,8,8] float32, y [N] int64) for the trained digits CNN
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import onnx

from conveyor.errors import ModelError
from conveyor.zoo.cnn import alexnet_conv, resnet18, vgg16_conv
from conveyor.zoo.digits import digits_cnn, digits_dataset, digits_record
from conveyor.zoo.mlp import jet_mlp
from conveyor.zoo.rnn import lstm_small

__all__ = ["names", "build_onnx", "build", "describe", "digits_dataset", "digits_record"]


class _Entry(NamedTuple):
    builder: Callable[[], onnx.ModelProto]
    description: str


_ZOO: dict[str, _Entry] = {
    "alexnet-conv": _Entry(alexnet_conv, "AlexNet's 5 conv layers (Caffe bvlc_alexnet: LRN, grouped conv), "
                           "1x3x227x227 -> 1x256x6x6, 2.33M params, 666M MACs, seeded weights"),
    "vgg16-conv": _Entry(vgg16_conv, "VGG16's 13 conv layers + 5 max-pools, 1x3x224x224 -> 1x512x7x7, "
                         "14.7M params, 15.3G MACs, seeded weights"),
    "resnet18": _Entry(resnet18, "ResNet-18 with BatchNorm and residual Adds, 1x3x224x224 -> 1x1000, "
                       "11.7M params, 1.81G MACs, seeded weights"),
    "jet-mlp": _Entry(jet_mlp, "hls4ml jet-tagging MLP 16-64-32-32-5 as MatMul+Add, Softmax, 1x16 -> 1x5, "
                      "4.4k params, seeded weights"),
    "lstm-small": _Entry(lstm_small, "LSTM (hidden 64) over [16,1,32] + Gemm to 10 classes, "
                         "25.7k params, seeded weights"),
    "digits-cnn": _Entry(digits_cnn, "small CNN trained on scikit-learn digits, 1x1x8x8 -> 1x10 logits, "
                         "1.9k params"),
}


def names() -> list[str]:
    """Names of the models in the zoo."""
    return list(_ZOO)


def _entry(name: str) -> _Entry:
    try:
        return _ZOO[name]
    except KeyError:
        raise ModelError(f"unknown zoo model {name!r}; known models: {', '.join(_ZOO)}") from None


#: zoo models whose builder takes `size` (a square input of another side, same ops and weights)
SIZED = ("alexnet-conv", "vgg16-conv", "resnet18")


def build_onnx(name: str, size: int | None = None) -> onnx.ModelProto:
    """The ONNX model `name` (deterministic: the same bytes on every call); `size`: the
    side of a square input for the CNNs in SIZED."""
    entry = _entry(name)
    if size is None:
        return entry.builder()
    if name not in SIZED:
        raise ModelError(f"zoo model {name!r} has a fixed input; size= is accepted by {', '.join(SIZED)}")
    try:
        return entry.builder(size=int(size))
    except ValueError as e:
        raise ModelError(str(e)) from None


def build(name: str, size: int | None = None):
    """The zoo model `name` imported as a conveyor Graph (`size`: see build_onnx)."""
    from conveyor.frontends.onnx import from_model

    return from_model(build_onnx(name, size))


def describe(name: str) -> str:
    """One line about the model `name`."""
    return f"{name}: {_entry(name).description}"
