"""The planned float Conv (conveyor/ops/conv_float.py): its methods against each other and
against a float64 direct convolution; Graph.run's per-node plans against the ops' plain `run`.
(onnxruntime comparisons of every method: tests/test_ops_conv_pool_norm.py.) The numba kernels
perform the numpy paths' operations: the same bits."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import conveyor.ops.conv_float as cf
from conveyor.graph.ir import Graph
from conveyor.graph.tensor import Node, Tensor
from conveyor.ops import intdot, registry
from conveyor.ops.conv import window_geometry


def _geometry(x_shape, w_shape, attrs):
    node = Node("c", "Conv", ("x", "w"), ("y",), attrs, 17)
    return window_geometry(node, x_shape[2:], w_shape[2:])


def _direct64(x, w, b, geo, group):
    """The float64 direct sum, rounded once: the reference the float64 methods round to."""
    taps, cf._TAPS_VALID = cf._TAPS_VALID, 0.0  # never the per-tap GEMMs: the im2col sum
    small, cf._SMALL_USES = cf._SMALL_USES, {}  # nor the one-pass kernel
    try:
        plan = cf.ConvPlan(x.shape, np.float64, w.astype(np.float64), None if b is None else b.astype(np.float64),
                           geo, group)
    finally:
        cf._TAPS_VALID, cf._SMALL_USES = taps, small
    assert plan.kind in ("im2col", "pointwise", "depthwise")
    return plan(x.astype(np.float64)).astype(np.float32)


@pytest.mark.skipif(not intdot.available(), reason="numba (the `fast`/`test` extra) is not installed")
def test_depthwise_numba_equals_numpy_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(7)
    for _ in range(60):
        nd = int(rng.choice([1, 2, 2, 3]))
        c, mg = int(rng.integers(2, 6)), int(rng.integers(1, 3))
        kernel = [int(rng.integers(1, 4)) for _ in range(nd)]
        if all(k == 1 for k in kernel):
            kernel[0] = 3
        attrs = {"group": c, "strides": [int(rng.integers(1, 3)) for _ in range(nd)],
                 "dilations": [int(rng.integers(1, 3)) for _ in range(nd)],
                 "pads": [int(rng.integers(0, 3)) for _ in range(2 * nd)]}
        spatial = [int(rng.integers((k - 1) * d + 1, (k - 1) * d + 9)) for k, d in zip(kernel, attrs["dilations"])]
        x = rng.standard_normal([int(rng.integers(1, 3)), c] + spatial).astype(np.float32)
        w = rng.standard_normal([c * mg, 1] + kernel).astype(np.float32)
        b = rng.standard_normal(c * mg).astype(np.float32)
        geo = _geometry(x.shape, w.shape, attrs)
        dt = np.float64 if rng.random() < 0.3 else np.float32
        x, w, b = x.astype(dt), w.astype(dt), b.astype(dt)
        with monkeypatch.context() as m:
            m.setattr(cf, "_DW_CHANNELS_LAST", 10 ** 9)  # every plan gets its channels-last kernel
            plan = cf.ConvPlan(x.shape, x.dtype, w, b, geo, c)
        assert plan.kind == "depthwise" and plan.dw_cl is not None
        fast = plan(x)  # channels last (conv_small.DepthwisePlan)
        plan.dw_cl = None
        flat = plan(x)  # _depthwise_flat
        with monkeypatch.context() as m:
            m.setattr(cf, "_depthwise_flat", None)
            slow = plan(x)
        assert fast.dtype == dt
        np.testing.assert_array_equal(flat, slow, err_msg=str(attrs))
        np.testing.assert_array_equal(fast, slow, err_msg=str(attrs))
        np.testing.assert_allclose(fast, _direct64(x, w, b, geo, c), rtol=1e-5, atol=1e-5, err_msg=str(attrs))


def _random_conv(rng, depthwise):
    nd = int(rng.choice([1, 2, 2, 3]))
    kernel = [int(rng.integers(1, 4)) for _ in range(nd)]
    if all(k == 1 for k in kernel):
        kernel[0] = 3
    group = int(rng.choice([1, 1, 2]))
    c = group * int(rng.integers(1, 4))
    if depthwise:
        group = c = int(rng.integers(2, 6))
    m = group * int(rng.integers(1, 3))
    attrs = {"group": group, "strides": [int(rng.integers(1, 3)) for _ in range(nd)],
             "dilations": [int(rng.integers(1, 3)) for _ in range(nd)],
             "pads": [int(rng.integers(0, 3)) for _ in range(2 * nd)]}
    spatial = [int(rng.integers((k - 1) * d + 1, (k - 1) * d + 9)) for k, d in zip(kernel, attrs["dilations"])]
    x = rng.standard_normal([int(rng.integers(1, 3)), c] + spatial).astype(np.float32)
    w = rng.standard_normal([m, c // group] + kernel).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    return x, w, b, attrs


@pytest.mark.skipif(not intdot.available(), reason="numba (the `fast`/`test` extra) is not installed")
def test_im2col_numba_columns_match_numpy_windows(monkeypatch):
    monkeypatch.setattr(cf, "_GRID_WASTE", 1e9)  # the flat-plane path on every small image
    monkeypatch.setattr(cf, "_TAPS_VALID", 0.0)  # and never the per-tap GEMMs
    monkeypatch.setattr(cf, "_SMALL_USES", {})  # nor the one-pass kernel
    rng = np.random.default_rng(11)
    seen = set()
    for _ in range(80):
        x, w, b, attrs = _random_conv(rng, depthwise=False)
        geo = _geometry(x.shape, w.shape, attrs)
        plan = cf.ConvPlan(x.shape, x.dtype, w, b, geo, attrs["group"])
        if plan.kind != "im2col":
            continue
        seen.add(x.ndim - 2)
        fast = plan(x)
        assert fast.dtype == np.float32 and plan.wmat.dtype == np.float32  # one float32 GEMM
        # the same terms per output; BLAS may block the wider GEMM of the phase grid otherwise:
        # float32 accumulation error, at most K u sum |x w| per output (plus the bias' rounding)
        k = w[0].size
        bound = k * 2.0 ** -24 * (np.abs(x).max() * np.abs(w).max() * k + np.abs(b).max()) * 2
        with monkeypatch.context() as m:
            m.setattr(cf, "_im2col_flat", None)
            np.testing.assert_allclose(fast, plan(x), rtol=0, atol=bound, err_msg=str(attrs))
        np.testing.assert_allclose(fast, _direct64(x, w, b, geo, attrs["group"]), rtol=0, atol=bound,
                                   err_msg=str(attrs))
    assert seen == {1, 2, 3}


def test_float32_inputs_sum_in_float32_and_float64_inputs_in_float64():
    """The float reference sums a k x k Conv in float32 (as onnxruntime does); float64 inputs
    keep float64 throughout (a double model)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 64, 9, 9)).astype(np.float32)
    w = rng.standard_normal((8, 64, 3, 3)).astype(np.float32)
    geo = _geometry(x.shape, w.shape, {"pads": [1, 1, 1, 1]})
    p32 = cf.ConvPlan(x.shape, np.float32, w, None, geo, 1)
    p64 = cf.ConvPlan(x.shape, np.float64, w.astype(np.float64), None, geo, 1)
    y32, y64 = p32(x), p64(x.astype(np.float64))
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    # float32 sums of 576 products differ from the float64 ones by float32 accumulation error,
    # more than one rounding of the result would
    assert np.max(np.abs(y32 - y64.astype(np.float32))) > 0
    assert np.mean(y32 != y64.astype(np.float32)) > 0.05
    np.testing.assert_allclose(y32, y64, rtol=0, atol=576 * np.finfo(np.float32).eps * np.abs(y64).max())


