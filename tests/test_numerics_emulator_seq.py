"""The emulator's fast paths for sequence models give the bits of the paths they replace: chains
of data-movement steps joined into one (quantized._join_movement), the result cast of a strided
array (numerics/fixed_quantize.py), a Dense over a 3-D input as one 2-D product and small 2-D
products on BLAS rather than the fused integer kernel (ops/fixed.py).

Joined runs are compared with runs that cannot join (fetching every tensor: then each movement
step's output must exist) and with observing runs; products with hls4ml's tap loop
(`accumulate(method="sequential")`)."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor import ops
from conveyor.graph.ir import Graph
from conveyor.graph.quantized import emulator_for
from conveyor.graph.tensor import Node, Tensor
from conveyor.numerics import fixed_quantize as fq
from conveyor.numerics.fixed import FixedType
from conveyor.ops import fixed

PRECISIONS = [
    "ap_fixed<18,8,AP_RND_CONV>",
    "ap_fixed<12,4,AP_RND,AP_SAT>",
    "ap_fixed<10,3>",  # TRN, WRAP
    {"default": "ap_fixed<16,6>", "accum": "ap_fixed<20,8,AP_TRN,AP_SAT>"},
    "hls4ml:ap_fixed<16,6>",
]
F32 = np.dtype(np.float32)


def _attention_like(rng) -> Graph:
    """A projection, then the exporters' head split (Reshape, Unsqueeze, Transpose, Squeeze,
    Gather, Reshape, Transpose), a scale, Q K^T and a merge back (Transpose, Reshape)."""
    t, d, h = 6, 8, 2
    w = {"W": rng.standard_normal((d, 3 * d)).astype(np.float32) * 0.3,
         "B": rng.standard_normal(3 * d).astype(np.float32) * 0.1,
         "s1": np.array([t, 1, 3, d], np.int64), "ax0": np.array([0], np.int64),
         "ax3": np.array([3], np.int64), "i0": np.array(0, np.int64), "i1": np.array(1, np.int64),
         "s2": np.array([t, h, d // h], np.int64), "scale": np.array([0.5], np.float32),
         "s3": np.array([t, d], np.int64), "Wo": rng.standard_normal((d, d)).astype(np.float32) * 0.3}
    nodes = [
        Node("tp0", "Transpose", ("x",), ("xt",), {"perm": [1, 0, 2]}),
        Node("proj", "Dense", ("xt", "W", "B"), ("qkv",)),
        Node("r1", "Reshape", ("qkv", "s1"), ("q1",)),
        Node("u1", "Unsqueeze", ("q1", "ax0"), ("q2",)),
        Node("tp1", "Transpose", ("q2",), ("q3",), {"perm": [3, 1, 2, 0, 4]}),
        Node("sq", "Squeeze", ("q3", "ax3"), ("q4",)),
        Node("gq", "Gather", ("q4", "i0"), ("q",), {"axis": 0}),
        Node("gk", "Gather", ("q4", "i1"), ("k",), {"axis": 0}),
        Node("rq", "Reshape", ("q", "s2"), ("qh",)),
        Node("tq", "Transpose", ("qh",), ("qt",), {"perm": [1, 0, 2]}),
        Node("rk", "Reshape", ("k", "s2"), ("kh",)),
        Node("tk", "Transpose", ("kh",), ("kt",), {"perm": [1, 2, 0]}),
        Node("mq", "Mul", ("qt", "scale"), ("qs",)),
        Node("att", "MatMul", ("qs", "kt"), ("a",)),  # [h, t, t]
        Node("av", "MatMul", ("a", "qt"), ("o",)),    # [h, t, d/h]
        Node("to", "Transpose", ("o",), ("ot",), {"perm": [1, 0, 2]}),
        Node("ro", "Reshape", ("ot", "s3"), ("o2",)),
        Node("out", "Gemm", ("o2", "Wo"), ("y",), {"transB": 1}),
    ]
    return Graph.build("att", nodes, [Tensor("x", (1, t, d), F32)], ["y", "a"], w)


@pytest.mark.parametrize("precision", PRECISIONS, ids=str)
def test_joined_movement_chains_give_the_unjoined_bits(precision):
    rng = np.random.default_rng(3)
    g = _attention_like(rng)
    emu = emulator_for(g, precision)
    emu._steps()
    assert len(emu._joined) < len(emu._plan) - 5, (len(emu._joined), len(emu._plan))  # the chains joined
    every = [t for t in g.tensors if not g.is_weight(t)]
    for scale in (1.0, 4.0, 0.1):
        x = rng.standard_normal((1, 6, 8)).astype(np.float32) * scale
        joined = g.run(x, precision=precision)
        step_by_step = g.run(x, precision=precision, fetch=every)  # every movement output made
        observed, _ = emu.run({"x": x}, observe=True)
        for t in g.output_names:
            np.testing.assert_array_equal(joined[t], step_by_step[t], err_msg=t)
            np.testing.assert_array_equal(joined[t], observed[t], err_msg=t)
        # fetching one tensor a chain hides runs step by step, and gives its values
        hidden = sorted(emu._lost)[0]
        got = g.run(x, precision=precision, fetch=[hidden, "y"])
        np.testing.assert_array_equal(got[hidden], step_by_step[hidden])
        np.testing.assert_array_equal(got["y"], joined["y"])


@pytest.mark.parametrize("rounding", ["RND_CONV", "TRN", "RND", "RND_ZERO"])
@pytest.mark.parametrize("overflow", ["WRAP", "SAT", "SAT_SYM"])
def test_cast_of_a_strided_array_equals_the_contiguous_cast(rounding, overflow):
    rng = np.random.default_rng(len(rounding) + len(overflow))
    t = FixedType(12, 4, True, rounding, overflow)
    for shape, perm in (((4, 8, 6), (0, 2, 1)), ((3, 5, 7, 2), (2, 0, 3, 1)), ((50, 40), (1, 0))):
        base = np.round(rng.standard_normal(shape) * 300) / 64  # a finer grid: casts round
        v = base.transpose(perm)
        assert not v.flags.c_contiguous
        keep = v.copy()
        want = fq.quantize_in_range(t, np.ascontiguousarray(v))
        got = fq.quantize_in_range(t, v)
        if want is None:  # an overflow: both step aside for the general path
            assert got is None
            continue
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
        np.testing.assert_array_equal(v, keep)  # the input untouched
        got_in = fq.quantize_in_range(t, v, inplace=True)  # may not write into a view it cannot own
        np.testing.assert_array_equal(got_in, want)
        np.testing.assert_array_equal(v, keep)


def _grid(t, shape, rng):
    return t.quantize(np.clip(rng.standard_normal(shape) * 2, t.min_value, t.max_value))


@pytest.mark.parametrize("op", ["Dense", "Gemm", "MatMul"])
def test_small_products_equal_the_tap_loop(op):
    """3-D inputs of a Dense (one 2-D product) and 2-D batches below the fused kernel's row count
    (BLAS, then the cast) against hls4ml's loop, exact and lossy accumulators."""
    rng = np.random.default_rng(11)
    spec = ops.get(op).run_fixed.spec
    node = Node("n", op, ("x", "W", "B") if op != "MatMul" else ("x", "W"), ("y",),
                {"transB": 1} if op == "Gemm" else {})
    for i in range(30):
        fx, fw, fb = FixedType(14, 5), FixedType(12, 2, True, "RND_CONV"), FixedType(16, 6)
        shape = [(1, 9, 13), (9, 1, 13), (fixed._FUSED_MIN_ROWS_2D - 1, 13), (3, 13)][i % 4]
        if op == "Gemm":
            shape = shape[-2:] if len(shape) == 2 else (shape[0] * shape[1], 13)
        x = _grid(fx, shape, rng)
        w = _grid(fw, (5, 13) if op == "Gemm" else (13, 5), rng)
        b = None if op == "MatMul" else _grid(fb, (5,), rng)
        for accum in (None, FixedType(22, 8), FixedType(18, 6, True, "RND_CONV", "SAT")):
            got = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, accum, in_range=True)
            want = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, accum if accum is not None else
                                    FixedType(60, 30), method="sequential")
            np.testing.assert_array_equal(got, want, err_msg=f"{op} {shape} {accum}")


