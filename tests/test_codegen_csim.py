"""conveyor compile + csim: each board's generated HLS C++, built with g++ against the real
ap_types / nnet_utils headers (hls4ml wheel), chained, equals the emulator bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conveyor.cli import _resolve_cluster, _resolve_model
from conveyor.codegen import compile as compile_plan
from conveyor.codegen.csim import compare, run_chain
from conveyor.errors import CodegenError
from conveyor.planner import plan

Q16 = "ap_fixed<16,6>"
#: narrow formats, a lossy accumulator (fewer fractional bits than the products), RND / SAT
NARROW = {"default": "ap_fixed<10,4,AP_RND,AP_SAT>", "accum": "ap_fixed<14,6,AP_RND,AP_SAT>"}


def _plan(model: str, boards: int, precision, cuts=None):
    graph = _resolve_model(model)
    cluster = _resolve_cluster(f"zynq7035:{boards}")
    p = plan(graph, cluster, precision=precision, method="manual" if cuts else "conveyor", cuts=cuts)
    assert len(p.stages) == (len(cuts) + 1 if cuts else boards)
    return graph, p


def _check(tmp_path, graph, p, x):
    manifest = compile_plan(p, graph, tmp_path)
    feeds = {graph.input_names[0]: x}
    env, runs = run_chain(tmp_path, feeds)
    assert [r.device for r in runs] == [st.device for st in p.stages]
    assert [b["device"] for b in manifest["boards"]] == [st.device for st in p.stages]
    bad = compare(graph, p.precision, feeds, runs)
    assert bad is None, str(bad)
    out = graph.output_names[0]
    want = graph.with_batch(len(x)).run(x.reshape((len(x), *graph.inputs[0].shape[1:])), precision=p.precision)[out]
    np.testing.assert_array_equal(env[out], np.asarray(want, np.float64).reshape(len(x), -1))
    return manifest, runs


def _jets(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 16)) * 2.0


def test_jet_mlp_one_board_q16(tmp_path):
    graph, p = _plan("jet-mlp", 1, Q16)
    manifest, _ = _check(tmp_path, graph, p, _jets(400))
    b = manifest["boards"][0]
    assert b["part"] == "xc7z035" and b["clock_hz"] == 150e6 and b["control"] == "s_axilite"
    assert b["ports"][0]["tensors"][0] == {"tensor": "input", "element_type": Q16, "element_bits": 16, "items": 16}
    assert "create_clock -period 6.6667" in (tmp_path / "fpga0" / "build_prj.tcl").read_text()
    assert "set_part {xc7z035}" in (tmp_path / "fpga0" / "build_prj.tcl").read_text()


def test_jet_mlp_two_boards_narrow_lossy_accumulator(tmp_path):
    graph, p = _plan("jet-mlp", 2, NARROW, cuts=["relu2"])
    manifest, runs = _check(tmp_path, graph, p, _jets(400, seed=1))
    assert manifest["boards"][0]["ports"][1]["link"] == "srio-10g"
    assert manifest["boards"][1]["ports"][0]["tensors"][0]["tensor"] == "relu2"
    # the lossy accumulator matters: the emulator's result differs from an exact accumulator's
    exact = graph.with_batch(400).run(_jets(400, seed=1), precision={**NARROW, "accum": "auto"})["output"]
    assert np.any(exact.reshape(400, -1) != runs[-1].outputs["output"])


def test_a_wrong_weight_is_reported_with_its_board_and_layer(tmp_path):
    graph, p = _plan("jet-mlp", 2, NARROW, cuts=["relu2"])   # the boards above: only fpga1 is rebuilt
    compile_plan(p, graph, tmp_path)
    header = tmp_path / "fpga1" / "firmware" / "weights" / "w0.h"   # fc3's weights: the second board's first layer
    text = header.read_text()
    head, values = text.split("{", 1)
    first, rest = values.split(",", 1)
    header.write_text(head + "{" + str(int(first) + 37) + "," + rest)
    x = _jets(50, seed=2)
    _, runs = run_chain(tmp_path, {"input": x})
    bad = compare(graph, p.precision, {"input": x}, runs)
    # the first board is untouched; the second's output (softmax's) is the first value to differ
    assert bad is not None and (bad.board, bad.layer, bad.tensor) == ("fpga1", "softmax", "output"), bad
    assert "board fpga1, layer softmax" in str(bad)


def test_unsupported_variant_names_node_op_and_what_is_taken(tmp_path):
    # every op with a bit-accurate kernel has a writer (those without one stop at the emulator,
    # PrecisionError by node); a variant a writer does not generate is refused by node and op
    from onnx import helper

    from conveyor.frontends.onnx import from_model
    from helpers import make_model

    nodes = [helper.make_node("Resize", ["x", "", "sc"], ["y"], name="up", mode="cubic")]
    graph = from_model(make_model(nodes, [("x", [1, 2, 4, 4])], [("y", [1, 2, 8, 8])],
                                  {"sc": np.array([1, 1, 2, 2], np.float32)}, opset=18))
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    with pytest.raises(CodegenError, match=r"node 'up' \(Resize\): code generation takes modes nearest and linear, "
                                           r"got cubic"):
        compile_plan(p, graph, tmp_path)


def test_cli_compile_and_csim(tmp_path):
    from click.testing import CliRunner

    from conveyor.cli import cli

    graph, p = _plan("jet-mlp", 2, NARROW, cuts=["relu2"])   # built above: cached
    p.save(tmp_path / "plan.json")
    np.save(tmp_path / "x.npy", _jets(20, seed=3))
    r = CliRunner().invoke(cli, ["compile", str(tmp_path / "plan.json"), "--model", "jet-mlp", "-o", str(tmp_path / "hls")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "hls" / "manifest.json").read_text())["model_source"] == "jet-mlp"
    r = CliRunner().invoke(cli, ["csim", str(tmp_path / "hls"), "--inputs", str(tmp_path / "x.npy"),
                                 "-o", str(tmp_path / "out.npz")])
    assert r.exit_code == 0, r.output
    assert r.output.count("equal to the emulator") == 2
    with np.load(tmp_path / "out.npz") as f:
        assert f["output"].shape == (20, 5)


def _digits(n):
    from conveyor.zoo import digits_dataset

    return digits_dataset("test")[0][:n].astype(np.float64)


def test_digits_cnn_one_board_q16(tmp_path):
    graph, p = _plan("digits-cnn", 1, Q16)
    _check(tmp_path, graph, p, _digits(300))


def test_digits_cnn_two_boards_narrow_cut_inside_the_convolutions(tmp_path):
    # the cut carries a 4-D value: channels first on the link, channels last inside each board
    graph, p = _plan("digits-cnn", 2, NARROW, cuts=["pool1"])
    manifest, _ = _check(tmp_path, graph, p, _digits(300))
    assert manifest["boards"][1]["ports"][0]["tensors"][0]["items"] == 8 * 4 * 4


class _Residual(torch.nn.Module):
    """conv -> relu -> conv, + the skip, relu, pool, linear: resnet's Add in miniature."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        y = torch.relu(a + self.c2(a))
        return self.fc(torch.nn.functional.max_pool2d(y, 2).flatten(1))


