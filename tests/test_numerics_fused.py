"""The fused integer kernels (`conveyor.ops.intdot.conv_fused`, taken by `fixed.dot` on
non-observing runs) against the reference: the literal sequential loop of
`fixed.accumulate(..., method="sequential")` followed by the result cast, on random
formats and data. Exact ('auto') and wrapping accumulators (TRN/RND/other rounding of
the products), result casts with every rounding mode and WRAP/SAT/SAT_SYM, Dense, Gemm,
MatMul and Conv (2-D, 1-D, strided, dilated, padded). (hls4ml's own C++ checks the same
kernels through Graph.run in tests/test_numerics_dot.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from conveyor import ops
from conveyor.graph.ir import Graph
from conveyor.graph.tensor import Node, Tensor
from conveyor.numerics.config import NodePrecision
from conveyor.numerics.fixed import ROUNDING_MODES, FixedType
from conveyor.ops import fixed, intdot

pytestmark = pytest.mark.skipif(not intdot.available(), reason="numba (the `fast` extra) is not installed")


def _grid(t: FixedType, shape, rng, shift=0) -> np.ndarray:
    raw = rng.integers(t.raw_min, t.raw_max, size=shape, endpoint=True) >> shift
    return t.from_raw(raw)


def _fmt(rng, max_width=12) -> FixedType:
    w = int(rng.integers(2, max_width + 1))
    return FixedType(w, int(rng.integers(-2, w + 3)), bool(rng.integers(0, 4) > 0))


def _problem(rng, op: str):
    fx, fw, fb = _fmt(rng), _fmt(rng), _fmt(rng)
    if op == "Conv":
        nd = int(rng.integers(1, 3))
        k = int(rng.integers(1, 4))
        attrs = {"pads": [int(rng.integers(0, 2)) for _ in range(2 * nd)],
                 "strides": [int(rng.integers(1, 3)) for _ in range(nd)],
                 "dilations": [int(rng.integers(1, 3)) for _ in range(nd)]}
        node = Node("c", "Conv", ("x", "W", "B"), ("y",), attrs)
        spatial = (7,) * nd
        x = _grid(fx, (fixed._FUSED_MIN_BATCH + 3, 3) + spatial, rng, int(rng.integers(0, 4)))
        w = _grid(fw, (5, 3) + (k,) * nd, rng, int(rng.integers(0, 3)))
        b = _grid(fb, (5,), rng)
    elif op == "Gemm":
        node = Node("g", "Gemm", ("x", "W", "B"), ("y",), {"transB": 1})
        x = _grid(fx, (fixed._FUSED_MIN_ROWS_2D + 1, 6), rng, int(rng.integers(0, 4)))
        w = _grid(fw, (4, 6), rng)
        b = _grid(fb, (4,), rng)
    elif op == "MatMul":
        node = Node("m", "MatMul", ("x", "W"), ("y",))
        x = _grid(fx, (fixed._FUSED_MIN_ROWS_2D + 9, 11), rng, int(rng.integers(0, 4)))
        w = _grid(fw, (11, 3), rng)
        b = None
    else:
        node = Node("d", "Dense", ("x", "W", "B"), ("y",))
        x = _grid(fx, (fixed._FUSED_MIN_ROWS_2D + 10, 13), rng, int(rng.integers(0, 4)))
        w = _grid(fw, (13, 5), rng, int(rng.integers(0, 3)))
        b = _grid(fb, (5,), rng)
    return node, x, w, b, fx, fw, fb


def _accum(rng, fx, fw):
    kind = rng.integers(0, 3)
    if kind == 0:
        return None  # 'auto': exact
    pf = fx.frac_bits + fw.frac_bits
    width = int(rng.integers(4, 30))
    frac = int(rng.integers(pf - 5, pf + 3)) if kind == 1 else pf  # products rounded / on the grid
    return FixedType(width, width - frac, bool(rng.integers(0, 4) > 0), str(rng.choice(ROUNDING_MODES)), "WRAP")


def _result(rng):
    w = int(rng.integers(2, 20))
    signed = bool(rng.integers(0, 4) > 0)
    overflow = str(rng.choice(["WRAP", "SAT", "SAT_SYM"]))
    return FixedType(w, int(rng.integers(-2, w + 2)), signed, str(rng.choice(ROUNDING_MODES)), overflow)


def _reference(spec, node, x, w, b, fx, fw, fb, prec):
    acc = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, prec.accum,
                           method="sequential" if prec.accum is not None else "auto")
    return prec.result.quantize(acc)


@pytest.mark.parametrize("op", ["Dense", "Gemm", "MatMul", "Conv"])
def test_fused_kernel_equals_loop_then_cast(op):
    rng = np.random.default_rng({"Dense": 1, "Gemm": 2, "MatMul": 3, "Conv": 4}[op])
    spec = ops.get(op).run_fixed.spec
    fused = 0
    for _ in range(90):
        node, x, w, b, fx, fw, fb = _problem(rng, op)
        prec = NodePrecision(weight=fw, bias=fb, accum=_accum(rng, fx, fw), result=_result(rng))
        got = fixed._fused_dot(spec, node, x, w, b, fx, fw, fb, prec, None)
        if got is None:
            continue
        fused += 1
        np.testing.assert_array_equal(got, _reference(spec, node, x, w, b, fx, fw, fb, prec),
                                      err_msg=f"{op} {node.attrs} x {fx} w {fw} b {fb} {prec}")
    assert fused >= 50, fused  # the kernel really ran on most cases


def test_graph_run_takes_the_fused_kernel_and_agrees_with_observing_run(monkeypatch):
    """Graph.run (fused) and an observing run (the tap loop and ctx.cast) give the same bits
    on a Conv -> Relu -> Dense net, at hls4ml's defaults and with exact accumulators."""
    rng = np.random.default_rng(7)
    f64 = np.dtype(np.float64)
    nodes = [Node("c", "Conv", ("x", "Wc", "Bc"), ("h",), {"pads": [1, 1, 1, 1]}),
             Node("r", "Relu", ("h",), ("hr",)), Node("f", "Flatten", ("hr",), ("z",)),
             Node("d", "Gemm", ("z", "Wd", "Bd"), ("y",), {"transB": 1})]
    n = fixed._FUSED_MIN_ROWS_2D + 2  # a batch the Gemm's fused kernel takes too
    g = Graph.build("n", nodes, [Tensor("x", (n, 2, 5, 5), f64)], ["y"],
                    {"Wc": rng.standard_normal((4, 2, 3, 3)), "Bc": rng.standard_normal(4),
                     "Wd": rng.standard_normal((3, 100)) * 0.3, "Bd": rng.standard_normal(3)})
    x = rng.standard_normal((n, 2, 5, 5)) * 3
    calls = []
    real = intdot.conv_fused
    monkeypatch.setattr(intdot, "conv_fused", lambda *a, **k: calls.append(k.get("relu")) or real(*a, **k))
    for cfg in ({"default": "hls4ml:ap_fixed<16,6>"}, {"default": "ap_fixed<12,4,AP_RND,AP_SAT>"},
                {"default": "ap_fixed<10,4>", "accum": "ap_fixed<12,4,AP_RND_CONV>"}):
        fast = g.run(x, precision=cfg)["y"]
        from conveyor.graph.quantized import emulator_for

        slow, _ = emulator_for(g, cfg).run({"x": x}, observe=True)
        np.testing.assert_array_equal(fast, slow["y"], err_msg=str(cfg))
    assert len(calls) >= 4, calls  # Conv and Gemm fused in the two lossy-accumulator configs (at least)
    assert any(calls), calls  # and the Relu after the Conv applied in its kernel


