"""The zoo's CNNs through conveyor compile + chained csim, bit for bit against the emulator, on
1, 2 and 4-or-more-board planner plans at ap_fixed<16,6> and at a narrow RND/SAT config with
a lossy accumulator. The models run on a smaller square input (`zoo.build(name, size=S)`: the
same layers, attributes and weights; smaller activations), a few items each, so the g++ builds
and the C simulation stay cheap; the full-size runs are in benchmarks/codegen.py."""

from __future__ import annotations

import numpy as np
import pytest
from test_codegen_csim import NARROW, Q16, _check

from conveyor import zoo
from conveyor.cli import _resolve_cluster
from conveyor.errors import ModelError
from conveyor.planner import plan

#: the least input each CNN takes (alexnet-conv: pool5 on 3x3; vgg16-conv, resnet18: 1x1 after stride 32)
SIZE = {"alexnet-conv": 67, "vgg16-conv": 32, "resnet18": 32}


def _images(graph, n, seed):
    return np.random.default_rng(seed).uniform(0, 1, size=(n, *graph.inputs[0].shape[1:]))


@pytest.mark.parametrize("model,boards,precision,items", [
    ("resnet18", 1, Q16, 2), ("resnet18", 2, NARROW, 2), ("resnet18", 4, Q16, 2),
    ("alexnet-conv", 1, Q16, 3), ("alexnet-conv", 2, NARROW, 3), ("alexnet-conv", 4, Q16, 3),
    ("vgg16-conv", 1, NARROW, 1), ("vgg16-conv", 2, Q16, 1), ("vgg16-conv", 8, Q16, 1),
])
def test_zoo_cnn_csim_equals_the_emulator(tmp_path, model, boards, precision, items):
    graph = zoo.build(model, size=SIZE[model])
    p = plan(graph, _resolve_cluster(f"zynq7035:{boards}"), precision=precision)
    assert len(p.stages) == boards and all(st.device_kind == "fpga" for st in p.stages)
    manifest, runs = _check(tmp_path, graph, p, _images(graph, items, seed=boards))
    assert sorted(n for b in manifest["boards"] for n in b["layers"]) == sorted(n.name for n in graph.nodes)
    out = runs[-1].outputs[graph.output_names[0]]
    assert len(np.unique(out)) >= 32   # not a saturated or all-zero output compared with itself


def test_zoo_size_keeps_layers_and_weights():
    for name, size in SIZE.items():
        small, full = zoo.build(name, size=size), zoo.build(name)
        assert [(n.op_type, n.attrs) for n in small.nodes] == [(n.op_type, n.attrs) for n in full.nodes]
        assert small.weights.keys() == full.weights.keys()
        assert all(np.array_equal(small.weights[k], full.weights[k]) for k in full.weights)
        assert small.inputs[0].shape == (1, 3, size, size)
    assert zoo.build_onnx("resnet18", None).SerializeToString() == zoo.build_onnx("resnet18").SerializeToString()
    with pytest.raises(ModelError, match="resnet18: input size 48 is not a positive multiple of 32"):
        zoo.build("resnet18", size=48)
    with pytest.raises(ModelError, match="alexnet-conv: input size 60 is below 67"):
        zoo.build("alexnet-conv", size=60)
    with pytest.raises(ModelError, match="'jet-mlp' has a fixed input; size= is accepted by alexnet-conv"):
        zoo.build("jet-mlp", size=8)


def _run_replicas(out_dir, manifest, graph, precision, x):
    """Each board of the compiled plan, replicas included, on `x` (a replica on the same
    inputs as its stage's first device); every output value against the emulator. Returns
    {device: TDEST of each output beat}."""
    from conveyor.codegen.csim import build_board, compare, run_board, BoardRun

    feeds = {graph.input_names[0]: x}
    env = {k: v.reshape(len(x), -1) for k, v in feeds.items()}
    runs, dests = [], {}
    for b in manifest["boards"]:
        exe, _, _ = build_board(out_dir / b["device"])
        dfile = out_dir / f"{b['device']}.tdest"
        outputs = run_board(exe, b, env, out_dir / b["device"] / "firmware" / "weights", tdest_file=dfile)
        runs.append(BoardRun(b["device"], len(x), 0.0, 0.0, False, outputs))
        dests[b["device"]] = np.fromfile(dfile, dtype="<u8").reshape(len(x), -1)
        if b["replica_of"] is None:
            env.update(outputs)
    bad = compare(graph, precision, feeds, runs)
    assert bad is None, str(bad)
    return dests


