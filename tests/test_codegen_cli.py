"""`conveyor run --backend csim`: the pipeline's FPGA stages execute the generated HLS C++
(g++-built, cached), and give the emulator's answers."""

from __future__ import annotations

import json

from click.testing import CliRunner

from conveyor.cli import _resolve_cluster, _resolve_model, cli
from conveyor.planner import plan

NARROW = {"default": "ap_fixed<10,4,AP_RND,AP_SAT>", "accum": "ap_fixed<14,6,AP_RND,AP_SAT>"}


def _digits_plan(tmp_path):
    graph = _resolve_model("digits-cnn")   # the boards of tests/test_codegen_csim.py: cached builds
    p = plan(graph, _resolve_cluster("zynq7035:2"), precision=NARROW, method="manual", cuts=["pool1"])
    p.save(tmp_path / "plan.json")
    return tmp_path / "plan.json"


def _run(*args):
    r = CliRunner().invoke(cli, ["run", *map(str, args)])
    assert r.exit_code == 0, r.output
    return r


def test_run_backend_csim_answers_as_the_emulator(tmp_path):
    path = _digits_plan(tmp_path)
    common = (path, "--model", "digits-cnn", "--inputs", "digits", "-n", "60", "--json")
    csim = json.loads(_run(*common, "--backend", "csim").output)
    emu = json.loads(_run(*common).output)
    assert [st["backend"] for st in csim["stages"]] == ["csim", "csim"]
    assert [st["backend"] for st in emu["stages"]] == ["emulator", "emulator"]
    assert csim["completed"] == emu["completed"] == 60
    assert csim["accuracy"] == emu["accuracy"] > 0.5   # the same 60 predictions (narrow: not all right)
    one = json.loads(_run(*common, "--backend", "fpga1=csim").output)
    assert [st["backend"] for st in one["stages"]] == ["emulator", "csim"]
    assert one["accuracy"] == emu["accuracy"]


def test_run_backend_errors_name_the_value(tmp_path, capsys):
    from test_cli_errors import assert_one_line_error, run_cli

    path = _digits_plan(tmp_path)
    code, _, err = run_cli(capsys, "run", path, "--model", "digits-cnn", "-n", "2", "--backend", "fpga7=csim")
    assert_one_line_error(code, err, "--backend fpga7=csim: the plan has no stage on 'fpga7'; its stage devices: fpga0, fpga1")
    code, _, err = run_cli(capsys, "run", path, "--model", "digits-cnn", "-n", "2", "--backend", "vivado")
    assert_one_line_error(code, err, "unknown backend 'vivado'; accepted: emulator, cpu, gpu, csim")


# ---- synthesis reports: real public csynth.xml files (tests/data/csynth/README.md) -------------

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from conveyor.codegen.synth_report import read_csynth  # noqa: E402

DATA = Path(__file__).parent / "data" / "csynth"


def test_read_csynth_vivado_hls_2020_hls4ml_project():
    r = read_csynth(DATA / "hls4ml_mnist_vivado2020_csynth.xml")
    assert (r.version, r.top, r.part) == ("2020.1.1", "myproject", "xcu250-figd2104-2L-e")
    assert (r.target_clock_ns, r.estimated_clock_ns) == (5.0, 4.161)
    assert r.latency_cycles == {"best": 8402, "average": 8402, "worst": 8404}
    assert r.interval_cycles == {"min": 7840, "max": 7840}
    assert r.resources == {"dsp": 10, "bram18k": 555, "lut": 37678, "ff": 26037, "uram": 0}   # DSP48E tag
    assert r.available["dsp"] == 12288
    assert abs(r.achieved_clock_hz - 1e9 / 4.161) < 1e-3


def test_read_csynth_vitis_hls_2021_undef_average():
    r = read_csynth(DATA / "vitis2021_find_smallest_channel_csynth.xml")
    assert (r.version, r.top) == ("2021.2", "find_smallest_channel")
    assert r.latency_cycles == {"best": 31, "average": None, "worst": 40}   # 'undef' in the report
    assert r.interval_cycles == {"min": 32, "max": 41}
    assert r.resources == {"dsp": 0, "bram18k": 0, "lut": 663, "ff": 703, "uram": 0}


def test_read_csynth_rejects_a_file_without_estimates(tmp_path):
    from conveyor.errors import CodegenError

    (tmp_path / "x.xml").write_text("<profile><AreaEstimates/></profile>")
    with pytest.raises(CodegenError, match=r"x.xml: no <PerformanceEstimates> at the top level"):
        read_csynth(tmp_path / "x.xml")


def test_report_sets_synthesis_beside_the_plan(tmp_path, capsys):
    import shutil

    from test_cli_errors import assert_one_line_error, run_cli

    graph = _resolve_model("jet-mlp")
    p = plan(graph, _resolve_cluster("zynq7035:2"), precision="ap_fixed<16,6>", method="manual", cuts=["relu2"])
    p.save(tmp_path / "plan.json")
    hls = tmp_path / "hls"
    _run_cmd("compile", tmp_path / "plan.json", "--model", "jet-mlp", "-o", hls)   # no g++: writing only
    code, _, err = run_cli(capsys, "report", hls)
    assert_one_line_error(code, err, "no board has a csynth.xml")
    dst = hls / "fpga0" / "fpga0_top_prj" / "solution1" / "syn" / "report"
    dst.mkdir(parents=True)
    shutil.copy(DATA / "hls4ml_mnist_vivado2020_csynth.xml", dst / "csynth.xml")   # as vitis_hls would place it
    out = json.loads(_run_cmd("report", hls, "--json").output)
    assert out["missing"] == ["fpga1"]
    (board,) = out["boards"]
    rows = {r["quantity"]: r for r in board["rows"]}
    manifest = json.loads((hls / "manifest.json").read_text())
    modeled = manifest["boards"][0]["modeled"]
    assert rows["latency"]["synthesized"] == pytest.approx(8404 * 5e-9)   # worst case at the target clock
    assert rows["latency"]["modeled"] == modeled["latency_s"]
    assert rows["interval"]["ratio"] == pytest.approx(7840 * 5e-9 / modeled["interval_s"])
    assert rows["dsp"]["synthesized"] == 10 and rows["dsp"]["modeled"] == modeled["resources"]["dsp"]
    assert rows["clock"]["ratio"] == pytest.approx(1e9 / 4.161 / 150e6)
    text = _run_cmd("report", hls).output
    assert "fpga0: myproject on xcu250-figd2104-2L-e" in text and "fpga1: no csynth.xml yet" in text


def test_compile_synth_without_vitis_says_so(tmp_path, capsys, monkeypatch):
    from test_cli_errors import assert_one_line_error, run_cli

    monkeypatch.setenv("PATH", "/nonexistent")
    graph = _resolve_model("jet-mlp")
    plan(graph, _resolve_cluster("zynq7035:1"), precision="ap_fixed<16,6>").save(tmp_path / "plan.json")
    code, _, err = run_cli(capsys, "compile", tmp_path / "plan.json", "--model", "jet-mlp", "-o", tmp_path / "h",
                           "--synth")
    assert_one_line_error(code, err, "--synth runs vitis_hls, which is not on PATH")


def _run_cmd(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r
