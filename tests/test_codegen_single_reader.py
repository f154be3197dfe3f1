"""io_parallel DATAFLOW tops give every array one writer and one reader (codegen/single_reader.py):
a value several layers read is copied once per reader by its own clone process; the C simulation
stays equal to the emulator (the same values flow)."""

from __future__ import annotations

import re

import numpy as np
import torch

from conveyor.cli import _resolve_cluster
from conveyor.codegen.single_reader import one_reader_per_array
from conveyor.frontends.torch import from_torch
from conveyor.planner import plan
from test_codegen_ops import NARROW, Q16, _check, _mobile_fire, _Skip, _x


def _top_uses(top_cpp: str) -> dict[str, int]:
    """Per array declared in the top function, how many call statements name it (writer + readers)."""
    body = top_cpp[top_cpp.index("#pragma HLS DATAFLOW"):]
    arrays = re.findall(r"^\s+\w+ (\w+)\[\d+\];$", body, re.M)
    calls = [s for s in body.splitlines() if re.match(r"^\s+[\w:]+(<[^()]*>)?\(.*\);", s)]
    return {a: sum(bool(re.search(rf"\b{a}\b", s)) for s in calls) for a in arrays}


def test_a_value_read_twice_gets_one_copy_per_reader(tmp_path):
    """The mobilenet block's residual Add and the fire module's squeeze output are each read by two
    layers: two clones, every array named by exactly two statements, C simulation bit-exact."""
    graph = _mobile_fire()
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    _check(tmp_path, graph, p, _x(60, 3))
    top = (tmp_path / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()
    uses = _top_uses(top)
    assert uses and set(uses.values()) == {2}, {a: n for a, n in uses.items() if n != 2}
    assert top.count("#pragma HLS INLINE off\n    // ") >= 2 and len(re.findall(r"^    clone_\w+\(", top, re.M)) == 2


def test_a_value_computed_on_and_passed_on_is_cloned_across_boards(tmp_path):
    """_Skip on 3 boards: the first board's `a` is both computed on and sent on; the last board
    reads the crossing `a` in its Add. Every board: one reader per array, chained csim bit-exact."""
    torch.manual_seed(1)
    graph = from_torch(_Skip().eval(), torch.zeros(1, 1, 4, 4))
    convs = [n.name for n in graph.nodes if n.op_type == "Conv"]
    p = plan(graph, _resolve_cluster("zynq7035:3"), precision=NARROW, method="manual", cuts=convs[1:3])
    _check(tmp_path, graph, p, np.random.default_rng(4).normal(size=(100, 1, 4, 4)) * 2)
    for b in ("fpga0", "fpga1", "fpga2"):
        uses = _top_uses((tmp_path / b / "firmware" / f"{b}_top.cpp").read_text())
        assert set(uses.values()) == {2}, (b, uses)
    assert "clone_" in (tmp_path / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()


def test_a_chain_is_left_as_written():
    lines = ["    a_t a[4];", "    conveyor::unpack<64, a_t, 4>(link_in, a);", "    b_t b[4];",
             "    layer0_fc(a, b);  // fc", "    conveyor::pack<64, b_t, 4>(b, link_out, true);"]
    assert one_reader_per_array(lines) == (lines, [])


def test_readers_of_one_array_each_get_their_own_copy():
    lines = ["    a_t a[4];", "    conveyor::unpack<64, a_t, 4>(link_in, a);", "    b_t b[4];",
             "    layer0_relu(a, b);", "    c_t c[4];", "    layer1_add(a, b, c);  // add",
             "    conveyor::pack<64, a_t, 4>(a, link_out, false);", "    conveyor::pack<64, c_t, 4>(c, link_out, true);"]
    out, fns = one_reader_per_array(lines)
    assert len(fns) == 1 and fns[0].startswith("static void clone_a(a_t a[4], a_t a_r0[4], a_t a_r1[4], a_t a_r2[4])")
    assert out[1] == "    conveyor::unpack<64, a_t, 4>(link_in, a);" and out[2].startswith("    a_t a_r0[4];\n#pragma")
    assert "    clone_a(a, a_r0, a_r1, a_r2);" in out
    assert "    layer0_relu(a_r0, b);" in out and "    layer1_add(a_r1, b, c);  // add" in out
    assert "    conveyor::pack<64, a_t, 4>(a_r2, link_out, false);" in out