def test_replicated_stage_one_folder_per_device_tdest_on_the_switch(tmp_path):
    """A planner plan with replicas (alexnet-conv on 4 Zynq-7035 behind a switch: the first
    stage on fpga0, fpga1, fpga2, the second on fpga3): one board folder per device, each
    replica's C simulation equals the emulator, and every beat the first stage sends carries
    TDEST 3 (fpga3, the receiving board's index in the cluster); to the host TDEST is 0."""
    from conveyor.codegen import compile as compile_plan
    from conveyor.hardware import Cluster

    graph = zoo.build("alexnet-conv", size=SIZE["alexnet-conv"])
    p = plan(graph, Cluster.uniform("zynq7035", 4, link="srio-10g", topology="switch"), precision="ap_fixed<8,3>")
    assert [(st.device, st.replicas) for st in p.stages] == [("fpga0", ("fpga1", "fpga2")), ("fpga3", ())]
    manifest = compile_plan(p, graph, tmp_path)
    assert [(b["device"], b["stage"], b["replica_of"]) for b in manifest["boards"]] == [
        ("fpga0", 0, None), ("fpga1", 0, "fpga0"), ("fpga2", 0, "fpga0"), ("fpga3", 1, None)]
    assert all((tmp_path / d / "firmware" / f"{d}_top.cpp").is_file() for d in ("fpga0", "fpga1", "fpga2", "fpga3"))
    for b in manifest["boards"][:3]:
        assert b["ports"][1]["switched"] and b["ports"][1]["tdest"] == 3
        assert b["ports"][1]["stream"] == "hls::stream<ap_axiu<64,0,0,2>>"   # 4 devices: 2 TDEST bits
    assert not manifest["boards"][3]["ports"][1]["switched"] and manifest["boards"][3]["ports"][1]["tdest"] == 0
    dests = _run_replicas(tmp_path, manifest, graph, p.precision, _images(graph, 2, seed=5))
    assert all(np.all(dests[d] == 3) for d in ("fpga0", "fpga1", "fpga2")) and np.all(dests["fpga3"] == 0)


def test_tdest_only_on_switched_links_and_round_robin_over_replicas(tmp_path):
    """jet-mlp on 3 stages over 4 Zynq-7035: on srio-10g (point to point) TDEST is 0; on
    eth-1g (switched in the catalog) each beat carries the receiving board's index, and a
    board feeding a replicated stage (fpga1 and fpga3) names them item by item in turn."""
    import dataclasses

    from conveyor.codegen import compile as compile_plan
    from conveyor.hardware import Cluster

    graph = zoo.build("jet-mlp")
    for link in ("srio-10g", "eth-1g"):
        p = plan(graph, Cluster.uniform("zynq7035", 4, link=link), precision=NARROW, method="manual",
                 cuts=["relu1", "relu2"])
        stages = list(p.stages)
        stages[1] = dataclasses.replace(stages[1], replicas=("fpga3",))
        p = dataclasses.replace(p, stages=tuple(stages))
        manifest = compile_plan(p, graph, tmp_path / link)
        assert [b["device"] for b in manifest["boards"]] == ["fpga0", "fpga1", "fpga3", "fpga2"]
        ports = [b["ports"][1] for b in manifest["boards"]]
        if link == "srio-10g":   # the generated packing sends TDEST 0 (pack's default)
            assert [(pt["switched"], pt["tdest"]) for pt in ports] == [(False, 0)] * 4
            assert "tdest" not in (tmp_path / link / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()
            continue
        assert [(pt["switched"], pt["tdest"]) for pt in ports] == [(True, [1, 3]), (True, 2), (True, 2), (False, 0)]
        dests = _run_replicas(tmp_path / link, manifest, graph, p.precision,
                              np.random.default_rng(8).normal(size=(6, 16)) * 2.0)
        assert list(dests["fpga0"][:, 0]) == [1, 3, 1, 3, 1, 3]
        assert np.all(dests["fpga0"] == dests["fpga0"][:, :1])   # every beat of an item: the same TDEST
        assert np.all(dests["fpga1"] == 2) and np.all(dests["fpga3"] == 2) and np.all(dests["fpga2"] == 0)
