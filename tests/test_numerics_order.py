"""Accumulation order of a Dense after a Flatten: the ONNX order (C, H, W; conveyor's default,
and hls4ml io_stream's) or hls4ml io_parallel's (H, W, C: its RemoveTransposeBeforeFlatten pass
permutes the Dense weights), against hls4ml's own `nnet::dense` C++ (the oracle driver of
tests/test_numerics_dot.py) fed the layout each io type computes on, with a saturating
accumulator, where the order changes results."""

from __future__ import annotations

import numpy as np
import pytest
from hls4ml_headers import hls4ml_driver
from oracle_build import parallel_parts

import test_numerics_dot as dot
from conveyor.graph.ir import Graph
from conveyor.graph.tensor import Node, Tensor

CASE_INDEX = 3  # Dense 24 -> 6, accum ap_fixed<16,4,AP_TRN,AP_SAT>: partial sums clip in order
C, H, W = 6, 2, 2


@pytest.fixture(scope="module")
def driver():
    return hls4ml_driver("hls4ml_dense_oracle", label="hls4ml oracle", sources_dir=dot.DRIVER_DIR,
                         sources=dot.DRIVER_SOURCES, generated=dot._generated_files(parallel_parts(8)),
                         cxxflags=dot.CXXFLAGS)


def _head(case, wk, b, n):
    """Flatten [n, C, H, W] -> Dense: the CNN head ONNX writes (W rows in C, H, W order)."""
    f64 = np.dtype(np.float64)
    nodes = [Node("/flatten/Flatten", "Flatten", ("x",), ("f",), {"axis": 1}),
             Node("/fc/Dense", "Dense", ("f", "W", "B"), ("y",))]
    return Graph.build("head", nodes, [Tensor("x", (n, C, H, W), f64)], ["y"], {"W": wk, "B": b})


def test_dense_after_flatten_sums_in_each_io_types_order(driver):
    case = dot.CASES[CASE_INDEX]
    assert (case.n_in, dot._t(case.acc).overflow) == (C * H * W, "SAT")
    x_flat, wk, b = dot._case_data(case, seed=100 + CASE_INDEX)  # x: [n, 24] in C, H, W order
    n = x_flat.shape[0]
    g = _head(case, wk, b, n)
    x = x_flat.reshape(n, C, H, W)
    base = {"default": case.res, "input": case.x, "weight": case.w, "bias": case.b, "accum": case.acc,
            "result": case.res}
    got = {order: g.run(x, precision={**base, "order": order})["y"]
           for order in ("onnx", "hls4ml_io_stream", "hls4ml_io_parallel")}
    # io_stream / ONNX: nnet::dense over the flattened C, H, W vector with the ONNX weights
    want_stream = dot._hls4ml(driver, CASE_INDEX, case, x_flat, wk, b)
    # io_parallel: the input arrives channels-last (H, W, C) and hls4ml permuted W's rows to match
    perm = np.moveaxis(np.arange(C * H * W).reshape(C, H, W), 0, -1).reshape(-1)
    x_hwc = x.transpose(0, 2, 3, 1).reshape(n, -1)
    want_parallel = dot._hls4ml(driver, CASE_INDEX, case, x_hwc, np.ascontiguousarray(wk[perm]), b)
    np.testing.assert_array_equal(got["onnx"], want_stream)
    np.testing.assert_array_equal(got["hls4ml_io_stream"], want_stream)
    np.testing.assert_array_equal(got["hls4ml_io_parallel"], want_parallel)
    assert (want_parallel != want_stream).sum() > 0  # the order matters here: the test can fail
