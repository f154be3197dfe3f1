"""Every command's tables at 80 columns (COLUMNS=80) on the zoo models: nothing cut with '…',
no line wider than the terminal, every layer name and number format whole (issue 13)."""

from __future__ import annotations

import re

import pytest
from rich.cells import cell_len

from conveyor import zoo
from conveyor.cli import main

FORMAT = "ap_fixed<16,6,AP_RND_CONV,AP_SAT>"


def run80(capsys, monkeypatch, *argv) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
        raise SystemExit(0)
    out = capsys.readouterr()
    assert (e.value.code or 0) == 0, out.err
    return out.out


def assert_fits(out: str, *whole: str, width: int = 80) -> None:
    assert "…" not in out, out
    wide = [line for line in out.splitlines() if cell_len(line) > width]
    assert not wide, "\n".join(wide)
    tokens = {t.strip(",:") for t in re.split(r"[\s│┃;()]+|\.\.", out)}  # cells, both ends of a span "a..b"
    for word in whole:  # a name or format whole on one line, not folded or cut
        assert word in tokens, (word, out)


@pytest.mark.parametrize("model", zoo.names())
def test_inspect_at_80_columns(capsys, monkeypatch, model):
    g = zoo.build(model)
    assert_fits(run80(capsys, monkeypatch, "inspect", model), *{g.layer_names[n.name] for n in g.nodes})


def test_catalog_tables_at_80_columns(capsys, monkeypatch):
    assert_fits(run80(capsys, monkeypatch, "zoo"), *zoo.names())
    assert_fits(run80(capsys, monkeypatch, "hardware"), "zcu102", "xczu9eg", "alveo-u280", "aurora-10g", "xeon-gold-6248")


@pytest.mark.parametrize("model, data, other", [("jet-mlp", None, "ap_fixed<8,3>"),
                                               ("digits-cnn", "digits", "mx:fp8_e4m3"),
                                               ("lstm-small", None, "ap_fixed<12,4>")])
def test_quantize_at_80_columns(capsys, monkeypatch, model, data, other):
    g = zoo.build(model)
    argv = ["quantize", model, "--precision", FORMAT, "--precision", other, "-n", 8] + (
        ["--data", data] if data else [])
    assert_fits(run80(capsys, monkeypatch, *argv), FORMAT, other, *{g.layer_names[n.name] for n in g.nodes})


def test_quantize_mixed_formats_keep_the_format_column(capsys, monkeypatch, tmp_path):
    cfg = tmp_path / "mixed.yaml"
    cfg.write_text(f'default: "{FORMAT}"\nnodes:\n  fc1.matmul: "ap_fixed<24,10,AP_RND_CONV,AP_SAT>"\n')
    out = run80(capsys, monkeypatch, "quantize", "jet-mlp", "--config", cfg, "-n", 8)
    assert_fits(out, FORMAT, "ap_fixed<24,10,AP_RND_CONV,AP_SAT>", "fc_out.matmul")
    assert "result format" in out


def test_plan_run_profile_at_80_columns(capsys, monkeypatch, tmp_path):
    cluster = tmp_path / "het.yaml"
    cluster.write_text("name: het\ntopology: chain\nlink: pcie3-x16\ndevices:\n"
                       "  - {name: host, host: xeon-gold-6248}\n  - {name: f, board: zcu102}\n")
    plan = tmp_path / "p.json"
    out = run80(capsys, monkeypatch, "plan", "digits-cnn", "--cluster", cluster, "-o", plan, "--pareto")
    assert_fits(out, "host", "conv1")
    out = run80(capsys, monkeypatch, "plan", "alexnet-conv", "--cluster", "zynq7035:4:srio-10g")
    assert_fits(out, "conv1", "pool5", "dichotomy")
    assert not re.search(r"│\s+[a-z]+ [a-z]+ [a-z]+[^│]*│\s*$", out, re.M)  # no sentence in a number column
    out = run80(capsys, monkeypatch, "plan", "jet-mlp", "--cluster", "zcu102:2", "--arch", "overlay")
    assert_fits(out, "fc1.matmul", "softmax")
    out = run80(capsys, monkeypatch, "run", plan, "--model", "digits-cnn", "-n", 4, "--paced")
    assert_fits(out, "host", "emulator")
    assert_fits(run80(capsys, monkeypatch, "profile", "jet-mlp", "--runs", 2), "fc1.matmul", "fc_out.matmul")
    out = run80(capsys, monkeypatch, "simulate", plan, "--rate", 100, "--requests", 200)
    assert_fits(out, "host", "interval", "latency")
    assert " ms " not in out or "0.000 ms" not in out  # engineering units, not fixed milliseconds
