"""graph.run on a batch the graph was not built for: N items of the input shape, or the
leading dimension replaced; float and bit-accurate; batch-N == N batch-1 runs bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import conveyor
from conveyor.frontends.onnx import from_model
from conveyor import zoo
from conveyor.graph.batch import batched_graph
from conveyor.graph.quantized import Emulator

PRECISIONS = ["ap_fixed<16,6>", {"default": "ap_fixed<10,4,AP_RND,AP_SAT>", "accum": "ap_fixed<10,4,AP_RND,AP_SAT>"}]


class _Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = torch.nn.Conv2d(4, 4, 3)
        self.fc = torch.nn.Linear(4 * 2 * 2, 5)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.relu(self.c2(x))
        return torch.softmax(self.fc(x.view(x.size(0), -1)), dim=-1)


class _BatchFirstLstm(torch.nn.Module):
    """Exported as Transpose -> LSTM (time-major) -> Transposes/Reshape -> Gather: the batch
    axis moves off axis 0 and back; the exporter's zero initial states are fixed to batch 1."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(input_size=3, hidden_size=4, batch_first=True)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


def _models():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3), torch.nn.Sigmoid())
    return {
        "mlp": conveyor.from_torch(mlp, torch.zeros(1, 6)),
        "cnn": conveyor.from_torch(_Cnn(), torch.zeros(1, 2, 8, 8)),
        "lstm": from_model(zoo.lstm_small()),  # [seq, batch, features]: axis 0 is time
        "lstm_batch_first": conveyor.from_torch(_BatchFirstLstm(), torch.zeros(1, 5, 3)),
    }


MODELS = _models()


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("precision", [None] + PRECISIONS, ids=["float", "ap16_6", "narrow_sat"])
def test_stacked_batch_equals_item_runs(name, precision):
    g = MODELS[name]
    x = np.random.default_rng(1).standard_normal((7,) + g.inputs[0].shape).astype(np.float32) * 2
    got = g.run(x, precision=precision)
    for k, v in got.items():
        assert v.shape == (7,) + g.tensors[k].shape
    for i in range(len(x)):
        one = g.run(x[i], precision=precision)
        for k in got:
            if precision is None:
                np.testing.assert_allclose(got[k][i], one[k], rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(got[k][i], one[k])  # bit for bit


def test_leading_dimension_replaced_and_vectorised():
    g = MODELS["cnn"]
    x = np.random.default_rng(2).standard_normal((5,) + g.inputs[0].shape[1:]).astype(np.float32)
    got = g.run(x, precision="ap_fixed<16,6>")["output" if "output" in g.output_names else g.output_names[0]]
    assert got.shape[0] == 5
    stacked = g.run(x[:, None], precision="ap_fixed<16,6>")[g.output_names[0]]
    np.testing.assert_array_equal(stacked[:, 0], got)
    assert batched_graph(g, 5) is not None  # one vectorised execution, not a loop


def test_time_major_lstm_is_not_batched_along_time():
    assert batched_graph(MODELS["lstm"], 3) is None
    assert batched_graph(MODELS["mlp"], 3) is not None


def test_emulator_keeps_input_formats_and_stats_on_batches():
    g = MODELS["mlp"]
    emu = Emulator(g, "ap_fixed<8,3>", input_formats={g.input_names[0]: None})
    x = np.round(np.random.default_rng(3).standard_normal((4,) + g.inputs[0].shape) * 64) / 64
    out, stats = emu.run(x, observe=True)
    ones = [emu.run(xi, observe=True) for xi in x]
    for k in out:
        np.testing.assert_array_equal(out[k], np.stack([o[0][k] for o in ones]))
    for node, st in stats.items():
        assert st.count == sum(o[1][node].count for o in ones)
        assert st.overflow == sum(o[1][node].overflow for o in ones)


def test_wrong_shape_names_what_is_accepted():
    g = MODELS["mlp"]
    with pytest.raises(conveyor.ModelError, match=r"expected shape \(1, 6\), got \(2, 7\).*N items"):
        g.run(np.zeros((2, 7), np.float32))


def test_batch_first_lstm_runs_as_one_batch():
    assert batched_graph(MODELS["lstm_batch_first"], 7) is not None
