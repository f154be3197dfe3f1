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
