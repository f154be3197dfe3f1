"""conveyor compile + csim for the ops real CNNs need beyond conv/dense/maxpool: grouped and
depthwise Conv, Clip (ReLU6), an unfolded BatchNormalization, Concat (a squeezenet fire
module), LeakyRelu, AveragePool, Sigmoid/Tanh tables, ReduceMean/GlobalAveragePool — each
board's g++-built C simulation equal to the emulator bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper
from torch import nn

from conveyor.cli import _resolve_cluster
from conveyor.codegen import compile as compile_plan
from conveyor.errors import CodegenError
from conveyor.frontends.onnx import from_model
from conveyor.frontends.torch import from_torch
from conveyor.planner import plan
from helpers import csim_equals_emulator, make_model

Q16 = "ap_fixed<16,6>"
NARROW = {"default": "ap_fixed<10,4,AP_RND,AP_SAT>", "accum": "ap_fixed<14,6,AP_RND,AP_SAT>"}


class MobileFire(nn.Module):
    """A mobilenet block (conv-BN-ReLU6, depthwise 3x3, pointwise, residual Add), a squeezenet
    fire module (squeeze 1x1, expand 1x1 and 3x3, Concat), then an unfolded BatchNorm,
    LeakyRelu, AveragePool with pads not counted, a 2-group conv, Sigmoid, a spatial mean,
    Linear and Tanh."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.dw, self.pw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1)
        self.sq, self.e1, self.e3 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn, self.g, self.fc = nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Linear(8, 6)

    def forward(self, x):
        a = nn.functional.relu6(self.bn0(self.stem(x)))
        a = nn.functional.relu6(self.dw(a))
        a = a + self.pw(a)
        q = torch.relu(self.sq(a))
        f = torch.cat([torch.relu(self.e1(q)), torch.relu(self.e3(q))], 1)
        f = nn.functional.leaky_relu(self.bn(f), 0.1)
        f = nn.functional.avg_pool2d(f, 3, stride=2, padding=1, count_include_pad=False)
        f = torch.sigmoid(self.g(f))
        return torch.tanh(self.fc(nn.functional.adaptive_avg_pool2d(f, 1).flatten(1)))


def _mobile_fire():
    torch.manual_seed(0)
    m = MobileFire().eval()
    with torch.no_grad():
        for b in (m.bn0, m.bn):   # statistics away from the identity, so that BN does something
            b.running_mean.uniform_(-0.5, 0.5)
            b.running_var.uniform_(0.5, 2.0)
            b.weight.uniform_(0.5, 1.5)
            b.bias.uniform_(-0.3, 0.3)
        m.g.weight.mul_(8)   # spread the values over the sigmoid and tanh tables
        m.fc.weight.mul_(6)
        m.sq.weight.mul_(2)
    return from_torch(m, torch.zeros(1, 1, 8, 8))


def _check(tmp_path, graph, p, x):
    manifest, env, _ = csim_equals_emulator(tmp_path, graph, p, x)
    return manifest, env


def _x(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 1, 8, 8)) * 1.5


def test_mobilenet_block_and_fire_module_one_board_q16(tmp_path):
    graph = _mobile_fire()
    ops = {n.op_type for n in graph.nodes}
    assert {"Clip", "Concat", "BatchNormalization", "LeakyRelu", "AveragePool", "Sigmoid", "Tanh",
            "ReduceMean"} <= ops, ops
    assert {n.attr("group") for n in graph.nodes if n.op_type == "Conv"} >= {2, 8}
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    _, env = _check(tmp_path, graph, p, _x(120, 1))
    assert len(np.unique(env[graph.output_names[0]], axis=0)) > 100   # the outputs follow the inputs


def test_mobilenet_block_and_fire_module_two_boards_narrow(tmp_path):
    # the cut carries the fire module's Concat (a 4-D value): channels first on the link
    graph = _mobile_fire()
    cat = next(n.name for n in graph.nodes if n.op_type == "Concat")
    p = plan(graph, _resolve_cluster("zynq7035:2"), precision=NARROW, method="manual", cuts=[cat])
    manifest, _ = _check(tmp_path, graph, p, _x(120, 2))
    assert manifest["boards"][1]["ports"][0]["tensors"][0]["items"] == 8 * 8 * 8


