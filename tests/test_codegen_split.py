"""Stages split by output channel over several boards (codegen/split.py): one board folder per
device, each computing its slice of the split layer's output channels; the chained C simulation
(slices gathered in device order) equals the emulator bit for bit. The plans are the planner's:
boards with few block RAMs (a custom catalog part), weights kept on chip, so that a layer's
weights fit no single board."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conveyor.codegen import compile as compile_plan
from conveyor.codegen.csim import compare, run_chain
from conveyor.frontends.torch import from_torch
from conveyor.hardware.cluster import Cluster
from conveyor.planner import plan
from helpers import csim_equals_emulator

NARROW = {"default": "ap_fixed<10,4,AP_RND,AP_SAT>", "accum": "ap_fixed<14,6,AP_RND,AP_SAT>"}
Q16 = "ap_fixed<16,6>"


def _cluster(n: int, bram18k: int, topology: str = "chain") -> Cluster:
    """n identical boards: the Zynq-7035's DSPs, but only `bram18k` block RAMs (a test part)."""
    from test_codegen_stream import _tiny_board_cluster

    return _tiny_board_cluster(bram18k, n, topology)


def _net(conv_out: int = 8):
    """conv 3x3 (4 -> conv_out) -> relu -> flatten -> Linear(.., 64) -> relu -> Linear(64, 5)."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(4, conv_out, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(conv_out * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 5))
    return from_torch(m.eval(), torch.zeros(1, 4, 4, 4))


def _check(tmp_path, graph, p, x):
    manifest, _, runs = csim_equals_emulator(tmp_path, graph, p, x)
    return manifest, runs


@pytest.mark.parametrize("boards,bram,ways,precision", [(4, 4, 2, NARROW), (5, 4, 3, Q16), (6, 3, 4, Q16)],
                         ids=["2-way-narrow", "3-way-q16", "4-way-q16"])
def test_split_gemm_stage_chained_csim_bit_exact(tmp_path, boards, bram, ways, precision):
    graph = _net()
    p = plan(graph, _cluster(boards, bram), precision=precision, offchip=False)
    (st,) = [s for s in p.stages if s.split]
    assert len(st.replicas) + 1 == ways and graph.node(st.layers[0]).op_type == "Gemm"
    x = np.random.default_rng(ways).normal(size=(200, 4, 4, 4)) * 2.0
    manifest, runs = _check(tmp_path, graph, p, x)
    devices = (st.device, *st.replicas)
    sl = [b for b in manifest["boards"] if b.get("split")]
    assert [b["device"] for b in sl] == list(devices)
    assert [b["split"]["index"] for b in sl] == list(range(ways))
    bounds = [tuple(b["split"]["channels"]) for b in sl]
    assert bounds[0][0] == 0 and bounds[-1][1] == 64 and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    # each board holds only its slice of the weights, and sends only its slice
    for b, (lo, hi) in zip(sl, bounds):
        assert b["ports"][1]["tensors"][0]["items"] == hi - lo
        assert b["ports"][0]["tensors"] == sl[0]["ports"][0]["tensors"]   # every slice reads the whole input
    split_run = next(r for r in runs if r.parts)
    assert [q.device for q in split_run.parts] == list(devices)
    # a slice alone is not the answer: the gather is what equals the emulator
    assert all(q.outputs[sl[0]["split"]["tensor"]].shape[1] < 64 for q in split_run.parts)


def _conv_net():
    """conv 4 -> 4, relu, conv 4 -> 48 (the layer to split), relu, maxpool, Linear."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 48, 3, padding=1),
                            torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(48 * 2 * 2, 5))
    return from_torch(m.eval(), torch.zeros(1, 4, 4, 4))


