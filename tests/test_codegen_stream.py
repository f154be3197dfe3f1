"""Weights streamed from DDR over m_axi (codegen/weight_stream.py): a board too small to hold a
small conv net's weights (a Zynq-7035 with 12 BRAM18K, a custom catalog part) gets a plan that streams
every Conv's and Gemm's weights from its DDR; the generated top reads them tile by tile through an m_axi
port, the testbench passing the memory image (firmware/weights/stream.bin), and the C
simulation equals the emulator bit for bit."""

from __future__ import annotations

import json

import numpy as np
import torch

from conveyor.codegen import compile as compile_plan
from conveyor.codegen.csim import compare, run_chain
from conveyor.codegen.weight_stream import tile_outputs
from conveyor.frontends.torch import from_torch
from conveyor.hardware.cluster import Cluster
from conveyor.planner import plan

NARROW = {"default": "ap_fixed<10,4,AP_RND,AP_SAT>", "accum": "ap_fixed<14,6,AP_RND,AP_SAT>"}


def _tiny_board_cluster(bram18k: int = 12, n: int = 1, topology: str = "chain") -> Cluster:
    """n boards: the Zynq-7035's DSPs and DDR (boards.yaml), but only `bram18k` block RAMs."""
    return Cluster.from_dict({
        "name": "tiny", "topology": topology, "link": "srio-10g",
        "devices": [{"name": f"fpga{i}", "board": "tinyzynq"} for i in range(n)],
        "catalog": {
            "parts": {"xc7tiny": {"vendor": "xilinx", "family": "zynq-7000", "dsp": 900, "dsp_mult_width": [25, 18],
                                  "bram18k": bram18k, "uram": 0, "lut": 60000, "ff": 343800, "clock_hz": 150e6,
                                  "description": "a Z-7035 with few BRAMs (test part)", "source": "test"}},
            "boards": {"tinyzynq": {"part": "xc7tiny", "dram_bytes": 1 << 30, "dram_bandwidth_Bps": 4.264e9,
                                    "host_interface": "zynq-ps-axi", "network_links": ["srio-10g"],
                                    "description": "test board", "source": "test"}}}})