def test_average_pools_round_once_in_every_mode_and_lrn(tmp_path):
    """AveragePool (pads counted and not, ceil_mode) and GlobalAveragePool at results narrow
    enough that quotients fall between grid points and on ties, in five rounding modes; and
    conveyor's LRN (conv -> relu -> LRN, its own accumulator and table) on the same board."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("LRN", ["r"], ["n"], name="lrn", size=5, alpha=1e-2, beta=0.75, bias=1.0),
        helper.make_node("AveragePool", ["x"], ["a1"], name="a1", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("AveragePool", ["x"], ["a2"], name="a2", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=0, ceil_mode=1),
        helper.make_node("AveragePool", ["x"], ["a3"], name="a3", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["x"], ["a4"], name="a4"),
        helper.make_node("GlobalAveragePool", ["x"], ["a5"], name="a5"),
    ]
    model = make_model(nodes, [("x", [1, 3, 7, 7])], [("a1", [1, 3, 4, 4]), ("a2", [1, 3, 4, 4]),
                                                         ("a3", [1, 3, 3, 3]), ("a4", [1, 3, 1, 1]),
                                                         ("a5", [1, 3, 1, 1]), ("n", [1, 8, 7, 7])],
                       {"w": (rng.normal(size=(8, 3, 3, 3)) * 0.8).astype(np.float32),
                        "b": np.zeros(8, np.float32)})
    graph = from_model(model)
    precision = {"default": "ap_fixed<10,4,AP_RND,AP_SAT>", "tables": {"lrn": {"max": 1024}},
                 "op_types": {"LRN": {"accum": "ap_fixed<14,8,AP_RND,AP_SAT>"}},
                 "nodes": {"a1": {"result": "ap_fixed<6,3,AP_TRN,AP_WRAP>"},
                           "a2": {"result": "ap_fixed<6,3,AP_RND_CONV,AP_SAT>"},
                           "a3": {"result": "ap_fixed<5,3,AP_RND_ZERO,AP_SAT>"},
                           "a4": {"result": "ap_fixed<8,2,AP_RND_MIN_INF,AP_SAT>"},
                           "a5": {"result": "ap_fixed<8,2,AP_TRN_ZERO,AP_SAT>"}}}
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=precision)
    x = np.random.default_rng(3).normal(size=(200, 3, 7, 7)) * 2.0
    _, env = _check(tmp_path, graph, p, x)
    r = graph.with_batch(200).run(x, precision=p.precision, fetch=["r"])["r"].reshape(200, -1)
    assert np.mean(env["n"] < r) > 0.3   # the LRN does scale values down


def test_sigmoid_table_range_hls4ml_lacks_gets_conveyors_table(tmp_path):
    # nnet::sigmoid spans [-8, 8) only: another range goes to conveyor::range_table (its csim is
    # checked bit for bit in tests/test_codegen_more_ops.py)
    graph = _mobile_fire()
    p = plan(graph, _resolve_cluster("zynq7035:1"),
             precision={"default": Q16, "tables": {"sigmoid": {"min": -4, "max": 4}}})
    compile_plan(p, graph, tmp_path)
    params = (tmp_path / "fpga0" / "firmware" / "parameters.h").read_text()
    top = (tmp_path / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()
    assert "table_fn::sigmoid" in params and "static const int table_min = -4;" in params
    assert "conveyor::range_table<" in top and "nnet::sigmoid<" not in top and "nnet::tanh<" in top


def test_alexnet_conv_on_four_boards_compiles(tmp_path):
    """alexnet-conv (227 px, LRN, 3.7 M weights) on 4 Zynq-7035: every board's firmware and
    testbench pass g++ -fsyntax-only (the full chained C simulation, bit-exact, takes ~20 s of
    g++ per board: benchmarks/codegen.py runs it)."""
    from conveyor.cli import _resolve_model
    from conveyor.codegen.csim import check_syntax

    graph = _resolve_model("alexnet-conv")
    p = plan(graph, _resolve_cluster("zynq7035:4"), precision=Q16)
    manifest = compile_plan(p, graph, tmp_path)
    assert [b["device"] for b in manifest["boards"]] == ["fpga0", "fpga1", "fpga2", "fpga3"]
    assert sorted({n for b in manifest["boards"] for n in b["layers"]}) == sorted(n.name for n in graph.nodes)
    assert [b["control"] for b in manifest["boards"]] == ["s_axilite", "ap_ctrl_none", "ap_ctrl_none", "s_axilite"]
    bins = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.glob("*/firmware/weights/*.bin"))
    # every conv's weights as raw int64 files, not as C++ text; the last board's grouped conv4 and
    # conv5, which the plan puts in DDR, in its m_axi memory image
    streamed = manifest["boards"][3]["weight_memory"]["layers"]
    assert set(streamed) == {n for n, v in p.stages[3].weights_in.items() if v != "on_chip"} == {"conv4", "conv5"}
    assert bins == [f"fpga{k}/firmware/weights/w0.bin" for k in range(3)] + ["fpga3/firmware/weights/stream.bin"]
    import concurrent.futures as cf
    import os

    with cf.ThreadPoolExecutor(os.cpu_count() or 1) as pool:   # g++ processes, in parallel
        list(pool.map(check_syntax, [tmp_path / b["device"] for b in manifest["boards"]]))


class _Skip(nn.Module):
    """a = relu(conv(x)); y = relu(a + conv(relu(conv(a)))): on 3 boards, `a` crosses the middle one."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        y = torch.relu(a + self.c3(torch.relu(self.c2(a))))
        return self.fc(y.flatten(1))


