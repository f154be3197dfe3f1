"""io_stream firmware (codegen/stream.py, include/conveyor_linebuf.h): layers connected by FIFOs
of pixels, line-buffer convolutions and pools, clone_stream for values read twice with the skip
FIFO sized for its delay. Each board's C simulation (g++) equals the emulator bit for bit; the
bounded-FIFO build (every FIFO at exactly its stated depth, one thread per process) finishes,
and one pixel less on a skip FIFO deadlocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import csim_equals_emulator, make_model
from onnx import helper
from test_codegen_csim import NARROW, Q16, _digits, _plan
from test_codegen_ops import _mobile_fire
from torch import nn

from conveyor import zoo
from conveyor.cli import _resolve_cluster, _resolve_model
from conveyor.codegen import compile as compile_plan
from conveyor.codegen.csim import BOUNDED_FIFOS, BoardRun, build_board, compare, run_board, run_chain
from conveyor.errors import CodegenError
from conveyor.frontends.onnx import from_model
from conveyor.frontends.torch import from_torch
from conveyor.planner import plan


def _check_stream(tmp_path, graph, p, x, io_type="io_stream"):
    manifest, _, runs = csim_equals_emulator(tmp_path, graph, p, x, io_type=io_type)
    assert manifest["io_type"] == "io_stream" and all(b["io_type"] == "io_stream" for b in manifest["boards"])
    return manifest, runs


def test_digits_cnn_one_board_q16(tmp_path):
    graph, p = _plan("digits-cnn", 1, Q16)
    manifest, _ = _check_stream(tmp_path, graph, p, _digits(200))
    top = (tmp_path / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()
    assert "conveyor::conv_2d_stream<" in top and "conveyor::maxpool_2d_stream<" in top and "nnet::conv_2d_cl" not in top
    assert "#pragma HLS STREAM variable=s_t_conv1 depth=2" in top
    assert {f["fifo"] for f in manifest["boards"][0]["fifos"]} >= {"s_t_conv1", "s_t_flatten"}


def test_digits_cnn_two_boards_narrow(tmp_path):
    # the cut carries pool1's 4-D value: channels first on the link, pixels inside each board
    graph, p = _plan("digits-cnn", 2, NARROW, cuts=["pool1"])
    manifest, _ = _check_stream(tmp_path, graph, p, _digits(200))
    assert manifest["boards"][1]["ports"][0]["tensors"][0]["items"] == 8 * 4 * 4
    assert manifest["boards"][0]["ports"][1]["stream"].startswith("hls::stream<ap_axiu<64,0,0,")


class _Residual(nn.Module):
    """a = relu(conv(x)); y = relu(conv(relu(conv(a))) + a): the Add reads the two-conv path
    first, then the skip."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = (nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1),
                                     nn.Conv2d(4, 4, 3, padding=1))
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        y = torch.relu(self.c3(torch.relu(self.c2(a))) + a)
        return self.fc(nn.functional.max_pool2d(y, 2).flatten(1))


def _bounded(board_dir, board, graph, precision, x):
    """The board built with every FIFO at exactly its stated depth, one thread per process:
    None when it finishes equal to the emulator, else the mismatch or the deadlock report."""
    exe, _, _ = build_board(board_dir, BOUNDED_FIFOS)
    feeds = {graph.input_names[0]: x}
    try:
        out = run_board(exe, board, {k: v.reshape(len(x), -1) for k, v in feeds.items()}, board_dir / "firmware" / "weights")
    except CodegenError as e:
        return str(e)
    bad = compare(graph, precision, feeds, [BoardRun(board["device"], len(x), 0.0, 0.0, False, out)])
    return None if bad is None else str(bad)


def test_residual_skip_fifo_sized_for_its_delay(tmp_path):
    torch.manual_seed(0)
    graph = from_torch(_Residual().eval(), torch.zeros(1, 1, 6, 6))
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    x = np.random.default_rng(0).normal(size=(100, 1, 6, 6))
    manifest, _ = _check_stream(tmp_path, graph, p, x)
    board = manifest["boards"][0]
    skips = [f for f in board["fifos"] if "skip" in f]
    # the skip waits for two 3x3 'same' convolutions on a 6-pixel-wide image: each line buffer
    # emits output (r, c) when input (r + 1, c + 1) arrives, W + 1 pixels later
    assert [(f["tensor"], f["depth"]) for f in skips] == [(graph.nodes[1].outputs[0], 2 * (6 + 1))]
    top = tmp_path / "fpga0" / "firmware" / "fpga0_top.cpp"
    f = skips[0]
    assert f"#pragma HLS STREAM variable={f['fifo']} depth=14" in top.read_text()
    assert _bounded(tmp_path / "fpga0", board, graph, p.precision, x[:8]) is None
    # one pixel less and the clone, the path and the Add wait on one another
    top.write_text(top.read_text().replace(f"CONVEYOR_DEPTH({f['fifo']}, 14)", f"CONVEYOR_DEPTH({f['fifo']}, 13)"))
    assert "deadlock: every process waits" in _bounded(tmp_path / "fpga0", board, graph, p.precision, x[:8])