def _net():
    """conv 3x3 (16 -> 32 channels) -> relu -> flatten -> 512 x 64 -> relu -> 64 x 5: Conv and Gemm weights."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 5))
    return from_torch(m.eval(), torch.zeros(1, 16, 4, 4))


def test_tile_outputs_divides_and_fits_the_model_tile():
    assert tile_outputs(32, 256, 4) == 64      # 4 x 512 weights: 64 outputs of 32 inputs
    assert tile_outputs(256, 64, 4) == 8
    assert tile_outputs(64, 5, 2) == 5         # the whole layer fits one tile
    assert tile_outputs(1000, 7, 1) == 1       # a tile smaller than one output: one output per tile


def test_streamed_weights_csim_bit_exact_and_a_wrong_word_is_caught(tmp_path):
    graph = _net()
    p = plan(graph, _tiny_board_cluster(), precision=NARROW)
    (st,) = p.stages
    gemms = [n.name for n in graph.nodes if n.op_type in ("Conv", "Gemm")]
    assert {st.weights_in[n] for n in gemms} == {"dram"}
    manifest = compile_plan(p, graph, tmp_path)
    board = manifest["boards"][0]
    mem = board["weight_memory"]
    assert mem["interface"] == "m_axi" and set(mem["layers"]) == set(gemms)
    assert board["weights_in"] == {n: st.weights_in[n] for n in board["modules"]}
    fw = tmp_path / "fpga0" / "firmware"
    top = (fw / "fpga0_top.cpp").read_text()
    ports = [v["port"] for v in mem["layers"].values()]
    assert len(set(ports)) == 3 and all(f"const ap_uint<64> *{q}" in top for q in ports)
    assert all(f"#pragma HLS INTERFACE m_axi port={q} offset=slave bundle=gmem_w" in top for q in ports)
    assert top.count("conveyor::load_tile<") == 3 * 3   # per layer: the first tile, then the ping-pong pair
    assert not list((fw / "weights").glob("w*"))        # no on-chip copy of any streamed weight
    image = np.fromfile(fw / "weights" / "stream.bin", dtype="<u8")
    assert len(image) == mem["words"] == sum(v["tiles"] * v["tile_words"] for v in mem["layers"].values())
    x = np.random.default_rng(7).normal(size=(200, 16, 4, 4)) * 2.0
    feeds = {graph.input_names[0]: x}
    env, runs = run_chain(tmp_path, feeds)
    bad = compare(graph, p.precision, feeds, runs)
    assert bad is None, str(bad)
    want = graph.with_batch(200).run(x, precision=p.precision)[graph.output_names[0]]
    np.testing.assert_array_equal(env[graph.output_names[0]], np.asarray(want, np.float64).reshape(200, -1))
    # one weight of the last layer changed in memory: the same build, another answer, reported by board
    last = mem["layers"][gemms[-1]]
    image[last["offset_words"]] ^= np.uint64(0x3FF)
    image.astype("<u8").tofile(fw / "weights" / "stream.bin")
    _, runs = run_chain(tmp_path, feeds)
    assert all(r.cached for r in runs)
    bad = compare(graph, p.precision, feeds, runs)
    assert bad is not None and bad.board == "fpga0"
    assert json.loads((tmp_path / "manifest.json").read_text())["boards"][0]["weight_memory"]["words"] == mem["words"]


def test_torchvision_mobilenet_streams_every_conv_including_depthwise(tmp_path):
    """A real network (torchvision MobileNetV2, random weights, 32 px) on a board with 1000 BRAM18K:
    the plan puts every Conv's and the classifier's weights in DDR; the generated code streams all
    of them, depthwise convs whole groups per tile, its bias-free convs (BatchNorm folded) get zero
    biases, and the C simulation equals the emulator bit for bit."""
    from conveyor.frontends.torchvision_compat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(0)
    graph = from_torch(tv.models.mobilenet_v2(num_classes=10).eval(), torch.zeros(1, 3, 32, 32))
    p = plan(graph, _tiny_board_cluster(1000), precision="ap_fixed<16,6>")
    (st,) = p.stages
    weighted = [n.name for n in graph.nodes if n.op_type in ("Conv", "Gemm")]
    depthwise = [n.name for n in graph.nodes if n.op_type == "Conv" and n.attr("group", 1) > 1]
    assert len(depthwise) == 17 and {st.weights_in[n] for n in weighted} == {"dram"}
    manifest = compile_plan(p, graph, tmp_path)
    mem = manifest["boards"][0]["weight_memory"]
    assert set(mem["layers"]) == set(weighted)
    assert all(mem["layers"][n]["tile_groups"] >= 1 for n in depthwise)
    fw = tmp_path / "fpga0" / "firmware"
    assert not list((fw / "weights").glob("w*.h")) and not list((fw / "weights").glob("w*.bin"))
    assert (fw / "fpga0_top.cpp").read_text().count("conveyor::conv_2d_groups_cl<") == 2 * len(depthwise)
    x = np.random.default_rng(3).normal(size=(3, 3, 32, 32))
    feeds = {graph.input_names[0]: x}
    _, runs = run_chain(tmp_path, feeds)
    bad = compare(graph, p.precision, feeds, runs)
    assert bad is None, str(bad)


def test_grouped_conv_streams_whole_groups_bit_exact(tmp_path):
    """Group-2 and group-4 convs (AlexNet's conv4/conv5 kind) with their weights in DDR: tiles of
    whole groups, 150 inputs at a narrow RND/SAT config equal to the emulator."""
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Conv2d(32, 64, 3, padding=1, groups=2), torch.nn.ReLU(),
                            torch.nn.Conv2d(64, 64, 3, stride=2, groups=4), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(64, 4))
    graph = from_torch(m.eval(), torch.zeros(1, 32, 4, 4))
    p = plan(graph, _tiny_board_cluster(12), precision=NARROW)
    (st,) = p.stages
    convs = [n.name for n in graph.nodes if n.op_type == "Conv"]
    assert {st.weights_in[n] for n in convs} == {"dram"}
    mem = compile_plan(p, graph, tmp_path)["boards"][0]["weight_memory"]["layers"]
    assert set(convs) <= set(mem) and all(mem[n]["tiles"] > 1 for n in convs)   # the ping-pong runs
    x = np.random.default_rng(5).normal(size=(150, 32, 4, 4)) * 2.0
    feeds = {graph.input_names[0]: x}
    _, runs = run_chain(tmp_path, feeds)
    bad = compare(graph, p.precision, feeds, runs)
    assert bad is None, str(bad)


def test_a_plan_that_spills_activations_is_flagged_where_the_code_departs(tmp_path):
    """The planner may spill a layer's activations to DDR; the generated code keeps every buffer
    on chip, and the manifest and `conveyor compile` say so by layer instead of passing it over."""
    from dataclasses import replace

    from click.testing import CliRunner

    from conveyor.cli import cli

    graph = _net()
    p = plan(graph, _tiny_board_cluster(), precision=NARROW)
    (st,) = p.stages
    conv = next(n.name for n in graph.nodes if n.op_type == "Conv")
    spilled = replace(p, stages=(replace(st, activations_in={**st.activations_in, conv: "dram"}),))
    board = compile_plan(spilled, graph, tmp_path / "a")["boards"][0]
    assert board["activations_in"][conv] == "on_chip"
    assert len(board["departs_from_plan"]) == 1 and board["departs_from_plan"][0].startswith(f"{conv}: ")
    assert compile_plan(p, graph, tmp_path / "b")["boards"][0]["departs_from_plan"] == []
    import onnx

    from conveyor.frontends.export import to_onnx

    onnx.save(to_onnx(graph), tmp_path / "net.onnx")
    spilled.save(tmp_path / "plan.json")
    r = CliRunner().invoke(cli, ["compile", str(tmp_path / "plan.json"), "--model", str(tmp_path / "net.onnx"),
                                 "-o", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert "fpga0: 1 layer the plan spills to memory keep their activations on chip" in r.output
