"""ROM initialisation for synthesis (codegen/weights_rom.py): every on-chip weight written as its
exact bit pattern through ap_fixed's bit-level constructor, in the branch Vitis HLS takes
(`__SYNTHESIS__`). The open-source ap_types refuse `-D__SYNTHESIS__` under g++ (ap_common.h:
"does not support synthesis"), so the same branch is compiled here with `-DCONVEYOR_ROM_WEIGHTS`
and the board's C simulation run on it, with no weight files at hand: its outputs equal the
emulator's (and the file-loading build's) bit for bit. Synthesis itself is not run here."""

from __future__ import annotations

import re
import subprocess

import numpy as np

import conveyor.codegen.board as board_mod
from conveyor.cli import _resolve_cluster
from conveyor.codegen import compile as compile_plan
from conveyor.codegen.csim import _compiler, _gxx, compare, run_board
from conveyor.codegen.weights_rom import bit_patterns
from conveyor.planner import plan

NARROW = {"default": "ap_fixed<10,4,AP_RND,AP_SAT>", "accum": "ap_fixed<14,6,AP_RND,AP_SAT>"}


def _small_mlp():
    import torch

    from conveyor.frontends.torch import from_torch

    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.ReLU(), torch.nn.Linear(24, 5))
    return from_torch(m.eval(), torch.zeros(1, 16))


def _rom_values(header) -> np.ndarray:
    return np.array([int(h, 16) for h in re.findall(r"\((0x[0-9a-f]+)\)", header.read_text())], dtype=np.uint64)


def test_rom_branch_runs_bit_exact_without_weight_files(tmp_path, monkeypatch):
    monkeypatch.setattr(board_mod, "HEADER_WEIGHTS_MAX", 256)   # some weight sets to binary files too
    graph = _small_mlp()   # g++ spends ~3 s CPU per 1,000 ap_fixed initialisers (why csim loads files)
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=NARROW)
    manifest = compile_plan(p, graph, tmp_path / "hls")
    board = manifest["boards"][0]
    bdir = tmp_path / "hls" / board["device"]
    weights = bdir / "firmware" / "weights"
    bins = sorted(weights.glob("*.bin"))
    assert bins and sorted(weights.glob("*_rom.h"))
    for b in bins:   # each ROM holds exactly the file's values, as bit patterns of the format's width
        width = int(re.search(r"ap_fixed<(\d+),", (weights / f"{b.stem}_rom.h").read_text()).group(1))
        np.testing.assert_array_equal(_rom_values(weights / f"{b.stem}_rom.h"),
                                      bit_patterns(np.fromfile(b, dtype="<i8"), width))
    exe = tmp_path / "csim_rom"
    r = subprocess.run(_gxx(_compiler(), bdir, "-DCONVEYOR_ROM_WEIGHTS", "-o", str(exe)),
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    x = np.random.default_rng(3).normal(size=(300, 16)) * 2.0
    feeds = {graph.input_names[0]: x}
    empty = tmp_path / "no_weights"
    empty.mkdir()
    out = run_board(exe, board, {k: v.reshape(len(x), -1) for k, v in feeds.items()}, empty)
    bad = compare(graph, p.precision, feeds, [type("R", (), {"device": board["device"], "outputs": out})()])
    assert bad is None, str(bad)


def test_rom_initialiser_keeps_negative_and_extreme_patterns(tmp_path):
    from conveyor.codegen.weights_rom import write_rom

    raw = np.array([-1, -512, 511, 0, 1, -2], dtype=np.int64)
    write_rom(tmp_path / "w_rom.h", "w9", "w_t", raw, 10, "test")
    assert _rom_values(tmp_path / "w_rom.h").tolist() == [0x3FF, 0x200, 0x1FF, 0, 1, 0x3FE]
    raw64 = np.array([-(2**63), 2**63 - 1], dtype=np.int64)
    assert bit_patterns(raw64, 64).tolist() == [2**63, 2**63 - 1]
