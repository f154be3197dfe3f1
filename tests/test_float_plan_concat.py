"""Chained Concats in the fused float plan (conveyor.graph.float_plan._chain_concats): Concats
whose inputs extend an earlier one's (DenseNet's dense blocks) share one buffer and copy in only
the inputs the previous one lacked. Checked against the node-by-node evaluation and onnxruntime
(tests/test_graph_float_plan._check: every tensor fetchable, feeds untouched, runs independent),
and that no step writes into a buffer another Concat still reads."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor.graph.tensor import Node
from tests.test_graph_float_plan import _check, _graph, _w


def _dense_block(axis=1):
    """A DenseNet-like block: each layer reads Relu(Concat(x, f1, ..., fk)) and adds f(k+1); the
    Relu may run in place on the Concat's output (it is its only reader); an Add reads f1 after
    the Concats that copied it (and may write into it)."""
    rng = np.random.default_rng(5)
    weights, nodes, feats, c = {}, [], ["x"], 3
    for k in range(1, 4):
        if k > 1:
            nodes.append(Node(f"cat{k}", "Concat", tuple(feats), (f"c{k}",), {"axis": axis}, 17))
            src = f"c{k}"
        else:
            src = "x"
        nodes.append(Node(f"r{k}", "Relu", (src,), (f"u{k}",), {}, 17))
        # along axis 2 every map has one channel (every dimension before the axis is 1)
        weights[f"w{k}"] = _w(rng, 2, c, 1, 1) if axis == 1 else _w(rng, 1, 1, 1, 1)
        nodes.append(Node(f"conv{k}", "Conv", (f"u{k}", f"w{k}"), (f"f{k}",), {}, 17))
        feats.append(f"f{k}")
        c += 2
    nodes.append(Node("cat_all", "Concat", tuple(feats), ("out",), {"axis": axis}, 17))
    nodes.append(Node("late", "Add", ("f1", "f1"), ("z",), {}, 17))
    return nodes, weights


def test_dense_block_concats_share_one_buffer():
    nodes, weights = _dense_block()
    g = _graph(nodes, (1, 3, 5, 4), ["out", "z"], weights)
    plan, lost = g._float_plan
    by = {e[0].name: e for e in plan}
    # each later Concat reads the previous one's output and its one new input
    assert by["cat3"][2] == ("c2", "f2")
    assert by["cat_all"][2] == ("c3", "f3")
    assert not {"c2", "c3", "out"} & lost  # never written into
    x = np.random.default_rng(6).standard_normal((1, 3, 5, 4)).astype(np.float32)
    got = _check(g, x)
    np.testing.assert_array_equal(got["out"][:, :3], x)


def test_chained_concat_along_a_spatial_axis():
    nodes, weights = _dense_block(axis=2)
    g = _graph(nodes, (1, 1, 2, 4), ["out", "z"], weights)
    plan, _ = g._float_plan
    assert {e[0].name: e for e in plan}["cat_all"][2] == ("c3", "f3")
    _check(g, np.random.default_rng(7).standard_normal((1, 1, 2, 4)).astype(np.float32))


def test_batched_concats_are_not_chained():
    """With a leading dimension above 1 a leading slice along axis 1 is not contiguous: the
    Concats keep np.concatenate (the same values)."""
    nodes, weights = _dense_block()
    g = _graph(nodes, (2, 3, 3, 3), ["out", "z"], weights)
    plan, _ = g._float_plan
    assert {e[0].name: e for e in plan}["cat_all"][2] == ("x", "f1", "f2", "f3")
    _check(g, np.random.default_rng(8).standard_normal((2, 3, 3, 3)).astype(np.float32))


def test_two_concats_extending_the_same_prefix():
    """cat(x, a) extended by two Concats with different next inputs: only one may write into
    the shared buffer; the other concatenates on its own."""
    rng = np.random.default_rng(9)
    weights = {"w": _w(rng, 2, 3, 1, 1)}
    nodes = [Node("a", "Conv", ("x", "w"), ("a",), {}, 17),
             Node("b", "Sigmoid", ("a",), ("b",), {}, 17),
             Node("d", "Tanh", ("a",), ("d",), {}, 17),
             Node("c1", "Concat", ("x", "a"), ("c1",), {"axis": 1}, 17),
             Node("c2", "Concat", ("x", "a", "b"), ("c2",), {"axis": 1}, 17),
             Node("c3", "Concat", ("x", "a", "d"), ("c3",), {"axis": 1}, 17),
             Node("s", "Add", ("c2", "c3"), ("s",), {}, 17),
             Node("t", "Relu", ("c1",), ("t",), {}, 17)]
    g = _graph(nodes, (1, 3, 4, 4), ["s", "t"], weights)
    plan, _ = g._float_plan
    by = {e[0].name: e for e in plan}
    assert by["c2"][2] == ("c1", "b") and by["c3"][2] == ("x", "a", "d")
    _check(g, rng.standard_normal((1, 3, 4, 4)).astype(np.float32))
