"""The fused float plan (conveyor.graph.float_plan): x * act(x) in one step, elementwise steps
in place on arrays the plan owns, activations merged into their producers. Every check
compares the values with the node-by-node unfused evaluation and with onnxruntime, and
checks that what must not be overwritten (feeds, weights, tensors read later or through a
view, fetched tensors) is not."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor.frontends.export import to_onnx
from conveyor.graph.ir import Graph
from conveyor.graph.tensor import Node, Tensor
from conveyor.ops import registry
from tests.helpers import assert_float32_close, ort_run

F32 = np.dtype(np.float32)


def _op_by_op(g: Graph, feeds: dict) -> dict:
    """Every tensor, by each node's plain `run` kernel on fresh arrays (no plan at all)."""
    env = dict(g.weights)
    env.update({k: np.array(v) for k, v in feeds.items()})
    for node in g.nodes:
        outs = registry.get(node.op_type).run(node, [env[t] if t else None for t in node.inputs])
        env.update((t, np.array(v)) for t, v in zip(node.outputs, outs) if t)
    return env


def _check(g: Graph, x: np.ndarray, fetch_each: bool = True) -> dict:
    """g.run(x) equals the op-by-op values (within float32 rounding: the plan may use other
    float formulations, e.g. x / (1 + exp(-x))) and onnxruntime's; x is left as it was; every
    tensor can be fetched, alone or all together."""
    x0 = x.copy()
    ref = _op_by_op(g, {g.input_names[0]: x})
    got = g.run(x)
    np.testing.assert_array_equal(x, x0)  # the feed was not written into
    ort = ort_run(to_onnx(g), {g.input_names[0]: x})
    for t in g.output_names:
        np.testing.assert_allclose(got[t], ref[t], rtol=2e-6, atol=2e-6 * float(np.abs(ref[t]).max()), err_msg=t)
        assert_float32_close(got[t], ort[t], g, err_msg=t)
    runtime = [t for n in g.nodes for t in n.outputs if t]
    if fetch_each:
        for t in runtime:
            v = g.run(x, fetch=[t])[t]
            np.testing.assert_allclose(v, ref[t], rtol=2e-6, atol=2e-6 * float(np.abs(ref[t]).max()), err_msg=t)
    every = g.run(x, fetch=runtime)
    for t in runtime:
        np.testing.assert_allclose(every[t], ref[t], rtol=2e-6, atol=2e-6 * float(np.abs(ref[t]).max()), err_msg=t)
    again = g.run(x)  # runs do not disturb each other (nothing kept between them is written)
    for t in g.output_names:
        np.testing.assert_array_equal(again[t], got[t])
    return got


def _graph(nodes, shape, outputs, weights):
    return Graph.build("g", nodes, [Tensor("x", shape, F32)], outputs, weights)


def _w(rng, *shape):
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


@pytest.mark.parametrize("act", ["Sigmoid", "HardSigmoid"])
@pytest.mark.parametrize("order", ["x_first", "act_first"])
def test_x_times_act_is_one_step_merged_into_the_conv(act, order):
    """Conv -> Sigmoid -> Mul(conv, sigmoid) (SiLU as the exporters write it) and the same with
    HardSigmoid: one Conv step in the plan, the activation's output never made."""
    rng = np.random.default_rng(0)
    weights = {"w": _w(rng, 6, 4, 3, 3), "b": _w(rng, 6), "w2": _w(rng, 5, 6, 1, 1)}
    attrs = {"alpha": 0.25, "beta": 0.4} if act == "HardSigmoid" else {}
    mul_in = ("a", "s") if order == "x_first" else ("s", "a")
    nodes = [Node("c", "Conv", ("x", "w", "b"), ("a",), {"pads": [1, 1, 1, 1]}, 17),
             Node("act", act, ("a",), ("s",), attrs, 17),
             Node("m", "Mul", mul_in, ("y",), {}, 17),
             Node("c2", "Conv", ("y", "w2"), ("z",), {}, 17)]
    g = _graph(nodes, (1, 4, 8, 8), ["z"], weights)
    plan, lost = g._float_plan
    assert [e[0].op_type for e in plan] == ["Conv", "Conv"]
    assert lost == {"a", "s"}  # y is the Conv step's output now
    x = (rng.standard_normal((1, 4, 8, 8)) * 4).astype(np.float32)  # sigmoid saturates both ways
    _check(g, x)