def test_fire_concat_and_mobilenet_block_q16_bounded(tmp_path):
    # clone_stream for the residual Add (depthwise + pointwise) and the fire module's Concat;
    # unfolded BatchNorm, LeakyRelu, AveragePool, a 2-group Conv, Sigmoid, ReduceMean, Tanh
    graph = _mobile_fire()
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    x = np.random.default_rng(1).normal(size=(60, 1, 8, 8)) * 1.5
    manifest, _ = _check_stream(tmp_path, graph, p, x)
    squeeze = next(n for n in graph.nodes if n.op_type == "Relu").outputs[0]
    skips = {f["tensor"]: f["depth"] for f in manifest["boards"][0]["fifos"] if "skip" in f}
    assert skips == {squeeze: 8 + 1}   # the 1x1 expand waits for the 3x3 one: W + 1 pixels
    assert _bounded(tmp_path / "fpga0", manifest["boards"][0], graph, p.precision, x[:6]) is None


def test_weights_from_ddr_through_stream_array_adapters(tmp_path):
    # every Conv / Gemm weight streamed from DDR (a board with 12 BRAM18K): each such layer is
    # its io_parallel tile loop between a stream -> array and an array -> stream adapter
    from test_codegen_stream import _net, _tiny_board_cluster

    graph = _net()
    p = plan(graph, _tiny_board_cluster(), precision=NARROW)
    manifest, _ = _check_stream(tmp_path, graph, p, np.random.default_rng(3).normal(size=(60, 16, 4, 4)) * 2.0)
    assert set(manifest["boards"][0]["weight_memory"]["layers"]) == {n.name for n in graph.nodes
                                                                     if n.op_type in ("Conv", "Gemm")}
    assert "conveyor::pixels_to_hwc<" in (tmp_path / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()


def test_resnet18_two_boards_line_buffers_narrow(tmp_path):
    # two Alveo U250 keep every weight on chip: every Conv on a line buffer (7x7/2 pad 3, 3x3/2,
    # the 1x1/2 downsample), eight skip FIFOs sized by the rule
    graph = zoo.build("resnet18", size=32)
    p = plan(graph, _resolve_cluster("alveo-u250:2"), precision=NARROW)
    assert len(p.stages) == 2 and {w for st in p.stages for w in st.weights_in.values()} == {"on_chip"}
    manifest, runs = _check_stream(tmp_path, graph, p, np.random.default_rng(4).uniform(0, 1, size=(1, 3, 32, 32)))
    skips = {f["tensor"]: f["depth"] for f in manifest["boards"][0]["fifos"] if "skip" in f}
    assert skips["maxpool"] == 2 * (8 + 1)            # layer1.0: two 3x3 convs on 8x8
    assert skips["layer2.0.relu2"] == 2 * (4 + 1)     # layer2.1 on 4x4
    assert len(np.unique(runs[-1].outputs[graph.output_names[0]])) >= 32


def _geometry_net():
    """A stride-2 Conv with asymmetric pads, a 1x1 Conv, a depthwise 3x3 with dilation 2,
    MaxPool 3x3/2 with pads (also a graph output: read twice), AveragePool with pads counted
    and ceil_mode, GlobalAveragePool, Flatten, Gemm."""
    rng = np.random.default_rng(7)
    w = lambda *s: (rng.normal(size=s) * 0.6).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_s2", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 0, 2, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
        helper.make_node("Conv", ["ar", "wb", "bb"], ["b"], name="conv_1x1", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["b", "wc", "bc"], ["c"], name="conv_dw", kernel_shape=[3, 3], group=8,
                         pads=[2, 2, 2, 2], dilations=[2, 2]),
        helper.make_node("MaxPool", ["c"], ["mp"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["mp"], ["ap"], name="avgpool", kernel_shape=[2, 2], strides=[2, 1],
                         pads=[0, 0, 1, 1], count_include_pad=1, ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["ap"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], name="fc", transB=1),
    ]
    return from_model(make_model(nodes, [("x", [1, 3, 9, 9])], [("y", [1, 5]), ("mp", None)],
                                 {"wa": w(4, 3, 3, 3), "ba": w(4), "wb": w(8, 4, 1, 1), "bb": w(8),
                                  "wc": w(8, 1, 3, 3), "bc": w(8), "wd": w(5, 8), "bd": w(5)}))


@pytest.mark.parametrize("precision", [Q16, NARROW], ids=["q16", "narrow"])
def test_window_geometry_strides_pads_dilation_depthwise(tmp_path, precision):
    graph = _geometry_net()
    assert graph.tensors["a"].shape == (1, 4, 5, 4) and graph.tensors["ap"].shape == (1, 8, 2, 2)
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=precision)
    x = np.random.default_rng(5).normal(size=(150, 3, 9, 9)) * 2
    manifest, runs = _check_stream(tmp_path, graph, p, x)
    assert set(runs[0].outputs) == {"y", "mp"}
    assert "conv_2d_grouped_stream" in (tmp_path / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()


def test_mode_from_an_hls4ml_config_with_io_stream(tmp_path):
    from conveyor.frontends.hls4ml_config import read_hls4ml_config

    graph, _ = _plan("digits-cnn", 1, Q16)
    cfg = read_hls4ml_config({"IOType": "io_stream", "HLSConfig": {"Model": {"Precision": "ap_fixed<12,5>"}}}, graph)
    assert cfg.precision["order"] == "hls4ml_io_stream"
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=cfg.precision)
    manifest = compile_plan(p, graph, tmp_path)   # no io_type: the config's IOType decides
    assert manifest["io_type"] == "io_stream"
    feeds = {graph.input_names[0]: _digits(100)}
    _, runs = run_chain(tmp_path, feeds)
    assert compare(graph, p.precision, feeds, runs) is None
    # forced io_parallel on the same plan: arrays again (the same C, H, W order)
    assert compile_plan(p, graph, tmp_path / "par", io_type="io_parallel")["io_type"] == "io_parallel"
    assert "conv_2d_stream" not in (tmp_path / "par" / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()


def test_io_stream_refuses_the_hls4ml_io_parallel_order(tmp_path):
    graph, _ = _plan("digits-cnn", 1, Q16)
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision={"default": Q16, "order": "hls4ml_io_parallel"})
    # io_parallel takes it: the Dense after the Flatten reads the channels-last array, in the
    # H, W, C order the emulator sums it in (its weights permuted to that order)
    assert compile_plan(p, graph, tmp_path / "par")["io_type"] == "io_parallel"
    top = (tmp_path / "par" / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()
    assert "hwc_to_chw" not in top
    feeds = {graph.input_names[0]: _digits(100)}
    _, runs = run_chain(tmp_path / "par", feeds)
    assert compare(graph, p.precision, feeds, runs) is None
    with pytest.raises(CodegenError, match=r"io_stream with the precision's order hls4ml_io_parallel: that order sums "
                                           r"a Dense after a Flatten in H, W, C order"):
        compile_plan(p, graph, tmp_path, io_type="io_stream")
    with pytest.raises(CodegenError, match=r"io_type 'io_streams'; accepted: \['io_parallel', 'io_stream'\]"):
        compile_plan(p, graph, tmp_path, io_type="io_streams")


def _one_op(tmp_path, node, out_shape, extra=None):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node]
    inits = {"w": rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "b": np.zeros(4, np.float32), **(extra or {})}
    graph = from_model(make_model(nodes, [("x", [1, 2, 4, 4])], [("y", out_shape)], inits))
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    return lambda: compile_plan(p, graph, tmp_path, io_type="io_stream")


