"""What a new user meets at the command line (issue 13): sweeps over block formats, hints on
paced runs, host stages on the CPU, progress bars on stderr, tables that fit 80 columns."""

from __future__ import annotations

import json

import pytest

from conveyor.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def test_sweep_takes_mx_formats_as_precision_does(capsys, tmp_path):
    svg = tmp_path / "mx.svg"
    code, out, err = run_cli(capsys, "quantize", "digits-cnn", "--precision", "mx:fp8_e4m3", "--sweep", "4:8",
                             "--data", "digits", "-n", 40, "--plot", svg, "--json")
    assert code == 0, err
    got = [r["precision"] for r in json.loads(out)["reports"]]
    # one element per width OCP MX defines (4, 6, 8), the float kind, exponent closest to e4m3
    assert got == ["mx:fp4_e2m1", "mx:fp6_e3m2", "mx:fp8_e4m3"]
    text = svg.read_text()
    assert text.count("<circle") == 3 and "mx:fpW elements" in text
    code, out, err = run_cli(capsys, "quantize", "digits-cnn", "--precision", "msfp12", "--sweep", "10:12",
                             "--data", "digits", "-n", 40, "--plot", svg, "--json")
    assert code == 0, err
    assert [r["precision"] for r in json.loads(out)["reports"]] == ["msfp10", "msfp11", "msfp12"]
    code, _, err = run_cli(capsys, "quantize", "digits-cnn", "--precision", "mx:int8", "--sweep", "4:6",
                           "--data", "digits", "-n", 40)
    assert code == 1 and "widths [8] only" in err and len(err.strip().splitlines()) == 1, err


@pytest.fixture(scope="module")
def digits_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("plans") / "digits.json"
    with pytest.raises(SystemExit) as e:
        main(["plan", "digits-cnn", "--cluster", "zcu102:2:aurora-10g", "-o", str(path)])
        raise SystemExit(0)
    assert (e.value.code or 0) == 0
    return path


def test_calibrated_time_scale_follows_the_benchmark_rule():
    from types import SimpleNamespace as NS

    from conveyor.runtime.calibrate import calibrated_time_scale

    plan = NS(interval_s=1e-4, stages=[NS(stage_time_s=1e-4, replicas=()), NS(stage_time_s=5e-5, replicas=("b",))])
    # stage 0: 2 * 1 ms / 0.1 ms = 20; stage 1, two replicas: 2 * 1 ms / (2 * 50 us) = 20; cores: 2 * 2 ms / (4 * 0.1 ms)
    assert calibrated_time_scale([1e-3, 1e-3], plan, cores=4) == 20.0
    assert calibrated_time_scale([1e-3, 1e-3], plan, cores=1) == 50.0   # all stages on one core: 40 -> 50
    assert calibrated_time_scale([1.5, 0.0], plan, cores=64) == 50000.0  # 30000, beyond the table: 1-2-5 steps


def test_paced_overrun_prints_the_calibrated_time_scale(capsys, digits_plan):
    from conveyor.plan import Plan
    from conveyor.runtime.calibrate import calibrated_time_scale, measured_compute_s

    code, out, err = run_cli(capsys, "run", digits_plan, "--model", "digits-cnn", "-n", 4, "--paced", "--json")
    assert code == 0, err
    stats = json.loads(out)
    # a sub-microsecond modeled stage emulated in milliseconds: every item overruns at scale 1
    assert sum(s["overruns"] for s in stats["stages"]) > 0
    want = calibrated_time_scale(measured_compute_s(stats["stages"]), Plan.load(digits_plan))
    assert stats["calibrated_time_scale"] == want > 1
    code, out, err = run_cli(capsys, "run", digits_plan, "--model", "digits-cnn", "-n", 4, "--paced")
    assert code == 0, err
    text = " ".join(out.split())
    hint = text[text.index("overran"):text.index("latency p50")]
    assert "--time-scale" in hint and "calibrated" in hint


def test_unpaced_ratio_says_why(capsys, digits_plan):
    code, out, err = run_cli(capsys, "run", digits_plan, "--model", "digits-cnn", "-n", 3)
    assert code == 0, err
    text = " ".join(out.split())  # rich wraps the sentence at the console's width
    line = text[text.index("throughput"):text.index("latency p50")]
    assert "ratio" in line and "unpaced" in line and "per item here" in line and "--paced" in line


def test_backend_cpu_dry_runs_a_gpu_host_plan(capsys, tmp_path):
    import onnxruntime as ort

    cluster = tmp_path / "gpu.yaml"
    cluster.write_text("name: gpuhet\ntopology: chain\nlink: pcie3-x16\ndevices:\n"
                       "  - {name: gpu0, host: t4}\n  - {name: f, board: zcu102}\n")
    plan = tmp_path / "gpu.json"
    code, _, err = run_cli(capsys, "plan", "digits-cnn", "--cluster", cluster, "-o", plan)
    assert code == 0, err
    assert json.loads(plan.read_text())["stages"][0]["device_kind"] == "gpu"  # the planner put conv1 on the GPU
    code, out, err = run_cli(capsys, "run", plan, "--model", "digits-cnn", "--inputs", "digits", "-n", 6,
                             "--backend", "cpu", "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["completed"] == 6 and [s["backend"] for s in stats["stages"]] == ["cpu", "emulator"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # else the GPU stage simply runs
        code, _, err = run_cli(capsys, "run", plan, "--model", "digits-cnn", "-n", 2)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "--backend cpu" in err, err
    for bad, needle in (("tpu", "unknown backend 'tpu'"), ("fpga7=cpu", "no stage on 'fpga7'")):
        code, _, err = run_cli(capsys, "run", plan, "--model", "digits-cnn", "-n", 2, "--backend", bad)
        assert code == 1 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_progress_bar_on_stderr_only_for_a_terminal(capsys, monkeypatch):
    argv = ("quantize", "digits-cnn", "--precision", "ap_fixed<16,6>", "--data", "digits", "-n", 40)
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and err == "", err          # stderr is not a terminal here: no bar
    monkeypatch.setenv("TTY_COMPATIBLE", "1")    # rich: treat stderr as a terminal
    monkeypatch.setenv("TERM", "xterm")
    code, out, err = run_cli(capsys, *argv)
    assert code == 0
    assert "digits-cnn: float and bit-accurate" in err and "40/40" in err and "eta" in err, err
    assert "eta" not in out                      # the result on stdout stays clean
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0 and err == "", err           # --json: no bar even on a terminal
    json.loads(out)


def test_run_progress_bar_on_a_terminal(capsys, monkeypatch, digits_plan):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "xterm")
    code, out, err = run_cli(capsys, "run", digits_plan, "--model", "digits-cnn", "-n", 5)
    assert code == 0 and "local pipeline, 1 stages" not in err
    assert "5/5" in err and "requests" in err and "eta" in err, err
    code, out, err = run_cli(capsys, "run", digits_plan, "--model", "digits-cnn", "-n", 5, "--json")
    assert code == 0 and err == "", err
