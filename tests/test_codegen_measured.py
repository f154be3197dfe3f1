"""`conveyor plan --measured DIR`: per-layer figures read back from synthesis reports replace the
cost model's for the (part, layer, parallelism) that was synthesized.

The real public reports of tests/data/csynth/ (Vitis HLS 2021.2's csynth.xml with its
ModuleInformation; Vivado HLS 2020.1's per-module files of an hls4ml project) are read as they are; the per-layer reports of a
compiled jet-mlp are *synthetic*: written by these tests from the structure of the real Vitis HLS
2021.2 report (its `ModuleInformation/Module` element, renamed to the board's layer functions and
given chosen figures), laid out where build_prj.tcl's Vitis HLS run puts them. Nothing here ran
Vitis HLS."""

from __future__ import annotations

import copy
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor.cli import _resolve_cluster, _resolve_model, cli
from conveyor.codegen import compile as compile_plan
from conveyor.codegen.measured import measured_costs, read_modules
from conveyor.errors import CodegenError
from conveyor.numerics.config import PrecisionConfig
from conveyor.planner import plan
from conveyor.planner.chain import chain_problem

DATA = Path(__file__).parent / "data" / "csynth"
VITIS = DATA / "vitis2021_find_smallest_channel_csynth.xml"
Q16 = "ap_fixed<16,6>"


def test_read_modules_vitis_2021_module_information(tmp_path):
    shutil.copy(VITIS, tmp_path / "csynth.xml")
    mods = read_modules(tmp_path)
    assert sorted(mods) == ["find_smallest_channel", "find_smallest_channel_Pipeline_LOOP_PAIRS",
                            "find_smallest_channel_Pipeline_LOOP_POPULATE"]
    pairs = mods["find_smallest_channel_Pipeline_LOOP_PAIRS"]
    assert (pairs.latency_cycles, pairs.interval_cycles) == (7, 7)     # worst case; II "4 ~ 7": the larger
    assert pairs.resources == {"dsp": 0, "bram18k": 0, "lut": 325, "ff": 188}
    top = mods["find_smallest_channel"]
    assert (top.latency_cycles, top.interval_cycles, top.resources["ff"]) == (40, 41, 703)


def test_read_modules_vivado_hls_2020_per_module_files():
    """Vivado HLS writes `<module>_csynth.xml` beside csynth.xml (hls4ml's MNIST MLP, real files)."""
    mods = read_modules(DATA / "hls4ml_mnist_vivado2020_report")
    assert sorted(mods) == ["dense_large", "dense_large_1", "softmax"]   # csynth.xml has no ModuleInformation
    d = mods["dense_large"]
    assert (d.latency_cycles, d.interval_cycles) == (7842, 7840)
    assert d.resources == {"dsp": 0, "bram18k": 29, "lut": 6850, "ff": 11975}   # as myproject_csynth.rpt lists it
    assert (mods["dense_large_1"].latency_cycles, mods["dense_large_1"].interval_cycles) == (502, 500)
    assert mods["softmax"].resources == {"dsp": 10, "bram18k": 0, "lut": 829, "ff": 705}


def _compiled(tmp_path, boards=1):
    graph = _resolve_model("jet-mlp")
    cluster = _resolve_cluster(f"zynq7035:{boards}")
    p = plan(graph, cluster, precision=Q16)
    manifest = compile_plan(p, graph, tmp_path / "hls")   # writing only, no g++
    return graph, cluster, p, manifest


def _write_reports(hls: Path, manifest: dict, figures) -> None:
    """Per board, a csynth.xml with one Module per layer function: the real Vitis report's first
    Module element copied, renamed, its figures set by figures(board, layer) -> (lat, ii, lut, ff)."""
    for board in manifest["boards"]:
        tree = ET.parse(VITIS)
        info = tree.getroot().find("ModuleInformation")
        proto = info.find("Module")
        for m in list(info):
            info.remove(m)
        for layer, fn in board["modules"].items():
            lat, ii, lut, ff = figures(board, layer)
            m = copy.deepcopy(proto)
            m.find("Name").text = fn
            s = m.find("PerformanceEstimates/SummaryOfOverallLatency")
            s.find("Worst-caseLatency").text = str(lat)
            s.find("PipelineInitiationInterval").text = f"{max(1, ii // 2)} ~ {ii}"
            m.find("AreaEstimates/Resources/LUT").text = str(lut)
            m.find("AreaEstimates/Resources/FF").text = str(ff)
            info.append(m)
        dst = hls / board["device"] / f"{board['top']}_prj" / "solution1" / "syn" / "report"
        dst.mkdir(parents=True)
        tree.write(dst / "csynth.xml")