@pytest.mark.parametrize("node,shape,extra,match", [
    (helper.make_node("LRN", ["c"], ["y"], name="lrn", size=3), [1, 4, 4, 4], None,
     r"node 'lrn': op LRN on a 4-D value has no io_stream writer; supported: Conv, MaxPool"),
    (helper.make_node("Concat", ["c", "c"], ["y"], name="cat_h", axis=2), [1, 4, 8, 4], None,
     r"node 'cat_h' \(Concat\): over axis 2 of a 4-D value; io_stream concatenates over channels \(axis 1\) only"),
    (helper.make_node("Reshape", ["c", "s"], ["y"], name="reshape4"), [1, 16, 2, 2],
     {"s": np.array([1, 16, 2, 2], np.int64)},
     r"node 'reshape4' \(Reshape\): \[1, 4, 4, 4\] -> \[1, 16, 2, 2\]; io_stream rewires a 4-D value only by a Flatten"),
], ids=["lrn", "concat-h", "reshape-4d"])
def test_unsupported_in_stream_mode_refused_by_node(tmp_path, node, shape, extra, match):
    with pytest.raises(CodegenError, match=match):
        _one_op(tmp_path, node, shape, extra)()


def test_lstm_refused_in_stream_mode(tmp_path):
    graph = _resolve_model("lstm-small")
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    with pytest.raises(CodegenError, match=r"node '\w+' \(LSTM\): io_stream takes values \[1, C, H, W\] or \[1, N\]"):
        compile_plan(p, graph, tmp_path, io_type="io_stream")