def test_graph_run_uses_prepared_kernels_that_match_run():
    rng = np.random.default_rng(0)
    weights = {"wd": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
               "wp": rng.standard_normal((6, 8, 1, 1)).astype(np.float32),
               "w3": rng.standard_normal((4, 6, 3, 3)).astype(np.float32),
               "b3": rng.standard_normal(4).astype(np.float32),
               "shape": np.array([1, -1], np.int64)}
    nodes = [Node("dw", "Conv", ("x", "wd"), ("a",), {"group": 8, "pads": [1, 1, 1, 1], "strides": [2, 2]}, 17),
             Node("pw", "Conv", ("a", "wp"), ("b",), {}, 17),
             Node("c3", "Conv", ("b", "w3", "b3"), ("c",), {"pads": [1, 1, 1, 1]}, 17),
             Node("r", "Reshape", ("c", "shape"), ("y",), {}, 17)]
    g = Graph.build("g", nodes, [Tensor("x", (1, 8, 32, 32), np.dtype(np.float32))], ["y"], weights)
    plan = g._float_plan_unfused
    assert plan is g._float_plan_unfused  # built once per graph
    x = rng.standard_normal((1, 8, 32, 32)).astype(np.float32)
    env = {"x": x, **weights}
    for node in g.nodes:
        env.update(zip(node.outputs, registry.get(node.op_type).run(node, [env[t] for t in node.inputs])))
    got = g.run(x)["y"]
    assert got.shape == (1, 4 * 16 * 16)
    np.testing.assert_array_equal(got, env["y"])
    assert g.run(x, fetch=["a"])["a"].shape == (1, 8, 16, 16)
    again = pickle.loads(pickle.dumps(g))  # a graph that has run still pickles (stage processes)
    np.testing.assert_array_equal(again.run(x)["y"], got)


