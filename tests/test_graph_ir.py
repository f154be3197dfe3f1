"""Graph IR: construction, ordering, execution, errors, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import conveyor
from conveyor import Graph, ModelError, Node, Tensor
from helpers import make_model, ort_run, rand


def _skip_concat_model():
    # x -> conv-free DAG: a = relu(x); b = sigmoid(a); c = a + b (skip); d = concat(c, x)
    nodes = [
        helper.make_node("Concat", ["c", "x"], ["d"], name="cat", axis=1),  # out of order on purpose
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Add", ["a", "b"], ["c"], name="add"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="sig"),
    ]
    return make_model(nodes, [("x", [2, 3, 4])], [("d", [2, 6, 4])])


def test_build_orders_nodes_topologically_and_infers_shapes():
    g = conveyor.from_model(_skip_concat_model(), optimize=False)
    order = [n.name for n in g.nodes]
    assert order.index("relu") < order.index("sig") < order.index("add") < order.index("cat")
    assert [t.name for t in g.inputs] == ["x"] and g.inputs[0].shape == (2, 3, 4)
    assert g.outputs[0].shape == (2, 6, 4) and g.outputs[0].dtype == np.float32
    assert g.tensors["c"].shape == (2, 3, 4)
    assert [n.name for n in g.consumers("a")] == ["add", "sig"] or {n.name for n in g.consumers("a")} == {"add", "sig"}
    assert g.producer("c").name == "add"


def test_run_matches_onnxruntime_and_accepts_array_or_dict():
    model = _skip_concat_model()
    g = conveyor.from_model(model)
    x = rand((2, 3, 4))
    ref = ort_run(model, {"x": x})["d"]
    np.testing.assert_allclose(g.run(x)["d"], ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g.run({"x": x})["d"], ref, rtol=1e-6, atol=1e-7)
    fetched = g.run(x, fetch=["a", "d"])
    np.testing.assert_array_equal(fetched["a"], np.maximum(x, 0))


def test_several_inputs_and_outputs():
    nodes = [helper.make_node("Mul", ["x", "y"], ["p"], name="mul"), helper.make_node("Sub", ["x", "y"], ["q"], name="sub")]
    model = make_model(nodes, [("x", [3]), ("y", [3])], [("p", [3]), ("q", [3])])
    g = conveyor.from_model(model)
    x, y = rand(3, 1), rand(3, 2)
    out = g.run({"x": x, "y": y})
    np.testing.assert_allclose(out["p"], x * y)
    np.testing.assert_allclose(out["q"], x - y)
    with pytest.raises(ModelError, match="pass a dict by input name"):
        g.run(x)
    with pytest.raises(ModelError, match=r"missing \['y'\]"):
        g.run({"x": x})


def test_feed_shape_and_dtype_errors_name_expected_and_got():
    g = conveyor.from_model(_skip_concat_model())
    with pytest.raises(ModelError, match=r"input 'x': expected shape \(2, 3, 4\), got \(2, 3\)"):
        g.run(np.zeros((2, 3), np.float32))
    with pytest.raises(ModelError, match="expected dtype float32, got int64"):
        g.run(np.zeros((2, 3, 4), np.int64))
    # float64 casts safely to the graph's float32
    assert g.run(np.zeros((2, 3, 4)))["d"].dtype == np.float32


def test_unsupported_op_names_op_node_and_supported_list():
    model = make_model([helper.make_node("Einsum", ["x", "x"], ["y"], name="weird", equation="i,i->")], [("x", [3])], [("y", [])])
    with pytest.raises(ModelError) as e:
        conveyor.from_model(model, source="m.onnx")
    msg = str(e.value)
    assert "m.onnx" in msg and "Einsum" in msg and "'weird'" in msg and "supported:" in msg and "Conv" in msg


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        conveyor.load(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(ModelError, match="bad.onnx"):
        conveyor.load(bad)


def test_cycle_and_undefined_tensor_and_duplicate_definition():
    x = Tensor("x", (2,), np.dtype(np.float32))
    with pytest.raises(ModelError, match="cycle"):
        Graph.build("g", [Node("a", "Relu", ("b",), ("a_out",)), Node("b", "Relu", ("a_out",), ("b",))], [], ["b"], {})
    with pytest.raises(ModelError, match="reads tensor 'nope'"):
        Graph.build("g", [Node("a", "Relu", ("nope",), ("y",))], [x], ["y"], {})
    with pytest.raises(ModelError, match="defined twice"):
        Graph.build("g", [Node("a", "Relu", ("x",), ("y",)), Node("b", "Relu", ("x",), ("y",))], [x], ["y"], {})


def test_shape_error_names_node():
    model = make_model([helper.make_node("Add", ["x", "y"], ["z"], name="badd")], [("x", [2, 3]), ("y", [4])], [("z", [2, 3])])
    with pytest.raises(ModelError, match="badd.*do not broadcast"):
        conveyor.from_model(model)


def test_symbolic_batch_becomes_one_and_input_shapes_override():
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", ["N", 4])], [("y", ["N", 4])])
    assert conveyor.from_model(model).inputs[0].shape == (1, 4)
    assert conveyor.from_model(model, input_shapes={"x": [8, 4]}).inputs[0].shape == (8, 4)
    model2 = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", [1, "T"])], [("y", [1, "T"])])
    with pytest.raises(ModelError, match="dimension 1 is symbolic"):
        conveyor.from_model(model2)


def test_fingerprint_is_stable_and_sees_weights():
    w = rand((4, 3))
    mk = lambda w: conveyor.from_model(make_model(  # noqa: E731
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [("x", [2, 4])], [("y", [2, 3])], {"w": w}))
    assert mk(w).fingerprint() == mk(w.copy()).fingerprint()
    w2 = w.copy()
    w2[0, 0] += 1
    assert mk(w).fingerprint() != mk(w2).fingerprint()


def test_constant_nodes_become_weights():
    nodes = [
        helper.make_node("Constant", [], ["c"], name="k", value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Add", ["x", "c"], ["y"], name="add"),
    ]
    g = conveyor.from_model(make_model(nodes, [("x", [3])], [("y", [3])]))
    assert g.is_weight("c")
    np.testing.assert_allclose(g.run(np.zeros(3, np.float32))["y"], [1, 2, 3])