def test_cli_compile_io_type_and_csim(tmp_path):
    from click.testing import CliRunner

    from conveyor.cli import cli

    _, p = _plan("digits-cnn", 1, Q16)   # the board of test_digits_cnn_one_board_q16: its build is cached
    p.save(tmp_path / "plan.json")
    np.save(tmp_path / "x.npy", _digits(30))
    hls = tmp_path / "hls"
    r = CliRunner().invoke(cli, ["compile", str(tmp_path / "plan.json"), "--model", "digits-cnn", "-o", str(hls),
                                 "--io-type", "io_stream"])
    assert r.exit_code == 0, r.output
    assert "io_stream ->" in r.output
    r = CliRunner().invoke(cli, ["csim", str(hls), "--inputs", str(tmp_path / "x.npy")])
    assert r.exit_code == 0 and "outputs equal to the emulator" in r.output, r.output
    r = CliRunner().invoke(cli, ["compile", str(tmp_path / "plan.json"), "--model", "digits-cnn", "-o", str(hls),
                                 "--io-type", "io_streaming"])
    assert r.exit_code != 0 and "io_streaming" in r.output


def test_a_value_added_to_itself_reads_both_of_its_fifos(tmp_path):
    # Add(c, c): the clone feeds the Add twice; the Add must drain both FIFOs or the clone stalls
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "c"], ["y"], name="double")]
    graph = from_model(make_model(nodes, [("x", [1, 2, 4, 4])], [("y", [1, 4, 4, 4])],
                                  {"w": rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "b": np.zeros(4, np.float32)}))
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    x = rng.normal(size=(30, 2, 4, 4))
    manifest, _ = _check_stream(tmp_path, graph, p, x)
    assert _bounded(tmp_path / "fpga0", manifest["boards"][0], graph, p.precision, x[:5]) is None


def test_integer_domain_quantized_model(tmp_path):
    # onnxruntime's quantize_static model in the integer domain: the input quantizer, Requant per
    # channel (pixel by pixel), requant2 for the residual Add (its skip FIFO), SumPool on a line
    # buffer, the per-position Requant over the whole map, ReduceSum, Gemm, the dequantizing output
    import conveyor
    from test_codegen_requant import quantize_static_model

    graph = conveyor.load(quantize_static_model(tmp_path, per_channel=True), requant="integer")
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=graph.model_precision.config)
    manifest, _ = _check_stream(tmp_path / "hls", graph, p, np.random.default_rng(1).standard_normal((60, 3, 8, 8)) * 1.5)
    top = (tmp_path / "hls" / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()
    assert all(f"conveyor::{k}<" in top for k in ("sumpool_2d_stream", "global_sum_stream", "requant2", "quantize"))
    assert [f["depth"] for f in manifest["boards"][0]["fifos"] if "skip" in f] == [8 + 1]


def test_torchvision_mobilenet_v2_in_io_stream(tmp_path):
    """A network nobody here wrote (torchvision MobileNetV2, random weights, 32 px) on one Alveo
    U250 in io_stream: depthwise and pointwise convs on line buffers, ReLU6 Clips, residual Adds
    through clone_stream, the spatial mean; C simulation equal to the emulator."""
    from conveyor.frontends.torchvision_compat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(0)
    graph = from_torch(tv.models.mobilenet_v2(num_classes=10).eval(), torch.zeros(1, 3, 32, 32))
    p = plan(graph, _resolve_cluster("alveo-u250:1"), precision=Q16)
    manifest, _ = _check_stream(tmp_path, graph, p, np.random.default_rng(0).normal(size=(2, 3, 32, 32)))
    adds = {n.name for n in graph.nodes if n.op_type == "Add"}
    skips = [f for f in manifest["boards"][0]["fifos"] if "skip" in f]
    assert len(adds) == 10 and {f["skip"].split(" to ")[1].split(":")[0] for f in skips} <= adds
    assert len(skips) >= 8 and all(f["depth"] >= 2 for f in skips)   # 1-2 px maps need no more than 2