def test_fused_activations_match_the_unfused_plan_and_fetches_still_see_every_tensor():
    """Graph.run applies a Relu (or constant Clip) in place to the fresh output of the node it
    reads when it is that output's only reader; the values are the op-by-op ones, and fetching
    the tensor fused away runs the unfused plan."""
    rng = np.random.default_rng(1)
    weights = {"w1": rng.standard_normal((6, 4, 3, 3)).astype(np.float32),
               "b1": rng.standard_normal(6).astype(np.float32),
               "w2": rng.standard_normal((6, 6, 1, 1)).astype(np.float32),
               "lo": np.array(0.0, np.float32), "hi": np.array(0.5, np.float32)}
    nodes = [Node("c1", "Conv", ("x", "w1", "b1"), ("a",), {"pads": [1, 1, 1, 1]}, 17),
             Node("r1", "Relu", ("a",), ("ar",), {}, 17),          # fused: a is read by r1 only
             Node("c2", "Conv", ("ar", "w2"), ("b",), {}, 17),
             Node("k2", "Clip", ("b", "lo", "hi"), ("bk",), {}, 17),  # fused
             Node("add", "Add", ("bk", "ar"), ("s",), {}, 17),
             Node("r3", "Relu", ("s",), ("y",), {}, 17),           # fused (s is not an output)
             Node("r4", "Relu", ("b",), ("z",), {}, 17)]           # b has two readers: k2 and r4
    g = Graph.build("g", nodes, [Tensor("x", (1, 4, 8, 8), np.dtype(np.float32))], ["y", "z"], weights)
    plan, fused_away = g._float_plan
    assert (plan, fused_away) == g._float_plan  # built once per graph
    # a and s are never made; b and bk are overwritten by their last readers (r4, the Add)
    assert fused_away == {"a", "s", "b", "bk"} and len(plan) == len(nodes) - 2
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    env = {"x": x, **weights}
    for node in g.nodes:
        env.update(zip(node.outputs, registry.get(node.op_type).run(node, [env[t] for t in node.inputs])))
    got = g.run(x)
    for t in ("y", "z"):
        np.testing.assert_array_equal(got[t], env[t])
    every = g.run(x, fetch=["a", "ar", "b", "bk", "s", "y"])
    for t, v in every.items():
        np.testing.assert_array_equal(v, env[t], err_msg=t)
    assert np.min(env["a"]) < 0  # the fetched pre-activation tensor was not overwritten by the Relu