@pytest.mark.parametrize("op", ["Relu", "MaxPool"])
def test_selecting_ops_skip_only_identity_casts(op):
    """Relu / MaxPool skip their result cast only when the input format lies inside the
    result's: the bits equal an observing run's (which always casts), for formats inside,
    wider, coarser and narrower."""
    rng = np.random.default_rng(11)
    f64 = np.dtype(np.float64)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]} if op == "MaxPool" else {}
    g = Graph.build("s", [Node("s", op, ("x",), ("y",), attrs)], [Tensor("x", (3, 2, 4, 4), f64)], ["y"], {})
    x = rng.standard_normal((3, 2, 4, 4)) * 8
    from conveyor.graph.quantized import emulator_for

    for result in ("ap_fixed<16,6>", "ap_fixed<20,8>", "ap_fixed<12,6>", "ap_fixed<10,3>", "ap_ufixed<8,3,AP_RND,AP_SAT>"):
        cfg = {"default": "ap_fixed<16,6>", "result": result}
        fast = g.run(x, precision=cfg)["y"]
        slow, _ = emulator_for(g, cfg).run({"x": x}, observe=True)
        np.testing.assert_array_equal(fast, slow["y"], err_msg=result)


def test_accumulate_of_a_batch_takes_the_kernel_and_equals_the_loop(monkeypatch):
    """`fixed.accumulate` (the recurrent layers' matrix products) on a batch with a wrapping
    accumulator: the fused kernel's accumulator values equal the literal loop's."""
    rng = np.random.default_rng(12)
    spec = ops.get("Dense").run_fixed.spec
    calls = []
    real = intdot.conv_fused
    monkeypatch.setattr(intdot, "conv_fused", lambda *a, **k: calls.append(1) or real(*a, **k))
    node = Node("d", "Dense", ("x", "W", "B"), ("y",))
    for _ in range(40):
        fx, fw, fb = _fmt(rng), _fmt(rng), _fmt(rng)
        x = _grid(fx, (fixed._FUSED_MIN_ROWS_2D + 5, 9), rng, int(rng.integers(0, 4)))
        w, b = _grid(fw, (9, 4), rng), _grid(fb, (4,), rng)
        acc = _accum(rng, fx, fw) or FixedType(20, 8)
        got = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, acc, in_range=True)
        want = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, acc, method="sequential")
        np.testing.assert_array_equal(got, want, err_msg=f"x {fx} w {fw} b {fb} accum {acc}")
        exact = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, None, in_range=True)  # 'auto'
        np.testing.assert_array_equal(exact, x @ w + b)  # float64 exact at these sizes
    assert len(calls) >= 60, len(calls)


