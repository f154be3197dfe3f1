"""The command line: tables, --json data, one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest

from conveyor.cli import main

ALEXNET_CONV1_MACS = 105_415_200  # 96 kernels of 11x11x3, stride 4, 55x55 outputs


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def test_inspect_alexnet_conv1_macs_json(capsys):
    code, out, _ = run_cli(capsys, "inspect", "alexnet-conv", "--json")
    assert code == 0
    data = json.loads(out)
    layers = {l["node"]: l for l in data["layers"]}
    assert layers["conv1"]["macs"] == ALEXNET_CONV1_MACS
    assert layers["conv1"]["output_shape"] == [1, 96, 55, 55]
    assert layers["conv1"]["params"] == 96 * 3 * 11 * 11 + 96
    assert data["totals"]["macs"] == sum(l["macs"] for l in data["layers"])
    assert data["outputs"][0]["shape"] == [1, 256, 6, 6]


def test_inspect_table_has_conv1_row_and_totals(capsys):
    code, out, _ = run_cli(capsys, "inspect", "alexnet-conv")
    assert code == 0
    conv1 = next(line for line in out.splitlines() if "conv1" in line)
    assert "105,415,200" in conv1 and "Conv" in conv1
    assert "total" in out


def test_inspect_onnx_file(capsys, tmp_path):
    path = tmp_path / "jet.onnx"
    code, out, _ = run_cli(capsys, "zoo", "jet-mlp", "-o", str(path))
    assert code == 0 and path.exists()
    onnx.checker.check_model(onnx.load(str(path)))
    code, out, _ = run_cli(capsys, "inspect", str(path), "--json")
    data = json.loads(out)
    assert [l["op_type"] for l in data["layers"]] == ["Dense", "Relu", "Dense", "Relu", "Dense", "Relu", "Dense", "Softmax"]
    assert data["totals"]["macs"] == 16 * 64 + 64 * 32 + 32 * 32 + 32 * 5


def test_zoo_list_and_hardware_json(capsys):
    code, out, _ = run_cli(capsys, "zoo", "--json")
    assert {m["name"] for m in json.loads(out)} >= {"alexnet-conv", "vgg16-conv", "resnet18", "jet-mlp", "lstm-small", "digits-cnn"}
    code, out, _ = run_cli(capsys, "hardware", "--json")
    rows = json.loads(out)
    assert {"part", "board", "cpu", "gpu", "link"} <= {r["kind"] for r in rows}
    assert any(r["name"] == "zynq7035" for r in rows)
    code, out, _ = run_cli(capsys, "hardware")
    assert "xc7z035" in out and "srio-10g" in out


@pytest.mark.parametrize("argv, needle", [
    (["inspect", "no-such-model"], "neither an existing .onnx file nor a zoo model"),
    (["inspect", "missing.onnx"], "missing.onnx: no such file"),
    (["zoo", "no-such-model", "-o", "x.onnx"], "unknown zoo model 'no-such-model'"),
    (["zoo", "jet-mlp"], "say where to write"),
])
def test_user_errors_are_one_line_and_exit_nonzero(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    assert needle in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err


def test_console_script_runs_as_a_process(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "conveyor.cli", "inspect", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "bad.onnx" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_quantize_reports_layers_and_accuracy(capsys):
    code, out, _ = run_cli(capsys, "quantize", "digits-cnn", "--precision", "ap_fixed<16,6>",
                           "--precision", "ap_fixed<8,3>", "--data", "digits", "--json")
    assert code == 0
    reports = json.loads(out)["reports"]
    assert [r["precision"] for r in reports] == ["ap_fixed<16,6>", "ap_fixed<8,3>"]
    good, bad = reports
    assert good["samples"] == 360
    assert good["accuracy"] >= good["float_accuracy"] - 0.01          # the bar: <= 1 point lost
    assert sum(l["overflow"] for l in bad["layers"]) > 0                # 8 bits overflow in conv2
    conv1 = good["layers"][0]
    assert conv1["node"] == "conv1" and conv1["min"] < 0 < conv1["max"] and conv1["max_abs_error"] > 0


def test_quantize_sweep_draws_accuracy_vs_width(capsys, tmp_path):
    svg = tmp_path / "sweep.svg"
    code, out, _ = run_cli(capsys, "quantize", "digits-cnn", "--precision", "ap_fixed<16,6,AP_RND_CONV,AP_SAT>",
                           "--sweep", "6:10", "--data", "digits", "-n", "60", "--plot", str(svg))
    assert code == 0
    assert "ap_fixed<10,6,AP_RND_CONV,AP_SAT>" in out and "float32" in out
    text = svg.read_text()
    assert text.startswith("<svg") and text.count("<circle") == 5 and "ap_fixed&lt;W,6,AP_RND_CONV,AP_SAT&gt;" in text


@pytest.mark.parametrize("argv, needle", [
    (["quantize", "digits-cnn"], "say which precision"),
    (["quantize", "digits-cnn", "--precision", "ap_fixed<16,6>", "--sweep", "6:10"], "labelled data"),
    (["quantize", "digits-cnn", "--precision", "float<8>"], "ap_fixed"),
    (["quantize", "digits-cnn", "--precision", "ap_fixed<16,6>", "--data", "nope.npz"], "no such file"),
])
def test_quantize_user_errors(capsys, argv, needle):
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and needle in err


def test_plan_writes_plan_and_report_and_compares_baselines(capsys, tmp_path):
    out_plan, report = tmp_path / "plan.json", tmp_path / "plan.html"
    code, out, _ = run_cli(capsys, "plan", "alexnet-conv", "--cluster", "zynq7035:4:srio-10g",
                           "--precision", "ap_fixed<8,3>", "-o", str(out_plan), "--report", str(report))
    assert code == 0
    assert "against the baselines" in out and "dichotomy" in out and "items/s" in out
    from conveyor import Plan

    plan = Plan.load(out_plan)
    assert len(plan.stages) == 4 and plan.method == "conveyor" and plan.interval_s > 0
    html = report.read_text()
    assert "<svg" in html and "dichotomy" in html and "conveyor&#x27;s bottleneck" in html


def test_plan_json_and_cluster_file(capsys, tmp_path):
    cluster = tmp_path / "c.yaml"
    cluster.write_text("name: two\ntopology: chain\nlink: aurora-10g\ndevices:\n"
                       "  - {name: a, board: zcu102}\n  - {name: b, board: zcu102}\n")
    code, out, _ = run_cli(capsys, "plan", "digits-cnn", "--cluster", str(cluster), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["plan"]["cluster"]["name"] == "two"
    assert set(data["baselines"]) == {"equal", "dichotomy", "greedy"}


@pytest.mark.parametrize("argv, needle", [
    (["plan", "alexnet-conv", "--cluster", "zynq7035"], "BOARD:K"),
    (["plan", "alexnet-conv", "--cluster", "nosuchboard:2"], "unknown board"),
    (["plan", "vgg16-conv", "--cluster", "pynq-z2:2:eth-1g"], "7 such devices (pynq-z2) would hold it"),
])
def test_plan_user_errors(capsys, argv, needle):
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and needle in err


def test_run_executes_a_plan_and_reports_accuracy(capsys, tmp_path):
    plan_path = tmp_path / "plan.json"
    code, _, _ = run_cli(capsys, "plan", "digits-cnn", "--cluster", "zcu102:2:aurora-10g", "-o", str(plan_path))
    assert code == 0
    code, out, _ = run_cli(capsys, "run", str(plan_path), "--model", "digits-cnn", "--inputs", "digits", "-n", "40", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["completed"] == 40 and stats["failed"] == 0
    assert stats["accuracy"] >= 0.9
    assert stats["latency_p99_s"] >= stats["latency_p50_s"] > 0
    code, _, err = run_cli(capsys, "run", str(plan_path), "--model", "jet-mlp")
    assert code == 1 and "fingerprint" in err


def test_run_paced_at_batch_1_reports_against_the_stretched_plan(capsys, tmp_path):
    plan_path = tmp_path / "plan.json"
    assert run_cli(capsys, "plan", "jet-mlp", "--cluster", "zcu102:2:aurora-10g", "-o", str(plan_path))[0] == 0
    interval = json.loads(plan_path.read_text())["interval_s"]
    scale = 0.005 / interval  # about 5 ms per item
    code, out, _ = run_cli(capsys, "run", str(plan_path), "--model", "jet-mlp", "-n", "6", "--paced",
                           "--time-scale", str(scale), "--in-flight", "1", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["paced"] and stats["time_scale"] == pytest.approx(scale) and stats["max_in_flight"] == 1
    assert stats["predicted_interval_s"] == pytest.approx(0.005)
    assert stats["latency_p50_s"] >= stats["predicted_latency_s"] * (1 - 1e-6)  # never ahead of the plan
    assert all("overruns" in s for s in stats["stages"])
    code, _, err = run_cli(capsys, "run", str(plan_path), "--model", "jet-mlp", "--time-scale", "0")
    assert code != 0 and "time-scale" in err