def test_per_tap_gemms_on_small_images_match_the_float64_direct_sum(monkeypatch):
    """Small images (mostly padding) take one GEMM per tap over the positions it reads inside;
    any stride and dilation, against the float64 direct sum and the im2col path."""
    monkeypatch.setattr(cf, "_TAPS_VALID", 1.01)  # every 2-D one-group conv: the per-tap path
    monkeypatch.setattr(cf, "_SMALL_USES", {})  # (not the one-pass kernel)
    rng = np.random.default_rng(4)
    seen = 0
    for _ in range(60):
        x, w, b, attrs = _random_conv(rng, depthwise=False)
        if x.ndim != 4 or attrs["group"] != 1:
            continue
        geo = _geometry(x.shape, w.shape, attrs)
        plan = cf.ConvPlan(x.shape, x.dtype, w, b, geo, 1)
        if plan.kind != "taps":
            continue
        seen += 1
        got = plan(x)
        k = w[0].size
        bound = k * 2.0 ** -24 * (np.abs(x).max() * np.abs(w).max() * k + np.abs(b).max()) * 2
        np.testing.assert_allclose(got, _direct64(x, w, b, geo, 1), rtol=0, atol=bound, err_msg=str(attrs))
    assert seen >= 10
    geo = _geometry((1, 16, 2, 2), (8, 16, 3, 3), {"pads": [1, 1, 1, 1]})
    monkeypatch.setattr(cf, "_TAPS_VALID", 0.6)
    assert cf.ConvPlan((1, 16, 2, 2), np.float32, np.ones((8, 16, 3, 3), np.float32), None, geo, 1).kind == "taps"
    geo = _geometry((1, 16, 8, 8), (8, 16, 3, 3), {"pads": [1, 1, 1, 1]})
    # im2col (or Winograd)
    assert cf.ConvPlan((1, 16, 8, 8), np.float32, np.ones((8, 16, 3, 3), np.float32), None, geo, 1).kind != "taps"


def test_bit_accurate_conv_plans_are_reused_and_bounded(monkeypatch):
    """The emulator's float sums reuse one ConvPlan per (node, input shape, weights): the same
    outputs, one plan per conv across runs, and held weights kept under the byte bound (a sweep
    over precisions must not pile up a big model's weights)."""
    import conveyor.ops.conv as conv
    from conveyor import zoo

    g = zoo.build("resnet18", size=32)
    x = np.random.default_rng(0).normal(size=g.tensors[g.input_names[0]].shape)
    conv._FIXED_PLANS.clear()
    first = g.run(x, precision="ap_fixed<16,6>")[g.output_names[0]]
    n = len(conv._FIXED_PLANS)
    assert n > 10
    again = g.run(x, precision="ap_fixed<16,6>")[g.output_names[0]]
    assert len(conv._FIXED_PLANS) == n and np.array_equal(first, again)
    monkeypatch.setattr(conv, "_FIXED_PLANS_BYTES", 3 << 20)
    for p in ("ap_fixed<12,5>", "ap_fixed<14,6>", "ap_fixed<18,8>"):
        g.run(x, precision=p)
        assert sum(w.nbytes for w, _ in conv._FIXED_PLANS.values()) <= 3 << 20
    conv._FIXED_PLANS.clear()
    assert np.array_equal(g.run(x, precision="ap_fixed<16,6>")[g.output_names[0]], first)


_ALWAYS_SMALL = {np.dtype(np.float32): 1e9, np.dtype(np.float64): 1e9}


