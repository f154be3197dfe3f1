"""Overflow statistics beyond the accumulator: table look-ups whose input lies outside the
table (a sigmoid/tanh index hls4ml clamps, a softmax address cast that overflows) and a
recurrent layer's state casts, counted per layer and shown by `conveyor quantize`."""

from __future__ import annotations

import numpy as np
import torch

import conveyor
from conveyor.graph.quantized import emulator_for, quantization_report
from conveyor.numerics.fixed import FixedType

FMT = "ap_fixed<16,6>"


def _graph(module, shape):
    torch.manual_seed(3)
    return conveyor.from_torch(module, torch.zeros(shape))


def test_sigmoid_index_clamps_counted_as_hls4ml_clamps_them():
    g = _graph(torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Sigmoid()), (1, 4))
    x = FixedType.parse(FMT).quantize(np.random.default_rng(0).standard_normal((300, 4)) * 12)
    emu = emulator_for(g, FMT)
    dense, sig = g.nodes[0], g.nodes[1]
    pre = emu.run(x, fetch=[dense.outputs[0]])[0][dense.outputs[0]]
    # nnet::sigmoid, 1024 entries over [-8, 8): index = (int)(x * 1024 / 16) + 512, clamped to [0, 1023]
    raw = np.trunc(pre * 64)
    want = int(np.count_nonzero((raw + 512 > 1023) | (raw + 512 < 0)))
    assert 0 < want < pre.size
    _, stats = emu.run(x, observe=True)
    assert (stats[sig.name].table_lookups, stats[sig.name].table_clamped) == (pre.size, want)
    assert stats[dense.name].table_lookups == 0


def test_softmax_address_overflow_counted():
    torch.manual_seed(4)
    lin = torch.nn.Linear(3, 5)
    with torch.no_grad():
        lin.weight.mul_(10.0)  # logits over about +-30: max - x beyond the address format's 32
    g = _graph(torch.nn.Sequential(lin, torch.nn.Softmax(dim=-1)), (1, 3))
    x = FixedType.parse(FMT).quantize(np.random.default_rng(1).standard_normal((200, 3)) * 6)
    emu = emulator_for(g, "hls4ml:" + FMT)
    dense, sm = g.nodes[0], g.nodes[1]
    logits = emu.run(x, fetch=[dense.outputs[0]])[0][dense.outputs[0]]
    d = logits.max(axis=1, keepdims=True) - logits  # inp_norm_t = ap_ufixed<15,5>: at most 32 - 2^-10
    want = int(np.count_nonzero(d > FixedType.parse("ap_ufixed<15,5>").max_value))
    assert want > 0
    _, stats = emu.run(x, observe=True)
    # one exp look-up per value, one inverse look-up per row (its sum, <= 5, never overflows)
    assert (stats[sm.name].table_lookups, stats[sm.name].table_clamped) == (logits.size + len(x), want)


class _Lstm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(input_size=3, hidden_size=4, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0][:, -1]


def test_lstm_state_casts_counted_apart_from_the_result(tmp_path):
    g = _graph(_Lstm(), (1, 6, 3))
    x = np.random.default_rng(2).standard_normal((50, 1, 6, 3)).astype(np.float32) * 3
    lstm = next(n for n in g.nodes if n.op_type == "LSTM")
    wide = emulator_for(g, FMT).run(x, observe=True)[1][lstm.name]
    # per step and item: 4 cell and 4 hidden values cast; gates look up 3 sigmoid + 2 tanh tables
    assert wide.state_casts == 50 * 6 * 8 and wide.state_overflow == 0
    assert wide.table_lookups == 50 * 6 * 4 * 5
    narrow = emulator_for(g, {"default": FMT, "op_types": {"LSTM": {"cell": "ap_fixed<6,1>"}}}).run(
        x, observe=True)[1][lstm.name]
    assert narrow.state_casts == wide.state_casts and narrow.state_overflow > 0
    report = quantization_report(g, {"default": FMT, "op_types": {"LSTM": {"cell": "ap_fixed<6,1>"}}},
                                 x[:, 0])
    row = next(r for r in report.layers if r.node == lstm.name)
    assert row.state_overflow > 0 and row.table_lookups > 0


def test_quantize_shows_table_and_state_columns(tmp_path, capsys, monkeypatch):
    import pytest

    from conveyor.cli import main
    from conveyor.frontends.export import to_onnx

    monkeypatch.setenv("COLUMNS", "200")
    g = _graph(torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Sigmoid()), (1, 4))
    path = tmp_path / "m.onnx"
    path.write_bytes(to_onnx(g).SerializeToString())
    data = tmp_path / "x.npy"
    np.save(data, (np.random.default_rng(0).standard_normal((64, 4)) * 12).astype(np.float32))
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(path), "--precision", FMT, "--data", str(data)])
        raise SystemExit(0)
    out = capsys.readouterr().out
    assert (e.value.code or 0) == 0, out
    assert "table clamp" in out and "state ovf" not in out  # no recurrent layer: no state column
    assert "/384" in out  # the sigmoid's 64 x 6 look-ups, some clamped