def test_skip_connection_crosses_a_board_untouched(tmp_path):
    # boards: c1 relu c2 | relu c3 | add relu fc -- `a` (the first relu) crosses the middle board
    torch.manual_seed(1)
    graph = from_torch(_Skip().eval(), torch.zeros(1, 1, 4, 4))
    relus = [n.name for n in graph.nodes if n.op_type == "Relu"]
    convs = [n.name for n in graph.nodes if n.op_type == "Conv"]
    p = plan(graph, _resolve_cluster("zynq7035:3"), precision=NARROW, method="manual", cuts=convs[1:3])
    manifest, _ = _check(tmp_path, graph, p, np.random.default_rng(4).normal(size=(150, 1, 4, 4)) * 2)
    mid = manifest["boards"][1]
    a = graph.node(relus[0]).outputs[0]
    carried_in = [t["tensor"] for t in mid["ports"][0]["tensors"]]
    carried_out = [t["tensor"] for t in mid["ports"][1]["tensors"]]
    assert mid["layers"] == [relus[1], convs[2]]
    assert a in carried_in and a in carried_out and a not in {i for n in mid["layers"] for i in graph.node(n).inputs}
    # each link carries exactly what the board before it sends, in its order
    for prev, nxt in zip(manifest["boards"], manifest["boards"][1:]):
        assert prev["ports"][1]["tensors"] == nxt["ports"][0]["tensors"]


def test_csim_backend_stage_with_a_crossing_value():
    """The csim Device backend on the middle stage of the skip net: the crossing value stays
    with the runtime, the board's computed value comes from its C simulation."""
    from conveyor.runtime import Pipeline

    torch.manual_seed(1)
    graph = from_torch(_Skip().eval(), torch.zeros(1, 1, 4, 4))
    convs = [n.name for n in graph.nodes if n.op_type == "Conv"]
    p = plan(graph, _resolve_cluster("zynq7035:3"), precision=NARROW, method="manual", cuts=convs[1:3])
    xs = [x.reshape(1, 1, 4, 4).astype(np.float32) for x in np.random.default_rng(6).normal(size=(10, 16)) * 2]
    with Pipeline(p, graph, backends={"fpga1": "csim"}) as pipe:
        outs = list(pipe.map(xs))
        assert [st["backend"] for st in pipe.stats()["stages"]] == ["emulator", "csim", "emulator"]
    want = graph.with_batch(10).run(np.concatenate(xs).astype(np.float64), precision=p.precision)
    got = np.concatenate([o[graph.output_names[0]].reshape(1, -1) for o in outs])
    np.testing.assert_array_equal(got, np.asarray(want[graph.output_names[0]]).reshape(10, -1))


def test_alveo_boards_face_the_host_through_m_axi(tmp_path):
    """On PCIe cards (catalog host_interface pcie3-x16) the host side is memory (m_axi, offsets
    over s_axilite); the board-to-board link stays AXI4-Stream. Bit-exact through both."""
    from conveyor.cli import _resolve_model

    graph = _resolve_model("jet-mlp")
    p = plan(graph, _resolve_cluster("alveo-u50:2"), precision=NARROW, method="manual", cuts=["relu2"])
    x = np.random.default_rng(7).normal(size=(200, 16)) * 2.0
    manifest, _ = _check(tmp_path, graph, p, x)
    assert [[pt["interface"] for pt in b["ports"]] for b in manifest["boards"]] == [["m_axi", "axis"],
                                                                                  ["axis", "m_axi"]]
    top = (tmp_path / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()
    assert "#pragma HLS INTERFACE m_axi port=host_in offset=slave" in top
    assert "#pragma HLS INTERFACE axis port=link_out" in top
