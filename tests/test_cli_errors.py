"""Every command fed the bad inputs a new user tries: exit 1, one line on stderr, no traceback
(issue 13). Plans are made once per module on small models; most cases go through main()."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conveyor.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def assert_one_line_error(code, err, needle):
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def jet_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("plans") / "jet.json"
    with pytest.raises(SystemExit) as e:
        main(["plan", "digits-cnn", "--cluster", "zcu102:2:aurora-10g", "-o", str(path)])
        raise SystemExit(0)
    assert (e.value.code or 0) == 0
    return path


def _edited(tmp_path, plan_path, edit) -> str:
    data = json.loads(plan_path.read_text())
    edit(data)
    out = tmp_path / "edited.json"
    out.write_text(json.dumps(data))
    return str(out)


def _swap(d):
    # the plan's layers cut in two stages, then the stages put in the wrong order
    first = d["stages"][0]
    mid = len(first["layers"]) // 2
    late = {**first, "layers": first["layers"][mid:], "device": "fpga1", "link_out": None}
    d["stages"] = [late, {**first, "layers": first["layers"][:mid]}]


def _device(d):
    d["stages"][0]["device"] = "fpga9"


def _parallelism(d):
    layer = d["stages"][0]["layers"][0]
    d["stages"][0]["parallelism"][layer] = -4


def _interval(d):
    d["interval_s"] = -1.0


@pytest.mark.parametrize("edit, needle", [
    (_swap, "stages must follow the graph's order"),
    (_device, "stages[0].device 'fpga9'"),
    (_parallelism, ".parallelism["),
    (_interval, "interval_s -1.0"),
])
def test_hand_edited_plan_is_refused_naming_the_field(capsys, tmp_path, jet_plan, edit, needle):
    code, _, err = run_cli(capsys, "run", _edited(tmp_path, jet_plan, edit), "--model", "digits-cnn", "-n", 2)
    assert_one_line_error(code, err, needle)


def test_run_bad_inputs(capsys, tmp_path, jet_plan):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 7), np.float32))
    code, _, err = run_cli(capsys, "run", jet_plan, "--model", "digits-cnn", "--inputs", wrong)
    assert_one_line_error(code, err, "digits-cnn takes samples of shape")
    objs = tmp_path / "obj.npy"
    np.save(objs, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    code, _, err = run_cli(capsys, "run", jet_plan, "--model", "digits-cnn", "--inputs", objs)
    assert_one_line_error(code, err, "not a numeric array file")
    for n in ("-1", "0"):
        code, _, err = run_cli(capsys, "run", jet_plan, "--model", "digits-cnn", "-n", n)
        assert_one_line_error(code, err, "-n")  # click's usage error, on one line


def test_quantize_npy_data_and_sample_counts(capsys, tmp_path):
    good = tmp_path / "x.npy"
    np.save(good, np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32))
    code, out, err = run_cli(capsys, "quantize", "jet-mlp", "--precision", "ap_fixed<16,6>", "--data", good, "--json")
    assert code == 0, err
    assert json.loads(out)["reports"][0]["samples"] == 4
    for n in ("0", "-1"):
        code, _, err = run_cli(capsys, "quantize", "jet-mlp", "--precision", "ap_fixed<16,6>", "-n", n)
        assert_one_line_error(code, err, "-n")


def test_plan_report_for_host_stage_plan(capsys, tmp_path):
    cluster = tmp_path / "c.yaml"
    cluster.write_text("name: het\ntopology: chain\nlink: pcie3-x16\ndevices:\n"
                       "  - {name: host, host: xeon-gold-6248}\n  - {name: f, board: zcu102}\n")
    report = tmp_path / "r.html"
    code, _, err = run_cli(capsys, "plan", "digits-cnn", "--cluster", cluster, "--report", report)
    assert code == 0, err
    assert report.stat().st_size > 0 and "</html>" in report.read_text()


def test_plan_report_for_overlay_plan(capsys, tmp_path):
    report = tmp_path / "o.html"
    code, _, err = run_cli(capsys, "plan", "jet-mlp", "--cluster", "zcu102:2", "--arch", "overlay", "--report", report)
    assert code == 0, err
    assert report.stat().st_size > 0 and "</html>" in report.read_text()


def test_profile_without_onnxruntime_is_one_line(tmp_path):
    # a real process where onnxruntime cannot be imported (a None entry in sys.modules)
    code = ("import sys; sys.modules['onnxruntime'] = None; from conveyor.cli import main; "
            "main(['profile', 'jet-mlp'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "conveyor[profile]" in r.stderr, r.stderr


def test_run_reads_plan_json_output(capsys, tmp_path, jet_plan):
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"plan": json.loads(jet_plan.read_text()), "baselines": {}}))
    code, out, err = run_cli(capsys, "run", wrapped, "--model", "digits-cnn", "-n", 3, "--json")
    assert code == 0, err
    assert json.loads(out)["completed"] == 3


def test_options_that_need_another_are_refused(capsys, jet_plan):
    code, _, err = run_cli(capsys, "run", jet_plan, "--model", "digits-cnn", "--time-scale", 5)
    assert_one_line_error(code, err, "add --paced")
    code, _, err = run_cli(capsys, "quantize", "jet-mlp", "--precision", "ap_fixed<16,6>", "--plot", "x.svg")
    assert_one_line_error(code, err, "--sweep")


def test_plan_config_rejects_a_node_the_graph_lacks(capsys, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text('default: "ap_fixed<16,6>"\nnodes:\n  no_such_layer: "ap_fixed<8,3>"\n')
    code, _, err = run_cli(capsys, "plan", "jet-mlp", "--cluster", "zcu102:2", "--config", cfg)
    assert_one_line_error(code, err, "no_such_layer")
    code, _, err = run_cli(capsys, "quantize", "jet-mlp", "--config", cfg)
    assert_one_line_error(code, err, "no_such_layer")


def test_plan_report_lists_layer_engines_and_weight_location_when_present(jet_plan):
    from dataclasses import replace

    from conveyor.plan import Plan
    from conveyor.reports.plan_report import engine_rows, render

    plan = Plan.load(jet_plan)
    head, rows = engine_rows(plan)
    # the planner records where every layer's weights live (jet-mlp fits on chip)
    assert head == ["layer", "stage", "parallelism", "interval", "weights in", "weight bandwidth"]
    assert [r[0] for r in rows] == [l for s in plan.stages for l in s.layers]
    first = plan.stages[0]
    assert rows[0][2] == f"{first.parallelism[first.layers[0]]:,}"
    assert rows[0][4] == "on_chip"
    # a stage whose first layer streams its weights from DRAM
    stage = replace(first, weights_in={**first.weights_in, first.layers[0]: "dram"},
                    weight_bandwidth_Bps={**first.weight_bandwidth_Bps, first.layers[0]: 12.8e9})
    plan2 = replace(plan, stages=(stage,) + plan.stages[1:])
    head, rows = engine_rows(plan2)
    assert head[-2:] == ["weights in", "weight bandwidth"]
    assert rows[0][-2:] == ["dram", "12.8 GB/s"]
    assert "<h2>Layer engines</h2>" in render(plan2, {})


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, jet_plan):
    """The files a new user gets wrong, made once: a wrong-shape and an object .npy, an empty
    .npy, broken JSON and YAML, a JSON that is no plan, a plan naming a device the cluster lacks,
    and a compiled HLS directory (for csim)."""
    d = tmp_path_factory.mktemp("bad")
    np.save(d / "wrong.npy", np.zeros((3, 7), np.float32))
    np.save(d / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (d / "empty.npy").write_text("")
    (d / "bad.json").write_text("{not json")
    (d / "bad.yaml").write_text("devices: [")
    (d / "notplan.json").write_text('{"a": 1}')
    data = json.loads(jet_plan.read_text())
    data["stages"][0]["device"] = "fpga9"
    (d / "fpga9.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit) as e:
        main(["compile", str(jet_plan), "--model", "digits-cnn", "-o", str(d / "hls")])
        raise SystemExit(0)
    assert (e.value.code or 0) == 0
    return d


P = "ap_fixed<16,6>"
SWEEP = [  # (argv with {d} for the bad files' folder and {plan} for a good plan, what the line names)
    (["inspect", "nosuch"], "neither an existing .onnx file nor a zoo model"),
    (["inspect", "{d}/bad.json"], "bad.json"),
    (["quantize", "digits-cnn", "--precision", "ap_fixd<16,6>"], "--precision ap_fixd<16,6>: not a number format"),
    (["quantize", "digits-cnn", "--precision", "mx:fp9"], "MX element 'fp9'"),
    (["quantize", "digits-cnn", "--precision", P, "--data", "{d}/wrong.npy"], "takes samples of shape"),
    (["quantize", "digits-cnn", "--precision", P, "--data", "{d}/obj.npy"], "not a numeric array file"),
    (["quantize", "digits-cnn", "--precision", P, "--data", "{d}/empty.npy"], "empty.npy"),
    (["quantize", "digits-cnn", "--precision", P, "-n", "0"], "'-n'"),
    (["quantize", "digits-cnn", "--precision", P, "-n", "-1"], "'-n'"),
    (["quantize", "digits-cnn", "--config", "{d}/bad.yaml"], "not valid YAML"),
    (["quantize", "digits-cnn", "--config", "{d}/nosuch.yaml"], "nosuch.yaml"),
    (["quantize", "digits-cnn", "--precision", P, "--sweep", "x"], "expected LO:HI"),
    (["quantize", "digits-cnn", "--precision", "mx:fp8_e4m3", "--sweep", "5:5", "--data", "digits"], "widths [4, 6, 8]"),
    (["profile", "digits-cnn", "--runs", "0"], "--runs 0"),
    (["plan", "digits-cnn", "--cluster", "zcu102"], "BOARD:K[:LINK]"),
    (["plan", "digits-cnn", "--cluster", "nosuch:2"], "nosuch"),
    (["plan", "digits-cnn", "--cluster", "zcu102:2:nolink"], "nolink"),
    (["plan", "digits-cnn", "--cluster", "{d}/bad.yaml"], "bad.yaml"),
    (["plan", "digits-cnn", "--cluster", "zcu102:2", "--precision", "ap_fixed<16>"], "--precision ap_fixed<16>"),
    (["plan", "digits-cnn", "--cluster", "zcu102:2", "--profile", "host"], "DEVICE=FILE"),
    (["run", "{d}/nosuch.json", "--model", "digits-cnn"], "nosuch.json"),
    (["run", "{d}/bad.json", "--model", "digits-cnn"], "not JSON"),
    (["run", "{d}/notplan.json", "--model", "digits-cnn"], "notplan.json"),
    (["run", "{d}/fpga9.json", "--model", "digits-cnn"], "stages[0].device 'fpga9'"),
    (["run", "{plan}", "--model", "jet-mlp"], "the plan was made for model 'digits-cnn'"),
    (["run", "{plan}", "--model", "alexnet-conv", "--inputs", "digits"], "alexnet-conv takes samples of shape"),
    (["run", "{plan}", "--model", "digits-cnn", "--inputs", "{d}/obj.npy"], "not a numeric array file"),
    (["run", "{plan}", "--model", "digits-cnn", "--time-scale", "-1", "--paced"], "'--time-scale'"),
    (["run", "{plan}", "--model", "digits-cnn", "--in-flight", "0"], "'--in-flight'"),
    (["run", "{plan}", "--model", "digits-cnn", "--executor", "nope"], "'--executor'"),
    (["simulate", "{d}/nosuch.json", "--rate", "10"], "nosuch.json"),
    (["simulate", "{d}/fpga9.json", "--rate", "10"], "stages[0].device 'fpga9'"),
    (["simulate", "{plan}"], "say how requests arrive"),
    (["simulate", "{plan}", "--rate", "10", "--requests", "0"], "requests"),
    (["simulate", "{plan}", "--rate", "10", "--fifo-depth", "0"], "fifo_depth"),
    (["simulate", "{plan}", "--arrivals", "{d}/nosuch.csv"], "nosuch.csv"),
    (["compile", "{d}/bad.json", "--model", "digits-cnn", "-o", "{d}/x"], "not JSON"),
    (["compile", "{plan}", "--model", "jet-mlp", "-o", "{d}/x"], "the plan was made for model"),
    (["compile", "{d}/fpga9.json", "--model", "digits-cnn", "-o", "{d}/x"], "'fpga9'"),
    (["csim", "{d}/nosuchdir", "--inputs", "digits"], "does not exist"),
    (["csim", "{d}", "--inputs", "digits"], "no manifest.json"),
    (["csim", "{d}/hls", "--inputs", "{d}/obj.npy"], "not a numeric array file"),
    (["csim", "{d}/hls", "--inputs", "{d}/wrong.npy"], "wrong.npy"),
    (["csim", "{d}/hls", "--inputs", "digits", "-n", "0"], "'-n'"),
    (["report", "{d}/nosuchdir"], "does not exist"),
    (["report", "{d}"], "no manifest.json"),
    (["report", "{d}/hls"], "no board has a csynth.xml"),
    (["serve", "{d}/bad.json", "--model", "digits-cnn"], "not JSON"),
    (["serve", "{d}/fpga9.json", "--model", "digits-cnn"], "'fpga9'"),
    (["serve", "{plan}", "--model", "jet-mlp"], "the plan was made for model"),
    (["serve", "{plan}", "--model", "digits-cnn", "--host", "0.0.0.0"], "--token"),
    (["serve", "{plan}", "--model", "digits-cnn", "--port", "99999"], "'--port'"),
    (["zoo", "nosuch"], "unknown zoo model"),
]


@pytest.mark.parametrize("argv, needle", SWEEP, ids=[" ".join(a[:2] + a[-2:]) for a, _ in SWEEP])
def test_every_command_gives_one_line_for_bad_input(capsys, bad_files, jet_plan, argv, needle):
    argv = [a.format(d=bad_files, plan=jet_plan) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, needle)


def test_the_sweep_covers_every_command():
    from conveyor.cli import cli

    swept = {argv[0] for argv, _ in SWEEP}
    assert set(cli.commands) - {"hardware"} <= swept, set(cli.commands) - swept  # hardware takes no input
