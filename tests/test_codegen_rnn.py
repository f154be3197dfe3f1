"""conveyor compile + csim for LSTM and GRU (conveyor/codegen/recurrent.py): each board's
g++-built C simulation equals `graph.run(x, precision=plan.precision)` bit for bit on every
output value — lstm-small on 1 board at ap_fixed<16,6> and on 2 boards at a narrow RND/SAT
config with a lossy accumulator, a torch GRU classifier (conveyor.from_torch), and one ONNX
chain of the variants the emulator covers (initial states, separate state / cell formats,
bidirectional GRU with the reset gate before the product, a reverse LSTM with Relu
activations, layout 1, a constant sequence_lens, Y_c, custom tables, an 'auto' accumulator).
What the generated code does not take is refused by node, op and the supported variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from conveyor.cli import _resolve_cluster, _resolve_model
from conveyor.codegen import compile as compile_plan
from conveyor.codegen.csim import compare, run_chain
from conveyor.errors import CodegenError
from conveyor.frontends.onnx import from_model
from conveyor.frontends.torch import from_torch
from conveyor.numerics import FixedType
from conveyor.planner import plan

Q16 = "ap_fixed<16,6>"
#: narrow formats, a lossy accumulator (fewer fractional bits than the products), RND / SAT
NARROW = {"default": "ap_fixed<10,4,AP_RND,AP_SAT>", "accum": "ap_fixed<14,6,AP_RND,AP_SAT>"}


def _check(tmp_path, graph, p, x):
    """compile + chained csim; every board's outputs, the model's among them, equal the emulator's
    (`compare` runs `graph.run(x, precision=plan.precision)` on the stacked sequences)."""
    manifest = compile_plan(p, graph, tmp_path)
    feeds = {graph.input_names[0]: x}
    env, runs = run_chain(tmp_path, feeds)
    assert [r.device for r in runs] == [st.device for st in p.stages]
    assert set(graph.output_names) <= set(runs[-1].outputs)
    bad = compare(graph, p.precision, feeds, runs)
    assert bad is None, str(bad)
    return manifest, env


def _sequences(graph, n, seed, scale=1.5):
    return np.random.default_rng(seed).standard_normal((n, *graph.inputs[0].shape)) * scale


def test_lstm_small_one_board_q16(tmp_path):
    graph = _resolve_model("lstm-small")
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    assert len(p.stages) == 1 and p.stages[0].device_kind == "fpga"
    manifest, _ = _check(tmp_path, graph, p, _sequences(graph, 300, 0))
    port = manifest["boards"][0]["ports"][0]["tensors"][0]
    assert port == {"tensor": "input", "element_type": Q16, "element_bits": 16, "items": 16 * 32}
    cfg = (tmp_path / "fpga0" / "firmware" / "parameters.h").read_text()
    assert "conveyor_rnn.h" in cfg and "using activation_recr = nnet::activation::sigmoid" in cfg
    assert "static const unsigned which = 1;" in cfg    # Y_h: the last state
    top = (tmp_path / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()
    assert "conveyor::lstm_sequence<" in top
    # the weights as raw integers of ap_fixed<16,6>, in hls4ml's [n_in][4H] layout, gates i f c o
    w = (tmp_path / "fpga0" / "firmware" / "weights")
    assert {f.name for f in w.iterdir()} >= {"w0.bin", "r0.bin", "b0.h"}
    raw = np.fromfile(w / "w0.bin", dtype="<i8").reshape(32, 4 * 64)
    onnx_w = graph.weights["lstm.W"][0]                   # [4H, n_in], ONNX gates i o f c
    q16 = FixedType.parse(Q16)
    np.testing.assert_array_equal(raw[:, 64:128], q16.quantize_raw(onnx_w[128:192].T))  # hls4ml f = ONNX gate 2
    np.testing.assert_array_equal(raw[:, 192:], q16.quantize_raw(onnx_w[64:128].T))    # hls4ml o = ONNX gate 1


def test_cli_compile_and_csim_take_whole_sequences(tmp_path):
    """`conveyor csim DIR --inputs X.npy` with X [N, 16, 1, 32]: one sequence per item (the
    build above, cached by content)."""
    from click.testing import CliRunner

    from conveyor.cli import cli

    graph = _resolve_model("lstm-small")
    plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16).save(tmp_path / "plan.json")
    np.save(tmp_path / "x.npy", _sequences(graph, 6, 5))
    r = CliRunner().invoke(cli, ["compile", str(tmp_path / "plan.json"), "--model", "lstm-small",
                                 "-o", str(tmp_path / "hls")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["csim", str(tmp_path / "hls"), "--inputs", str(tmp_path / "x.npy"),
                                 "-o", str(tmp_path / "out.npz")])
    assert r.exit_code == 0, r.output
    assert "fpga0: 6 items" in r.output and "equal to the emulator" in r.output
    with np.load(tmp_path / "out.npz") as f:
        assert f["output"].shape == (6, 10)
    np.save(tmp_path / "bad.npy", np.zeros((6, 16, 31)))
    r = CliRunner().invoke(cli, ["csim", str(tmp_path / "hls"), "--inputs", str(tmp_path / "bad.npy")])
    assert r.exit_code != 0 and "takes (16, 1, 32)" in str(r.exception)


def test_lstm_small_two_boards_narrow_lossy_accumulator(tmp_path):
    """The LSTM on one board, Flatten + Gemm on the next (the planner keeps it all on one board
    unless told: the cut is manual)."""
    graph = _resolve_model("lstm-small")
    p = plan(graph, _resolve_cluster("zynq7035:2"), precision=NARROW, method="manual", cuts=["lstm"])
    assert [st.layers for st in p.stages] == [("lstm",), ("flatten", "fc")]
    x = _sequences(graph, 200, 1)
    manifest, env = _check(tmp_path, graph, p, x)
    assert manifest["boards"][0]["ports"][1]["tensors"][0]["tensor"] == "lstm.Y_h"
    assert manifest["boards"][0]["ports"][1]["link"] == "srio-10g"
    # the lossy accumulator matters: an exact one gives other outputs
    exact = graph.run(x[:50], precision={**NARROW, "accum": "auto"})["output"].reshape(50, -1)
    assert np.any(exact != env["output"][:50])


class GruNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gru, self.fc = torch.nn.GRU(6, 12), torch.nn.Linear(12, 4)

    def forward(self, x):
        _, h = self.gru(x)                  # the last state [1, 1, 12]
        return self.fc(h.reshape(1, 12))


def test_torch_gru_one_board_mixed_formats(tmp_path):
    """A torch GRU (from_torch: ONNX GRU, linear_before_reset=1, zero initial_h constant, Y
    named but not read) with a saturating state format apart from the result."""
    torch.manual_seed(0)
    graph = from_torch(GruNet().eval(), torch.zeros(8, 1, 6))
    gru = next(n for n in graph.nodes if n.op_type == "GRU")
    assert gru.attr("linear_before_reset") == 1 and gru.outputs[0] and not graph.consumers(gru.outputs[0])
    prec = {"default": "ap_fixed<12,4,AP_RND,AP_SAT>", "accum": "ap_fixed<16,6,AP_RND_CONV,AP_SAT>",
            "weight": "ap_fixed<8,2,AP_RND>", "state": "ap_fixed<14,4,AP_RND,AP_SAT>"}
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=prec)
    _check(tmp_path, graph, p, _sequences(graph, 200, 2, scale=2.0))


# ---- an ONNX chain of the variants ---------------------------------------------------------
SEQ, N_IN, H = 6, 5, 4


def _rnn_node(rng, op, name, x, n_in, outs, ndir=1, inits=(), **attrs):
    g = {"LSTM": 4, "GRU": 3}[op]
    w = {f"{name}.W": rng.uniform(-1, 1, (ndir, g * H, n_in)), f"{name}.R": rng.uniform(-1, 1, (ndir, g * H, H)),
         f"{name}.B": rng.uniform(-0.5, 0.5, (ndir, 2 * g * H))}
    ins = [x, *w] + list(inits)
    return helper.make_node(op, ins, outs, name=name, hidden_size=H, **attrs), w


def _variant_chain():
    """X [6, 1, 5] -> LSTM a (initial h and c, Y) -> Reshape -> GRU b (bidirectional,
    linear_before_reset=0, Y) -> Reshape [1, 6, 8] -> LSTM c (layout 1, reverse, Relu g/h,
    sequence_lens 4, Y_c) and GRU d (layout 1, linear_before_reset=1, Y_h) -> Concat -> Gemm."""
    rng = np.random.default_rng(3)
    inits = {"a.h0": rng.uniform(-1, 1, (1, 1, H)), "a.c0": rng.uniform(-2, 2, (1, 1, H)),
             "c.lens": np.array([4], np.int32), "shape_b": np.array([SEQ, 1, H], np.int64),
             "shape_c": np.array([1, SEQ, 2 * H], np.int64), "shape_f": np.array([1, H], np.int64),
             "fc.W": rng.uniform(-1, 1, (2 * H, 3)), "fc.b": rng.uniform(-1, 1, 3)}
    a, wa = _rnn_node(rng, "LSTM", "a", "x", N_IN, ["a.Y"], inits=("", "a.h0", "a.c0"))
    b, wb = _rnn_node(rng, "GRU", "b", "a.y3", H, ["b.Y"], ndir=2, direction="bidirectional", linear_before_reset=0)
    c, wc = _rnn_node(rng, "LSTM", "c", "b.y3", 2 * H, ["", "", "c.Y_c"], inits=("c.lens",), layout=1,
                      direction="reverse", activations=["Sigmoid", "Relu", "Relu"])
    d, wd = _rnn_node(rng, "GRU", "d", "b.y3", 2 * H, ["d.Y", "d.Y_h"], layout=1, linear_before_reset=1)
    nodes = [a, helper.make_node("Reshape", ["a.Y", "shape_b"], ["a.y3"], name="ra"), b,
             helper.make_node("Reshape", ["b.Y", "shape_c"], ["b.y3"], name="rb"), c, d,
             helper.make_node("Reshape", ["c.Y_c", "shape_f"], ["c.f"], name="rc"),
             helper.make_node("Reshape", ["d.Y_h", "shape_f"], ["d.f"], name="rd"),
             helper.make_node("Concat", ["c.f", "d.f"], ["cd"], name="cat", axis=1),
             helper.make_node("Gemm", ["cd", "fc.W", "fc.b"], ["out"], name="fc")]
    weights = {**inits, **wa, **wb, **wc, **wd}
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [SEQ, 1, N_IN])
    gp = helper.make_graph(nodes, "rnn_variants", [x],
                           [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])],
                           [numpy_helper.from_array(v if v.dtype.kind in "i" else v.astype(np.float32), k)
                            for k, v in weights.items()])
    m = helper.make_model(gp, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return from_model(m)


#: RND/SAT and wrapping formats, a lossy accumulator, custom tables, per-node state / cell
#: formats apart from the result, and an exact ('auto') accumulator on GRU d
VARIANTS = {"default": "ap_fixed<12,4,AP_RND,AP_SAT>", "weight": "ap_fixed<8,2,AP_RND_CONV>",
            "bias": "ap_fixed<8,3>", "accum": "ap_fixed<16,6,AP_RND,AP_SAT>",
            "tables": {"sigmoid": {"size": 2048, "format": "ap_ufixed<12,1,AP_RND>"},
                       "tanh": {"size": 512, "format": "ap_fixed<14,2,AP_RND>"}},
            "nodes": {"a": {"state": "ap_fixed<14,4,AP_RND,AP_SAT>", "cell": "ap_fixed<16,6,AP_RND,AP_SAT>"},
                      "b": {"state": "ap_fixed<10,3,AP_RND_CONV>"},
                      "c": {"cell": "ap_fixed<10,3>", "result": "ap_fixed<12,4,AP_TRN,AP_SAT>"},
                      "d": {"accum": "auto"}}}


def test_variant_chain_two_boards(tmp_path):
    """Cut after the bidirectional GRU: its whole sequence (both directions, every step) crosses
    the link and is compared value by value; the second board starts with two recurrent nodes
    reading one value."""
    graph = _variant_chain()
    p = plan(graph, _resolve_cluster("zynq7035:2"), precision=VARIANTS, method="manual", cuts=["rb"])
    assert [st.device_kind for st in p.stages] == ["fpga", "fpga"]
    x = _sequences(graph, 120, 4, scale=2.0)   # a batch-1 graph (its Reshapes mix directions): item by item
    manifest, env = _check(tmp_path, graph, p, x)
    assert [t["tensor"] for t in manifest["boards"][0]["ports"][1]["tensors"]] == ["b.y3"]
    assert np.any(env["b.y3"].reshape(120, SEQ, 2, H)[:, :, 1] != 0) and np.ptp(env["b.y3"]) > 1.0
    cfg = (tmp_path / "fpga1" / "firmware" / "parameters.h").read_text()
    assert "static const bool reverse = true;" in cfg and "static const unsigned n_valid = 4;" in cfg
    assert "static const unsigned which = 2;" in cfg and "nnet::activation::relu" in cfg


# ---- refusals --------------------------------------------------------------------------------
def _single(op, attrs=None, x_shape=(SEQ, 1, N_IN), outs=None, inits=(), extra=None):
    rng = np.random.default_rng(0)
    node, w = _rnn_node(rng, op, "rnn", "x", x_shape[-1], outs or ["", "rnn.Y_h"], inits=inits, **(attrs or {}))
    tail = helper.make_node("Flatten", ["rnn.Y_h"], ["out"], name="flat", axis=1)
    weights = {**w, **(extra or {})}
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    if outs and outs[0]:
        outputs.append(helper.make_tensor_value_info(outs[0], TensorProto.FLOAT, None))
    gp = helper.make_graph([node, tail], "rnn1", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                           outputs, [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    m = helper.make_model(gp, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return from_model(m)


@pytest.mark.parametrize("make, precision, match", [
    (lambda: _single("LSTM", {"activations": ["Sigmoid", "Tanh", "Relu"]}), Q16,
     r"node 'rnn' \(LSTM\): activations \['Sigmoid', 'Tanh', 'Relu'\]: g and h differ; code generation takes "
     r"direction forward"),
    (lambda: _single("GRU"), {"default": Q16, "tables": {"tanh": {"min": -8, "max": 8}}},
     r"node 'rnn' \(GRU\): tables.tanh spans \[-8, 8\); nnet::tanh's table spans \[-4, 4\)"),
    (lambda: _single("LSTM", x_shape=(SEQ, 2, N_IN)), Q16,
     r"node 'rnn' \(LSTM\): input X \(6, 2, 5\) holds a batch of 2"),
    (lambda: _single("GRU", outs=["rnn.Y", "rnn.Y_h"]), Q16,
     r"node 'rnn' \(GRU\): its outputs \['rnn.Y', 'rnn.Y_h'\] are all read; code generation takes one output"),
    (lambda: _single("LSTM", inits=("", "", "", "rnn.P"), extra={"rnn.P": np.zeros((1, 3 * H))}), Q16,
     r"node 'rnn' \(LSTM\): peephole weights P"),
])
def test_what_the_firmware_does_not_compute_is_refused(tmp_path, make, precision, match):
    graph = make()
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=precision)
    graph.run(_sequences(graph, 2, 0), precision=precision)   # the emulator computes it
    with pytest.raises(CodegenError, match=match):
        compile_plan(p, graph, tmp_path)
