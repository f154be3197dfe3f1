"""Sub-graph cutting: convex sets, boundary tensors, and chained stages equal the whole."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import conveyor
from conveyor import ModelError
from helpers import make_model, rand


def _residual():
    # x -> a=relu(x) -> b=sigmoid(a) -> c=tanh(b) -> d = a + c (skip) -> y = relu(d)
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="n_a"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="n_b"),
        helper.make_node("Tanh", ["b"], ["c"], name="n_c"),
        helper.make_node("Add", ["a", "c"], ["d"], name="n_d"),
        helper.make_node("Mul", ["d", "k"], ["y"], name="n_y"),
    ]
    return conveyor.from_model(make_model(nodes, [("x", [2, 3])], [("y", [2, 3])], {"k": rand((3,), 7)}))


def test_boundary_tensors_include_skip_connections():
    g = _residual()
    s1 = g.subgraph(["n_a", "n_b"])
    assert [t.name for t in s1.inputs] == ["x"]
    assert [t.name for t in s1.outputs] == ["a", "b"]  # 'a' crosses the cut through the skip
    s2 = g.subgraph(["n_c", "n_d", "n_y"])
    assert {t.name for t in s2.inputs} == {"a", "b"}
    assert [t.name for t in s2.outputs] == ["y"]
    assert "k" in s2.weights and "k" not in s1.weights


def test_chained_stages_equal_the_whole_graph():
    g = _residual()
    x = rand((2, 3), 1)
    s1, s2 = g.subgraph(["n_a", "n_b"]), g.subgraph(["n_c", "n_d", "n_y"])
    mid = s1.run(x)
    out = s2.run({t.name: mid[t.name] for t in s2.inputs})
    np.testing.assert_array_equal(out["y"], g.run(x)["y"])


def test_non_convex_set_is_rejected_naming_the_node_in_between():
    g = _residual()
    with pytest.raises(ModelError, match="not convex.*'n_b'"):
        g.subgraph(["n_a", "n_c"])


def test_set_may_be_given_as_nodes_and_unknown_names_fail():
    g = _residual()
    assert len(g.subgraph([g.node("n_y")]).nodes) == 1
    with pytest.raises(ModelError, match="no node 'nope'"):
        g.subgraph(["nope"])
    with pytest.raises(ModelError, match="empty"):
        g.subgraph([])


def test_every_contiguous_topological_range_is_convex_and_chains():
    g = _residual()
    x = rand((2, 3), 2)
    want = g.run(x)["y"]
    n = len(g.nodes)
    for cut in range(1, n):
        a = g.subgraph(g.nodes[:cut])
        b = g.subgraph(g.nodes[cut:])
        mid = a.run(x)
        np.testing.assert_array_equal(b.run({t.name: mid[t.name] for t in b.inputs})["y"], want)