def test_split_conv_stage_3_ways_on_a_switch(tmp_path):
    """A Conv split 3 ways (4-D slices: channels last inside each board, channels first on the
    link, so that a slice is one block), the boards on a switch: the board before the split
    stage addresses its first device (the broadcast), each slice the next stage."""
    graph = _conv_net()
    p = plan(graph, _cluster(5, 3, topology="switch"), precision=Q16, offchip=False)
    (st,) = [s for s in p.stages if s.split]
    assert graph.node(st.layers[0]).op_type == "Conv" and len(st.replicas) == 2
    x = np.random.default_rng(5).normal(size=(120, 4, 4, 4)) * 2.0
    manifest, _ = _check(tmp_path, graph, p, x)
    sl = [b for b in manifest["boards"] if b.get("split")]
    assert [tuple(b["split"]["channels"]) for b in sl] == [(0, 16), (16, 32), (32, 48)]
    assert all(b["split"]["gather"]["beat_aligned"] for b in sl)   # 16 channels x 16 pixels: whole 64-bit beats
    names = [d["name"] for d in p.cluster["devices"]]
    i = manifest["boards"].index(sl[0])
    before, after = manifest["boards"][i - 1], manifest["boards"][i + len(sl)]
    assert before["ports"][1]["tdest"] == names.index(st.device)
    assert {b["ports"][1]["tdest"] for b in sl} == {names.index(after["device"])}


def test_split_stage_names_what_it_cannot_generate(tmp_path):
    """A split stage whose first layer is not a weighted MAC layer (a hand-edited plan) is refused by stage."""
    from dataclasses import replace

    from conveyor.errors import CodegenError

    graph = _net()
    p = plan(graph, _cluster(4, 4), precision=NARROW, offchip=False)
    i = next(k for k, s in enumerate(p.stages) if s.split)
    # move the split onto the stage after it (the last Gemm alone): its output is the graph's, fine;
    # instead give the split stage the Relu before it: a non-MAC first layer
    stages = list(p.stages)
    prev, st = stages[i - 1], stages[i]
    stages[i - 1] = replace(prev, layers=prev.layers[:-1])
    stages[i] = replace(st, layers=(prev.layers[-1], *st.layers))
    bad = replace(p, stages=tuple(stages))
    with pytest.raises(CodegenError, match=rf"split stage {i} \(fpga\d, fpga\d\): its first layer"):
        compile_plan(bad, graph, tmp_path)



def test_cli_compile_and_csim_of_a_split_plan(tmp_path):
    """`conveyor compile` + `conveyor csim` on a planner plan with a split stage (the model an
    ONNX file): every board built, the slices gathered, the outputs equal to the emulator's."""
    import json

    from click.testing import CliRunner

    import conveyor
    from conveyor.cli import cli

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 5)).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(m, (torch.zeros(1, 4, 4, 4),), str(path), input_names=["input"], dynamo=True)
    graph = conveyor.load(str(path))
    p = plan(graph, _cluster(4, 4), precision=NARROW, offchip=False)
    assert any(s.split for s in p.stages)
    p.save(tmp_path / "plan.json")
    np.save(tmp_path / "x.npy", np.random.default_rng(11).normal(size=(40, 4, 4, 4)))
    r = CliRunner().invoke(cli, ["compile", str(tmp_path / "plan.json"), "--model", str(path), "-o", str(tmp_path / "hls")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "hls" / "manifest.json").read_text())
    assert sum(1 for b in manifest["boards"] if b.get("split")) == 2
    assert "Split stages" in (tmp_path / "hls" / "README.md").read_text()
    r = CliRunner().invoke(cli, ["csim", str(tmp_path / "hls"), "--inputs", str(tmp_path / "x.npy"), "--model", str(path)])
    assert r.exit_code == 0, r.output
    assert r.output.count("equal to the emulator") == 3 and "split stage: the slices of fpga1, fpga2 gathered" in r.output


def test_a_wrong_weight_in_one_slice_is_reported_with_its_device(tmp_path):
    graph = _net()
    p = plan(graph, _cluster(4, 4), precision=NARROW, offchip=False)   # the 2-way plan above
    (st,) = [s for s in p.stages if s.split]
    manifest = compile_plan(p, graph, tmp_path)
    second = [b for b in manifest["boards"] if b.get("split")][1]
    assert second["device"] == st.replicas[0]
    header = tmp_path / second["device"] / "firmware" / "weights" / "b0.h"   # the Gemm's bias slice
    head, values = header.read_text().split("{", 1)
    first, rest = values.split(",", 1)
    header.write_text(head + "{" + str(int(first) + 300) + "," + rest)
    x = np.random.default_rng(12).normal(size=(30, 4, 4, 4)) * 2.0
    _, runs = run_chain(tmp_path, {graph.input_names[0]: x})
    bad = compare(graph, p.precision, {graph.input_names[0]: x}, runs)
    assert bad is not None and bad.board == second["device"], bad
    assert bad.index >= second["split"]["offset"]
