"""Recurrent zoo models."""

from __future__ import annotations

import numpy as np
import onnx

from conveyor.zoo.builders import Builder

SEQ, BATCH, FEATURES, HIDDEN, CLASSES = 16, 1, 32, 64, 10


def lstm_small(seed: int = 5) -> onnx.ModelProto:
    """A small LSTM classifier of the kind Brainwave serves.

    input [seq 16, batch 1, features 32] (ONNX LSTM layout 0) -> one forward LSTM, hidden 64,
    with bias B (only the final hidden state Y_h is used; the Y output is omitted) ->
    Flatten -> Gemm 64 -> 10. Weights are uniform(+-1/sqrt(hidden)) as PyTorch initializes
    them; gate order i, o, f, c as ONNX defines.
    """
    b = Builder("lstm-small", seed)
    x = b.input("input", (SEQ, BATCH, FEATURES))
    bound = 1.0 / np.sqrt(HIDDEN)
    w = b.const("lstm.W", b.uniform((1, 4 * HIDDEN, FEATURES), -bound, bound))
    r = b.const("lstm.R", b.uniform((1, 4 * HIDDEN, HIDDEN), -bound, bound))
    bias = b.const("lstm.B", b.uniform((1, 8 * HIDDEN), -bound, bound))
    _, h = b.op("LSTM", [x, w, r, bias], "lstm", out=["", "lstm.Y_h"], hidden_size=HIDDEN,
                direction="forward")
    h = b.op("Flatten", [h], "flatten", axis=1)                            # [1, 64]
    b.gemm(h, "fc", HIDDEN, CLASSES, gain=2.0, out="output")
    return b.model({"output": (BATCH, CLASSES)}, doc="small LSTM sequence classifier, seeded weights")
