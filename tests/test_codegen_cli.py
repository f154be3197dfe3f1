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
    assert_one_line_error(code, err, "--backend fpga7=csim: the plan has no device 'fpga7'; its devices: fpga0, fpga1")
    code, _, err = run_cli(capsys, "run", path, "--model", "digits-cnn", "-n", "2", "--backend", "vivado")
    assert_one_line_error(code, err, "unknown backend 'vivado'; accepted: emulator, cpu, gpu, csim")