@pytest.mark.parametrize("relu", [True, False])
def test_conv_kernel_pools_a_following_max_pool_and_agrees_with_observing_run(monkeypatch, relu):
    """Conv [-> Relu] -> MaxPool 2x2/2: the fused kernel pools too (odd conv outputs drop
    their last row and column, as floor mode does) and gives the bits of an observing run
    (Conv, Relu, MaxPool one by one); a MaxPool with other windows stays a node of its own."""
    rng = np.random.default_rng(21)
    f64 = np.dtype(np.float64)
    calls = []
    real = intdot.conv_fused
    monkeypatch.setattr(intdot, "conv_fused", lambda *a, **k: calls.append(k.get("pool")) or real(*a, **k))
    from conveyor.graph.quantized import emulator_for

    for spatial, pool_attrs, fused in (((9, 9), {}, True), ((8, 7), {}, True),
                                       ((8, 8), {"strides": [1, 1]}, False), ((8, 8), {"pads": [1, 1, 1, 1]}, False)):
        nodes = [Node("c", "Conv", ("x", "Wc", "Bc"), ("h",), {})]
        t = "h"
        if relu:
            nodes.append(Node("r", "Relu", ("h",), ("hr",)))
            t = "hr"
        nodes += [Node("p", "MaxPool", (t,), ("hp",), {"kernel_shape": [2, 2], **pool_attrs}),
                  Node("f", "Flatten", ("hp",), ("z",))]
        if "strides" not in pool_attrs:
            nodes[-2].attrs["strides"] = [2, 2]
        g = Graph.build("n", nodes, [Tensor("x", (37, 3) + spatial, f64)], ["z"],
                        {"Wc": rng.standard_normal((5, 3, 3, 3)), "Bc": rng.standard_normal(5)})
        x = rng.standard_normal((37, 3) + spatial) * 3
        for cfg in ({"default": "hls4ml:ap_fixed<16,6>"}, {"default": "ap_fixed<12,4,AP_RND,AP_SAT>"},
                    {"default": "ap_fixed<10,4>", "accum": "auto"}):
            calls.clear()
            fast = g.run(x, precision=cfg)["z"]
            slow, _ = emulator_for(g, cfg).run({"x": x}, observe=True)
            np.testing.assert_array_equal(fast, slow["z"], err_msg=f"{spatial} {pool_attrs} {cfg}")
            assert calls == [fused], (spatial, pool_attrs, cfg, calls)