def test_measured_figures_replace_the_model_for_the_synthesized_parallelism(tmp_path):
    graph, cluster, p, manifest = _compiled(tmp_path)
    config = PrecisionConfig.coerce(Q16)
    model = chain_problem(graph, cluster, config)
    names = list(model.layer_names)
    (board,) = manifest["boards"]
    par = board["modeled"]["parallelism"]

    def chosen(layer):
        return next(o for o in model.options[0][names.index(layer)] if o.parallelism == par[layer])

    extra = 100   # every measured layer: the model's interval, 100 cycles more latency, its LUT + 1000
    _write_reports(tmp_path / "hls", manifest, lambda b, layer: (
        chosen(layer).latency_cycles + extra, chosen(layer).interval_cycles,
        chosen(layer).resources.lut + 1000, chosen(layer).resources.ff))
    costs = measured_costs(tmp_path / "hls")
    assert len(costs.table) == len(board["modules"]) and not costs.unmatched
    measured = chain_problem(graph, cluster, config, measured=costs)
    for layer in board["modules"]:
        o = next(o for o in measured.options[0][names.index(layer)] if o.parallelism == par[layer])
        assert o.latency_cycles == chosen(layer).latency_cycles + extra
        assert o.resources.lut >= chosen(layer).resources.lut + 1000
        assert "csynth.xml module layer" in o.measured and not o.measured.startswith("calibrated")
        # the layer's other engines: the model calibrated by the synthesized one's ratios
        for other in measured.options[0][names.index(layer)]:
            if other.parallelism != par[layer]:
                assert other.measured.startswith(f"calibrated: the model x measured/modeled of parallelism ")
    fc1 = names.index("fc1.matmul")
    ratio = (chosen("fc1.matmul").latency_cycles + extra) / chosen("fc1.matmul").latency_cycles
    slowest = model.options[0][fc1][0]
    if slowest.parallelism != par["fc1.matmul"]:
        got = next(o for o in measured.options[0][fc1] if o.parallelism == slowest.parallelism)
        assert got.latency_cycles == round(slowest.latency_cycles * ratio)
        assert got.interval_cycles == slowest.interval_cycles   # measured interval = modeled: ratio 1
    for layer in set(names) - set(board["modules"]):   # wiring and unmeasured layers keep the model
        assert measured.options[0][names.index(layer)] == model.options[0][names.index(layer)]
    again = plan(graph, cluster, precision=Q16, measured=costs)
    (st,) = again.stages
    # the plan says measured exactly where it kept a synthesized engine, calibrated where it took
    # another parallelism of a measured layer (on-chip weights; streamed engines stay modeled)
    assert st.measured and set(st.measured) <= set(board["modules"])
    for layer in board["modules"]:
        if st.weights_in.get(layer, "on_chip") != "on_chip":
            assert layer not in st.measured
        elif st.parallelism[layer] == par[layer]:
            assert not st.measured[layer].startswith("calibrated"), layer
        else:
            assert st.measured[layer].startswith("calibrated"), layer
    assert again.interval_s == pytest.approx(p.interval_s)   # every measured interval is the model's
    n_cal = sum(v.startswith("calibrated") for v in st.measured.values())
    assert again.notes[0].startswith(f"measured: {len(st.measured) - n_cal} of {len(st.layers)} layers")


def test_plan_measured_cli_says_measured_and_modeled(tmp_path):
    graph, cluster, p, manifest = _compiled(tmp_path, boards=2)
    first = manifest["boards"][0]
    slow = next(iter(first["modules"]))   # fpga0's first layer: measured 50x slower than modeled
    model_ii = round(p.stages[0].layer_interval_s[slow] * first["clock_hz"])
    _write_reports(tmp_path / "hls", {"boards": [first]}, lambda b, layer: (
        (60 * model_ii, 50 * model_ii, 500, 500) if layer == slow else (10, 1, 100, 100)))
    r = CliRunner().invoke(cli, ["plan", "jet-mlp", "--cluster", "zynq7035:2", "--precision", Q16,
                                 "--measured", str(tmp_path / "hls")])
    assert r.exit_code == 0, r.output
    n_layers = len(graph.nodes)
    text = " ".join(r.output.split())
    assert f"({len(first['modules'])} synthesis figures read from" in text and ", modeled: " in text
    r = CliRunner().invoke(cli, ["plan", "jet-mlp", "--cluster", "zynq7035:2", "--precision", Q16,
                                 "--measured", str(tmp_path / "hls"), "-o", str(tmp_path / "p.json")])
    saved = json.loads((tmp_path / "p.json").read_text())
    measured = {k: v for s in saved["stages"] for k, v in s.get("measured", {}).items()}
    assert all("csynth.xml module layer" in v for v in measured.values())
    assert ", calibrated: " in " ".join(r.output.split())
    assert sum(len(s["layers"]) for s in saved["stages"]) == n_layers
    # the slow engine is no longer what the model promised: the re-plan's interval is not the old one
    assert saved["interval_s"] != pytest.approx(p.interval_s)


def test_measured_needs_a_compiled_and_synthesized_folder(tmp_path):
    with pytest.raises(CodegenError, match="no manifest.json"):
        measured_costs(tmp_path)
    _compiled(tmp_path)
    with pytest.raises(CodegenError, match="no board has a synthesis report"):
        measured_costs(tmp_path / "hls")