def test_silu_of_a_feed_leaves_the_feed_alone_and_saturates_without_nan():
    """x * sigmoid(x) on the graph input itself: the fused step makes a new array (the plan
    does not own the feed); exp(-x) overflows to inf for x < -88.7 and the result is -0."""
    nodes = [Node("s", "Sigmoid", ("x",), ("s",), {}, 17),
             Node("m", "Mul", ("s", "x"), ("y",), {}, 17)]
    g = _graph(nodes, (1, 3, 4, 4), ["y"], {})
    x = np.linspace(-120, 120, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    plan, lost = g._float_plan
    assert [e[0].op_type for e in plan] == ["Sigmoid*Mul"] and lost == {"s"}
    got = _check(g, x)["y"]
    assert np.all(np.isfinite(got)) and np.all(got[x < -100] == 0)


def test_sigmoid_read_twice_is_not_fused():
    """s = sigmoid(a) read by the Mul and by another node: s must be made; a stays intact."""
    rng = np.random.default_rng(1)
    weights = {"w": _w(rng, 4, 4, 1, 1)}
    nodes = [Node("c", "Conv", ("x", "w"), ("a",), {}, 17),
             Node("s", "Sigmoid", ("a",), ("s",), {}, 17),
             Node("m", "Mul", ("a", "s"), ("y",), {}, 17),
             Node("r", "Relu", ("s",), ("r",), {}, 17),
             Node("o", "Add", ("y", "r"), ("z",), {}, 17)]
    g = _graph(nodes, (1, 4, 5, 5), ["z"], weights)
    plan, lost = g._float_plan
    assert "Sigmoid" in [e[0].op_type for e in plan]
    _check(g, rng.standard_normal((1, 4, 5, 5)).astype(np.float32))


def test_squeeze_excitation_block_multiplies_in_place():
    """The SE block of EfficientNet/MobileNetV3: a = silu(conv); s = sigmoid(fc2(silu(fc1(
    mean(a))))); y = a * s broadcast over (N, C, 1, 1), written into a (its last reader), and
    the residual Add into the block's own fresh output."""
    rng = np.random.default_rng(2)
    weights = {"w": _w(rng, 8, 8, 1, 1), "f1": _w(rng, 2, 8, 1, 1), "f1b": _w(rng, 2),
               "f2": _w(rng, 8, 2, 1, 1), "f2b": _w(rng, 8), "wp": _w(rng, 8, 8, 1, 1),
               "axes": np.array([2, 3], np.int64)}
    nodes = [Node("c", "Conv", ("x", "w"), ("c",), {}, 18),
             Node("cs", "Sigmoid", ("c",), ("cs",), {}, 18),
             Node("a", "Mul", ("c", "cs"), ("a",), {}, 18),
             Node("gap", "ReduceMean", ("a", "axes"), ("g",), {"keepdims": 1}, 18),
             Node("f1", "Conv", ("g", "f1", "f1b"), ("h",), {}, 18),
             Node("hs", "Sigmoid", ("h",), ("hs",), {}, 18),
             Node("hm", "Mul", ("h", "hs"), ("hm",), {}, 18),
             Node("f2", "Conv", ("hm", "f2", "f2b"), ("e",), {}, 18),
             Node("es", "Sigmoid", ("e",), ("s",), {}, 18),
             Node("se", "Mul", ("a", "s"), ("y",), {}, 18),
             Node("p", "Conv", ("y", "wp"), ("p",), {}, 18),
             Node("res", "Add", ("p", "x"), ("z",), {}, 18)]
    g = _graph(nodes, (1, 8, 6, 6), ["z"], weights)
    plan, lost = g._float_plan
    assert {"a", "p"} <= lost  # written into by the SE Mul and the residual Add
    assert "x" not in lost
    _check(g, rng.standard_normal((1, 8, 6, 6)).astype(np.float32))


def test_no_write_into_a_tensor_read_later_or_through_a_view():
    """a is read by an Add and then by a Conv: the Add makes a new array. b is last read by an
    Add, but a Reshape (a view of b) is read after it: the Add must not write into b either."""
    rng = np.random.default_rng(3)
    weights = {"w": _w(rng, 4, 4, 1, 1), "w2": _w(rng, 4, 4, 1, 1), "k": _w(rng, 1, 4, 1, 1),
               "shape": np.array([1, -1], np.int64)}
    nodes = [Node("c", "Conv", ("x", "w"), ("a",), {}, 17),
             Node("add", "Add", ("a", "k"), ("s",), {}, 17),
             Node("c2", "Conv", ("a", "w2"), ("b",), {}, 17),
             Node("v", "Reshape", ("b", "shape"), ("v",), {}, 17),
             Node("mul", "Mul", ("b", "s"), ("m",), {}, 17),
             Node("t", "Relu", ("v",), ("vt",), {}, 17)]
    g = _graph(nodes, (1, 4, 3, 3), ["m", "vt"], weights)
    plan, lost = g._float_plan
    assert "a" not in lost and "b" not in lost
    assert "s" in lost  # the Mul writes into s, which is fresh and last read there
    _check(g, rng.standard_normal((1, 4, 3, 3)).astype(np.float32))


def test_graph_outputs_read_later_stay_intact():
    """y is a graph output and also read by a later Relu: nothing writes into it."""
    rng = np.random.default_rng(4)
    weights = {"w": _w(rng, 4, 4, 1, 1)}
    nodes = [Node("c", "Conv", ("x", "w"), ("y",), {}, 17),
             Node("r", "Relu", ("y",), ("r",), {}, 17),
             Node("hs", "HardSwish", ("r",), ("h",), {}, 17),
             Node("bn", "Add", ("h", "y"), ("z",), {}, 17)]
    g = _graph(nodes, (1, 4, 4, 4), ["y", "z"], weights)
    plan, lost = g._float_plan
    assert "y" not in lost and "r" in lost  # HardSwish merged into the Relu step's array
    _check(g, rng.standard_normal((1, 4, 4, 4)).astype(np.float32))


def test_batchnorm_and_hard_activations_in_place():
    """Concat -> BatchNormalization (constant parameters) -> HardSwish -> HardSigmoid: the
    BatchNormalization writes into the Concat's array, the activations run inside it."""
    rng = np.random.default_rng(5)
    c = 6
    weights = {"w": _w(rng, 2, 4, 1, 1), "sc": _w(rng, c) + 1, "bb": _w(rng, c), "mu": _w(rng, c),
               "var": np.abs(_w(rng, c)) + 0.5}
    nodes = [Node("c", "Conv", ("x", "w"), ("a",), {}, 17),
             Node("cat", "Concat", ("x", "a"), ("cat",), {"axis": 1}, 17),
             Node("bn", "BatchNormalization", ("cat", "sc", "bb", "mu", "var"), ("n",), {}, 17),
             Node("hs", "HardSwish", ("n",), ("h",), {}, 17),
             Node("hg", "HardSigmoid", ("h",), ("y",), {"alpha": 0.3}, 17)]
    g = _graph(nodes, (1, 4, 5, 5), ["y"], weights)
    plan, lost = g._float_plan
    assert [e[0].op_type for e in plan] == ["Conv", "Concat"] and {"cat", "n", "h"} <= lost
    _check(g, rng.standard_normal((1, 4, 5, 5)).astype(np.float32) * 4)


@pytest.mark.parametrize("op,axes,keep,opset", [
    ("ReduceMean", [2, 3], 1, 18), ("ReduceMean", [-1], 0, 18), ("ReduceSum", [1, 2, 3], 1, 13),
    ("ReduceMean", [1, 3], 1, 17), ("ReduceMean", None, 0, 17), ("GlobalAveragePool", None, 1, 17)])
def test_reductions_over_trailing_axes(op, axes, keep, opset):
    """ReduceMean/ReduceSum over trailing axes (global pooling) and GlobalAveragePool take one
    matrix-vector product; other axes the numpy kernel. Against the op's own `run` and ort."""
    rng = np.random.default_rng(6)
    weights, attrs, ins = {}, {}, ("x",)
    if op != "GlobalAveragePool":
        attrs["keepdims"] = keep
        from_input = opset >= (13 if op == "ReduceSum" else 18)
        if axes is not None and from_input:
            weights["axes"] = np.array(axes, np.int64)
            ins = ("x", "axes")
        elif axes is not None:
            attrs["axes"] = axes
    nodes = [Node("r", op, ins, ("y",), attrs, opset)]
    g = _graph(nodes, (2, 5, 3, 7), ["y"], weights)
    _check(g, rng.standard_normal((2, 5, 3, 7)).astype(np.float32))
