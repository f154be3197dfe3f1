"""Multi-layer perceptrons."""

from __future__ import annotations

import onnx

from conveyor.zoo.builders import Builder


def jet_mlp(seed: int = 4) -> onnx.ModelProto:
    """hls4ml's jet-tagging MLP 16-64-32-32-5: ReLU after hidden layers, Softmax at the end.

    Each dense layer is a MatMul + Add pair, as a Keras model exported by tf2onnx comes
    out (layer names follow the hls4ml tutorial: fc1..fc3, relu1..relu3, output, softmax).
    """
    b = Builder("jet-mlp", seed)
    x = b.input("input", (1, 16))
    sizes = [16, 64, 32, 32]
    for i in range(1, 4):
        x = b.relu(b.dense(x, f"fc{i}", sizes[i - 1], sizes[i]), f"relu{i}")
    x = b.dense(x, "fc_out", 32, 5, gain=1.0)
    b.op("Softmax", [x], "softmax", out="output", axis=-1)
    return b.model({"output": (1, 5)}, doc="hls4ml jet-tagging MLP 16-64-32-32-5, seeded weights")