def _exact_conv(x, w, geo, group):
    """The exact sums of an integer-valued x and w: int64 windows times int64 weights."""
    from conveyor.ops.conv import pad_for_windows

    n, c = x.shape[:2]
    m, cg, nd = w.shape[0], w.shape[1], x.ndim - 2
    win = cf.strided_windows(pad_for_windows(x.astype(np.int64), geo, 0), geo, n, group, cg)
    o, k = "opq"[:nd], "rst"[:nd]
    y = np.einsum(f"ngc{o}{k},gmc{k}->ngm{o}", win, w.astype(np.int64).reshape((group, m // group, cg) + w.shape[2:]))
    return y.reshape((n, m) + tuple(geo.out))


@pytest.mark.skipif(not intdot.available(), reason="numba (the `fast`/`test` extra) is not installed")
def test_one_pass_kernel_float32_is_within_float32_accumulation_of_the_direct_sum(monkeypatch):
    """The one-pass kernel (conv_small) on every kind of Conv it may take (1-3-D, groups, strides,
    dilations, padding, batch): float32 sums, within float32 accumulation error of the float64
    direct sum and of the GEMM paths."""
    rng = np.random.default_rng(21)
    seen = set()
    for _ in range(60):
        x, w, b, attrs = _random_conv(rng, depthwise=False)
        if w.shape[1] == 1 and attrs["group"] > 1:
            continue  # depthwise: its own kernel
        geo = _geometry(x.shape, w.shape, attrs)
        with monkeypatch.context() as m:
            m.setattr(cf, "_SMALL_USES", _ALWAYS_SMALL)
            plan = cf.ConvPlan(x.shape, x.dtype, w, b, geo, attrs["group"])
        with monkeypatch.context() as m:
            m.setattr(cf, "_SMALL_USES", {})
            gemm = cf.ConvPlan(x.shape, x.dtype, w, b, geo, attrs["group"])
        assert plan.kind == "small" and gemm.kind != "small"
        assert plan.small.wl.dtype == np.float32
        seen.add((x.ndim - 2, attrs["group"], x.shape[0]))
        got = plan(x)
        assert got.dtype == np.float32 and got.shape == gemm.out_shape
        k = w[0].size
        bound = k * 2.0 ** -24 * (np.abs(x).max() * np.abs(w).max() * k + np.abs(b).max()) * 2
        np.testing.assert_allclose(got, _direct64(x, w, b, geo, attrs["group"]), rtol=0, atol=bound,
                                   err_msg=str(attrs))
        np.testing.assert_allclose(got, gemm(x), rtol=0, atol=bound, err_msg=str(attrs))
    assert {s[0] for s in seen} == {1, 2, 3} and {s[1] for s in seen} == {1, 2} and {s[2] for s in seen} == {1, 2}


@pytest.mark.skipif(not intdot.available(), reason="numba (the `fast`/`test` extra) is not installed")
def test_one_pass_kernel_float64_is_exact_on_grid_values(monkeypatch):
    """float64 inputs on a grid (the emulator's exact sums): the one-pass kernel gives the exact
    sum, the GEMM paths' bits. Weights exact in float32 (24 bits, extremes included) are stored as
    float32; wider ones (28 bits) stay float64."""
    rng = np.random.default_rng(22)
    for bits, stored in ((24, np.float32), (28, np.float64)):
        for _ in range(30):
            x, w, _, attrs = _random_conv(rng, depthwise=False)
            if w.shape[1] == 1 and attrs["group"] > 1:
                continue
            xi = rng.integers(-(1 << 17), (1 << 17) + 1, x.shape)
            wi = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), w.shape)
            xi.flat[:2] = [1 << 17, -(1 << 17)]  # the extremes of the grid
            wi.flat[:2] = [(1 << (bits - 1)) - 1, -(1 << (bits - 1))]
            x64, w64 = xi * 2.0 ** -8, wi * 2.0 ** -10
            geo = _geometry(x.shape, w.shape, attrs)
            with monkeypatch.context() as m:
                m.setattr(cf, "_SMALL_USES", _ALWAYS_SMALL)
                plan = cf.ConvPlan(x.shape, np.float64, w64, None, geo, attrs["group"])
            with monkeypatch.context() as m:
                m.setattr(cf, "_SMALL_USES", {})
                gemm = cf.ConvPlan(x.shape, np.float64, w64, None, geo, attrs["group"])
            assert plan.kind == "small" and plan.small.wl.dtype == stored
            exact = _exact_conv(xi, wi, geo, attrs["group"])
            assert np.abs(exact).max() < 2 ** 53
            got = plan(x64)
            assert got.dtype == np.float64
            np.testing.assert_array_equal(got, exact * 2.0 ** -18, err_msg=str(attrs))
            np.testing.assert_array_equal(got, gemm(x64), err_msg=str(attrs))


@pytest.mark.skipif(not intdot.available(), reason="numba (the `fast`/`test` extra) is not installed")
def test_one_pass_kernel_takes_gemv_like_convs_only(monkeypatch):
    monkeypatch.setattr(cf, "_WINOGRAD_MIN_C", 1 << 30)  # the one-pass rule alone (Winograd: its own test)
    """Chosen by uses per weight (docs/numerics.md): resnet's layer4 3x3 at 2x2 outputs in both work
    dtypes, a 3x3 at 8x8 outputs only in float64, a 3x3 at 16x16 in neither; depthwise never."""
    def kind(x_shape, m, k, dtype, group=1, **attrs):
        w = np.ones((m, x_shape[1] // group, k, k), dtype)
        geo = _geometry(x_shape, w.shape, {"group": group, **attrs})
        return cf.ConvPlan(x_shape, dtype, w, None, geo, group).kind

    pad = {"pads": [1, 1, 1, 1]}
    for dt in (np.float32, np.float64):
        assert kind((1, 512, 2, 2), 512, 3, dt, **pad) == "small"
        assert kind((1, 256, 4, 4), 64, 1, dt) == "small"
        assert kind((1, 64, 16, 16), 64, 3, dt, **pad) == "im2col"
        assert kind((1, 32, 4, 4), 32, 3, dt, group=32, **pad) == "depthwise"
    w = np.ones((32, 1, 3, 3), np.float32)
    for hw, channels_last in (((8, 8), True), ((16, 16), False)):
        geo = _geometry((1, 32) + hw, w.shape, {"group": 32, **pad})
        assert (cf.ConvPlan((1, 32) + hw, np.float32, w, None, geo, 32).dw_cl is not None) == channels_last
    assert kind((1, 128, 8, 8), 128, 3, np.float32, **pad) == "im2col"
    assert kind((1, 128, 8, 8), 128, 3, np.float64, **pad) == "small"
    assert kind((64, 512, 2, 2), 512, 3, np.float32, **pad) != "small"  # a batch re-uses the weights


@pytest.mark.skipif(not intdot.available(), reason="numba (the `fast`/`test` extra) is not installed")
def test_emulation_is_the_same_with_and_without_the_one_pass_kernel(monkeypatch):
    """The bit-accurate emulation of a resnet (exact accumulators: float64 sums on grid values) gives
    the same bits whichever kernel sums its convolutions."""
    import conveyor.ops.conv as conv
    from conveyor import zoo

    g = zoo.build("resnet18", size=32)
    x = np.random.default_rng(3).normal(size=g.tensors[g.input_names[0]].shape)
    conv._FIXED_PLANS.clear()
    got = g.run(x, precision="ap_fixed<18,8,AP_RND_CONV>")[g.output_names[0]]
    assert any(p.kind == "small" for _, p in conv._FIXED_PLANS.values())
    conv._FIXED_PLANS.clear()
    monkeypatch.setattr(cf, "_SMALL_USES", {})
    want = g.run(x, precision="ap_fixed<18,8,AP_RND_CONV>")[g.output_names[0]]
    conv._FIXED_PLANS.clear()
    np.testing.assert_array_equal(got, want)

def _wino_case(rng):
    n, c, m = int(rng.integers(1, 3)), int(rng.choice([16, 20, 32])), int(rng.integers(1, 9))
    attrs = {"pads": [int(rng.integers(0, 3)) for _ in range(4)]}
    spatial = [int(rng.integers(3, 14)) for _ in range(2)]  # odd sizes: the last tiles cut
    x = rng.standard_normal([n, c] + spatial).astype(np.float32)
    w = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    return x, w, b, attrs


@pytest.mark.skipif(not intdot.available(), reason="numba (the `fast`/`test` extra) is not installed")
def test_winograd_numba_transforms_equal_numpy_bit_for_bit():
    from conveyor.ops import winograd

    rng = np.random.default_rng(12)
    for dtype in (np.float32, np.float64):
        for _ in range(20):
            x, w, _, attrs = _wino_case(rng)
            geo = _geometry(x.shape, w.shape, attrs)
            plan = winograd.Winograd(x.shape, w, geo, dtype)
            xd = x.astype(dtype)
            np.testing.assert_array_equal(plan(xd), plan(xd, numba=False), err_msg=str(attrs))


def test_float32_winograd_is_within_float32_accumulation_error_of_the_direct_sum(monkeypatch):
    monkeypatch.setattr(cf, "_SMALL_USES", {})  # Winograd alone (small outputs take the one-pass kernel first)
    """The float reference's Winograd (float32 transforms and GEMMs) against the float64 direct
    sum, within the per-output bound the im2col test allows (float32 accumulation error of the
    direct sum; docs/numerics.md "Conv, the float reference": Winograd's expected error is at
    most the direct sum's for C >= 16)."""
    monkeypatch.setattr(cf, "_WINOGRAD_TILES", 1)  # every eligible conv, however small
    rng = np.random.default_rng(13)
    worst = 0.0
    for _ in range(30):
        x, w, b, attrs = _wino_case(rng)
        geo = _geometry(x.shape, w.shape, attrs)
        plan = cf.ConvPlan(x.shape, x.dtype, w, b, geo, 1)
        assert plan.kind == "winograd" and plan.wino.u.dtype == np.float32
        got = plan(x)
        assert got.dtype == np.float32
        ref = _direct64(x, w, b, geo, 1).astype(np.float64)
        k = w[0].size
        bound = k * 2.0 ** -24 * (np.abs(x).max() * np.abs(w).max() * k + np.abs(b).max()) * 2
        np.testing.assert_allclose(got, ref, rtol=0, atol=bound, err_msg=str(attrs))
        # and statistically: the RMS error is of float32 accumulation's size, u sqrt(K) rms(y)
        rms = np.sqrt(np.mean(ref ** 2))
        worst = max(worst, np.sqrt(np.mean((got - ref) ** 2)) / (2.0 ** -24 * np.sqrt(k) * rms))
    assert 0 < worst < 1.0


def test_winograd_is_chosen_where_it_is_faster_and_exact(monkeypatch):
    monkeypatch.setattr(cf, "_SMALL_USES", {})  # Winograd's rule alone (small outputs take the one-pass kernel first)
    """Winograd for unit-stride 3x3 one-group Convs with enough tiles and channels (float32);
    not for small outputs whose (16, M, C) weights do not stay in cache (memory bound: taps or
    im2col), few channels, strides, groups or dilations; in float64 only with a proof."""
    def kind(c, m, size, dtype=np.float32, attrs=None, **kw):
        attrs = {"pads": [1, 1, 1, 1], **(attrs or {})}
        group = attrs.get("group", 1)
        geo = _geometry((1, c, size, size), (m, c // group, 3, 3), attrs)
        return cf.ConvPlan((1, c, size, size), dtype, np.ones((m, c // group, 3, 3), dtype), None, geo, group,
                           **kw).kind
    assert kind(64, 64, 16) == "winograd"
    assert kind(128, 128, 4) == "winograd"  # 4 tiles, weights 1 MiB: in cache
    assert kind(256, 256, 4) == "im2col" and kind(512, 512, 2) == "taps"
    assert kind(3, 64, 64) == "im2col" and kind(8, 32, 32) == "im2col"
    assert kind(64, 64, 16, attrs={"strides": [2, 2]}) == "im2col"
    assert kind(64, 64, 16, attrs={"dilations": [2, 2]}) == "im2col"
    assert kind(64, 64, 16, attrs={"group": 2}) == "im2col"
    assert kind(64, 64, 16, np.float64) == "im2col"  # a double model: no proof
    assert kind(64, 64, 16, np.float64, exact_bits=4.9) == "im2col"
    assert kind(64, 64, 16, np.float64, exact_bits=5.0) == "winograd"
