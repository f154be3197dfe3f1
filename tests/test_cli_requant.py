"""`--requant` on the commands that load a model: onnxruntime's quantize_static model (float
scales) through inspect, quantize, plan, compile, csim and run (default: the integer domain), with
the mode the plan was made with found again from its fingerprint."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from conveyor.cli import cli
from test_codegen_requant import quantize_static_model   # the model whose board test_codegen_requant builds


def _cli(*args, ok=True):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert (r.exit_code == 0) == ok, r.output
    return r


def test_requant_option_through_inspect_quantize_plan_compile_csim_and_run(tmp_path):
    qp = quantize_static_model(tmp_path, per_channel=True)
    integer = json.loads(_cli("inspect", qp, "--json").output)   # the library's default
    assert integer == json.loads(_cli("inspect", qp, "--requant", "integer", "--json").output)
    nearest = json.loads(_cli("inspect", qp, "--requant", "nearest", "--json").output)
    assert [r["op_type"] for r in integer["layers"]].count("Requant") == 8
    assert "Requant" not in [r["op_type"] for r in nearest["layers"]]
    notes = [q["note"] for q in integer["precision"]["quantizers"]]
    assert sum("integer requantisation: acc * M0 >> shift" in n for n in notes) == 6
    assert all("nearest" not in n and "not a power of two" in n for n in
               [q["note"] for q in nearest["precision"]["quantizers"]])
    assert "A quantized model's float scales" in _cli("plan", "--help").output

    q = json.loads(_cli("quantize", qp, "-n", "4", "--json").output)
    layers = q["reports"][0]["layers"]   # the model's own precision, bit-accurate against the float path
    assert {"Requant", "SumPool", "ReduceSum"} <= {r["op_type"] for r in layers}
    assert max(r["max_abs_error"] for r in layers if r["op_type"] == "Requant") <= 1.0   # at most one step
    # a precision of the user's applies to the float graph (stored integers would saturate it)
    q = json.loads(_cli("quantize", qp, "--precision", "ap_fixed<16,6>", "-n", "4", "--json").output)
    assert "Requant" not in {r["op_type"] for r in q["reports"][0]["layers"]}

    plan = tmp_path / "plan.json"
    _cli("plan", qp, "--cluster", "zynq7035:1", "-o", plan)
    fingerprint = json.loads(plan.read_text())["fingerprint"]
    assert fingerprint == integer["fingerprint"] != nearest["fingerprint"]
    # compile, csim and run find the plan's mode from its fingerprint; --requant forces one
    out = _cli("compile", plan, "--model", qp, "-o", tmp_path / "hls").output
    assert "fpga0" in out
    manifest = json.loads((tmp_path / "hls" / "manifest.json").read_text())
    assert manifest["fingerprint"] == fingerprint
    x = np.random.default_rng(2).standard_normal((6, 3, 8, 8))
    np.save(tmp_path / "x.npy", x)
    assert "outputs equal to the emulator" in _cli("csim", tmp_path / "hls", "--inputs", tmp_path / "x.npy").output
    run = json.loads(_cli("run", plan, "--model", qp, "--inputs", tmp_path / "x.npy", "--json").output)
    assert run["completed"] == 6
    bad = _cli("run", plan, "--model", qp, "--requant", "nearest", ok=False)   # forced: not the plan's graph
    assert "the plan was made for model" in str(bad.exception)
    plan2 = tmp_path / "plan2.json"   # planned on the float graph: compile finds that mode again
    _cli("plan", qp, "--cluster", "zynq7035:1", "--requant", "nearest", "-o", plan2)
    assert json.loads(plan2.read_text())["fingerprint"] == nearest["fingerprint"]
    run = json.loads(_cli("run", plan2, "--model", qp, "--inputs", tmp_path / "x.npy", "--json").output)
    assert run["completed"] == 6
    bad = _cli("inspect", qp, "--requant", "exact", ok=False)
    assert "'exact' is not one of 'nearest', 'integer'" in bad.output
