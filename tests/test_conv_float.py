"""The planned float Conv (conveyor/ops/conv_float.py): its methods against each other and
against a float64 direct convolution; Graph.run's per-node plans against the ops' plain `run`.
(onnxruntime comparisons of every method: tests/test_ops_conv_pool_norm.py.)"""

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
    plan = cf.ConvPlan(x.shape, np.float64, w.astype(np.float64), None if b is None else b.astype(np.float64),
                       geo, group)
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
        plan = cf.ConvPlan(x.shape, x.dtype, w, b, geo, c)
        assert plan.kind == "depthwise"
        fast = plan(x)
        with monkeypatch.context() as m:
            m.setattr(cf, "_depthwise_flat", None)
            slow = plan(x)
        np.testing.assert_array_equal(fast, slow, err_msg=str(attrs))
        np.testing.assert_allclose(fast, _direct64(x, w, b, geo, c), rtol=1e-5, atol=1e-5, err_msg=str(attrs))


@pytest.mark.parametrize("shape,m,pads", [
    ((1, 3, 16, 16), 4, [1, 1, 1, 1]),
    ((2, 5, 13, 11), 6, [1, 0, 2, 1]),     # odd outputs: the last tiles half outside; batch 2
    ((1, 64, 14, 14), 32, [1, 1, 1, 1]),
])
def test_winograd_matches_float64_direct_within_one_ulp(shape, m, pads, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((m, shape[1], 3, 3)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    geo = _geometry(x.shape, w.shape, {"pads": pads})
    plan = cf.ConvPlan(x.shape, x.dtype, w, b, geo, 1)
    assert plan.kind == "winograd"
    got = plan(x)
    want = _direct64(x, w, b, geo, 1)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_max_ulp(got, want, maxulp=1)
    assert np.mean(got == want) > 0.99  # float64 throughout: nearly always the same rounding
    monkeypatch.setattr(cf, "_winograd_in", None)  # the numpy path: the same operations, the same bits
    np.testing.assert_array_equal(plan(x), got)


def test_small_images_skip_winograd():
    geo = _geometry((1, 8, 7, 7), (8, 8, 3, 3), {"pads": [1, 1, 1, 1]})  # 16 tiles < _WINOGRAD_TILES
    assert cf.ConvPlan((1, 8, 7, 7), np.float32, np.ones((8, 8, 3, 3), np.float32), None, geo, 1).kind == "im2col"


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
    plan = g._float_plan
    assert plan is g._float_plan  # built once per graph
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