@pytest.mark.parametrize("op", ["Dense", "Gemm", "MatMul"])
def test_exact_product_fast_path_equals_accumulate(op, monkeypatch):
    """run_fixed's exact-accumulator shortcut (`fixed._exact_product`) against the same kernel
    with the shortcut off (`accumulate`, then the cast): the same bits, the Relu it may apply
    too; and it really ran."""
    from conveyor.graph.quantized import CastContext
    from conveyor.numerics.config import NodePrecision

    rng = np.random.default_rng(5)
    run = ops.get(op).run_fixed
    node = Node("n", op, ("x", "W", "B") if op != "MatMul" else ("x", "W"), ("y",),
                {"transB": 1} if op == "Gemm" else {})
    calls = []
    real = fixed._exact_product
    monkeypatch.setattr(fixed, "_exact_product", lambda *a: calls.append(1) or real(*a))
    for i in range(24):
        fx, fw, fb = FixedType(14, 5), FixedType(12, 2, True, "RND_CONV"), FixedType(16, 6)
        R = [FixedType(10, 4, True, "RND_CONV", "SAT"), FixedType(9, 3), FixedType(16, 8, True, "RND")][i % 3]
        shape = [(1, 9, 13), (9, 1, 13), (7, 13), (2, 3, 13)][i % 4] if op != "Gemm" else (7, 13)
        x = _grid(fx, shape, rng)
        w = _grid(fw, (5, 13) if op == "Gemm" else (13, 5), rng)
        args = [x, w] + ([] if op == "MatMul" else [_grid(fb, (5,), rng)])
        fmts = [fx, fw] + ([] if op == "MatMul" else [fb])
        prec = NodePrecision(weight=fw, bias=fb, accum=None, result=R)
        for relu in (False, True):
            ctx = CastContext(False)
            ctx.relu_next = relu
            got, gf = run(node, list(args), list(fmts), prec, ctx)
            assert ctx.relu_done == relu
            monkeypatch.setattr(fixed, "_PRODUCT_OPS", frozenset())
            ctx2 = CastContext(False)
            ctx2.relu_next = relu
            want, wf = run(node, list(args), list(fmts), prec, ctx2)
            monkeypatch.setattr(fixed, "_PRODUCT_OPS", frozenset({"Dense", "Gemm", "MatMul"}))
            assert gf == wf
            np.testing.assert_array_equal(got[0], want[0], err_msg=f"{op} {shape} {R} relu={relu}")
            np.testing.assert_array_equal(np.signbit(got[0]), np.signbit(want[0]))
    assert len(calls) >= 40, len(calls)


def test_emulator_for_a_format_string_is_cached_by_its_text():
    """`Graph.run(x, precision="...")` finds its Emulator by the string (no parse per run); the
    same config given another way is the same Emulator."""
    g = _attention_like(np.random.default_rng(1))
    a = emulator_for(g, "ap_fixed<16,6>")
    assert emulator_for(g, "ap_fixed<16,6>") is a
    assert emulator_for(g, {"default": "ap_fixed<16,6>"}) is a
    assert emulator_for(g, "ap_fixed<16,6,AP_RND>") is not a
