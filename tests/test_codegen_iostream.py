"""io_stream firmware (codegen/stream.py, include/conveyor_linebuf.h): layers connected by FIFOs
of pixels, line-buffer convolutions and pools, clone_stream for values read twice with the skip
FIFO sized for its delay. Each board's C simulation (g++) equals the emulator bit for bit; the
bounded-FIFO build (every FIFO at exactly its stated depth, one thread per process) finishes,
and one pixel less on a skip FIFO deadlocks."""

from __future__ import annotations

import numpy as np
import pytest
from test_codegen_csim import NARROW, Q16, _digits, _plan

from conveyor.codegen import compile as compile_plan
from conveyor.codegen.csim import compare, run_chain


def _check_stream(tmp_path, graph, p, x, io_type="io_stream"):
    manifest = compile_plan(p, graph, tmp_path, io_type=io_type)
    assert manifest["io_type"] == "io_stream" and all(b["io_type"] == "io_stream" for b in manifest["boards"])
    feeds = {graph.input_names[0]: x}
    env, runs = run_chain(tmp_path, feeds)
    bad = compare(graph, p.precision, feeds, runs)
    assert bad is None, str(bad)
    out = graph.output_names[0]
    want = graph.with_batch(len(x)).run(x.reshape((len(x), *graph.inputs[0].shape[1:])), precision=p.precision)[out]
    np.testing.assert_array_equal(env[out], np.asarray(want, np.float64).reshape(len(x), -1))
    return manifest, runs


def test_digits_cnn_one_board_q16(tmp_path):
    graph, p = _plan("digits-cnn", 1, Q16)
    manifest, _ = _check_stream(tmp_path, graph, p, _digits(200))
    top = (tmp_path / "fpga0" / "firmware" / "fpga0_top.cpp").read_text()
    assert "conveyor::conv_2d_stream<" in top and "conveyor::maxpool_2d_stream<" in top and "nnet::conv_2d_cl" not in top
    assert "#pragma HLS STREAM variable=s_t_conv1 depth=2" in top
    assert {f["fifo"] for f in manifest["boards"][0]["fifos"]} >= {"s_t_conv1", "s_t_flatten"}


def test_digits_cnn_two_boards_narrow(tmp_path):
    # the cut carries pool1's 4-D value: channels first on the link, pixels inside each board
    graph, p = _plan("digits-cnn", 2, NARROW, cuts=["pool1"])
    manifest, _ = _check_stream(tmp_path, graph, p, _digits(200))
    assert manifest["boards"][1]["ports"][0]["tensors"][0]["items"] == 8 * 4 * 4
    assert manifest["boards"][0]["ports"][1]["stream"].startswith("hls::stream<ap_axiu<64,0,0,")