def test_residual_add_on_two_boards_the_skip_on_the_link(tmp_path):
    from conveyor.frontends.torch import from_torch

    torch.manual_seed(0)
    graph = from_torch(_Residual().eval(), torch.zeros(1, 1, 8, 8))
    p = plan(graph, _resolve_cluster("zynq7035:2"), precision=Q16, method="manual",
             cuts=[next(n.name for n in graph.nodes if n.op_type == "Relu")])
    _check(tmp_path, graph, p, np.random.default_rng(5).normal(size=(60, 1, 8, 8)))


def test_csim_backend_runs_a_pipeline_stage():
    from conveyor.runtime import Pipeline

    graph, p = _plan("jet-mlp", 1, Q16)
    xs = [x.reshape(1, 16).astype(np.float32) for x in _jets(12, seed=4)]
    with Pipeline(p, graph, backends={"fpga0": "csim"}) as pipe:
        outs = list(pipe.map(xs))
        stages = pipe.stats()["stages"]
    assert [st["backend"] for st in stages] == ["csim"]
    want = graph.with_batch(12).run(np.concatenate(xs).astype(np.float64), precision=p.precision)["output"]
    np.testing.assert_array_equal(np.concatenate([o["output"].reshape(1, -1) for o in outs]), want.reshape(12, -1))
