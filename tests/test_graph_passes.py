"""Graph passes: each leaves the outputs unchanged (vs onnxruntime) and does its rewrite."""

from __future__ import annotations

import numpy as np
from onnx import helper

import conveyor
from conveyor.graph import passes
from helpers import make_model, ort_run, rand


def _bn_inits(prefix, c, seed):
    r = np.random.default_rng(seed)
    return {
        f"{prefix}_s": r.uniform(0.5, 1.5, c).astype(np.float32),
        f"{prefix}_b": r.standard_normal(c).astype(np.float32),
        f"{prefix}_m": r.standard_normal(c).astype(np.float32),
        f"{prefix}_v": r.uniform(0.5, 2.0, c).astype(np.float32),
    }


def _bn(prefix, x, y):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"], [y],
                            name=prefix, epsilon=1e-3)


def _ops(g):
    return [n.op_type for n in g.nodes]


def _check_same(model, feeds, rtol=1e-4, atol=1e-5):
    raw = conveyor.from_model(model, optimize=False)
    opt = conveyor.from_model(model)
    ref = ort_run(model, feeds)
    for name, want in ref.items():
        np.testing.assert_allclose(raw.run(feeds)[name], want, rtol=rtol, atol=atol)
        np.testing.assert_allclose(opt.run(feeds)[name], want, rtol=rtol, atol=atol)
    return raw, opt


def test_fold_batchnorm_into_conv_with_and_without_bias():
    inits = {"w1": rand((4, 3, 3, 3), 1), "w2": rand((5, 4, 1, 1), 2), "b2": rand(5, 3)}
    inits.update(_bn_inits("bn1", 4, 4))
    inits.update(_bn_inits("bn2", 5, 5))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _bn("bn1", "c1", "n1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        _bn("bn2", "c2", "y"),
    ]
    model = make_model(nodes, [("x", [1, 3, 6, 6])], [("y", [1, 5, 6, 6])], inits)
    raw, opt = _check_same(model, {"x": rand((1, 3, 6, 6), 9)})
    assert _ops(raw).count("BatchNormalization") == 2
    assert _ops(opt) == ["Conv", "Relu", "Conv"]
    assert opt.output_names == ("y",)


def test_fold_batchnorm_into_gemm_with_trans_b_alpha_beta():
    inits = {"w": rand((6, 4), 1), "c": rand(6, 2)}
    inits.update(_bn_inits("bn", 6, 3))
    nodes = [
        helper.make_node("Gemm", ["x", "w", "c"], ["g"], name="fc", transB=1, alpha=0.5, beta=2.0),
        _bn("bn", "g", "y"),
    ]
    model = make_model(nodes, [("x", [3, 4])], [("y", [3, 6])], inits)
    _, opt = _check_same(model, {"x": rand((3, 4), 4)})
    assert _ops(opt) == ["Gemm"]


def test_batchnorm_not_folded_when_conv_output_is_shared():
    inits = {"w": rand((2, 2, 1, 1), 1)}
    inits.update(_bn_inits("bn", 2, 2))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        _bn("bn", "c", "n"),
        helper.make_node("Add", ["c", "n"], ["y"], name="add"),
    ]
    model = make_model(nodes, [("x", [1, 2, 3, 3])], [("y", [1, 2, 3, 3])], inits)
    _, opt = _check_same(model, {"x": rand((1, 2, 3, 3), 3)})
    assert "BatchNormalization" in _ops(opt)


def test_drop_identity_and_dropout_including_at_graph_output():
    nodes = [
        helper.make_node("Identity", ["x"], ["i1"], name="id1"),
        helper.make_node("Relu", ["i1"], ["r"], name="relu"),
        helper.make_node("Dropout", ["r"], ["d"], name="drop"),
        helper.make_node("Sigmoid", ["d"], ["s"], name="sig"),
        helper.make_node("Identity", ["s"], ["y"], name="id_out"),
    ]
    model = make_model(nodes, [("x", [2, 3])], [("y", [2, 3])])
    _, opt = _check_same(model, {"x": rand((2, 3), 1)})
    assert _ops(opt) == ["Relu", "Sigmoid"]
    assert opt.output_names == ("y",) and opt.producer("y").op_type == "Sigmoid"


def test_identity_from_input_to_output_is_kept():
    model = make_model([helper.make_node("Identity", ["x"], ["y"], name="id")], [("x", [2])], [("y", [2])])
    g = conveyor.from_model(model)
    assert _ops(g) == ["Identity"]
    np.testing.assert_array_equal(g.run(np.ones(2, np.float32))["y"], np.ones(2))


def test_fold_constants_computes_constant_subexpressions():
    inits = {"a": rand(4, 1), "b": rand(4, 2), "shape": np.array([2, 2], np.int64)}
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["ab"], name="const_mul"),
        helper.make_node("Reshape", ["ab", "shape"], ["ab2"], name="const_reshape"),
        helper.make_node("Add", ["x", "ab2"], ["y"], name="add"),
    ]
    model = make_model(nodes, [("x", [2, 2])], [("y", [2, 2])], inits)
    _, opt = _check_same(model, {"x": rand((2, 2), 3)})
    assert _ops(opt) == ["Add"]
    assert "a" not in opt.weights and "shape" not in opt.weights  # unused constants dropped


def test_fuse_matmul_add_into_dense_either_operand_order():
    inits = {"w1": rand((16, 8), 1), "b1": rand(8, 2), "w2": rand((8, 4), 3), "b2": rand((1, 4), 4)}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["h"], name="bias1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["b2", "m2"], ["y"], name="bias2"),
    ]
    model = make_model(nodes, [("x", [3, 16])], [("y", [3, 4])], inits)
    _, opt = _check_same(model, {"x": rand((3, 16), 5)})
    assert _ops(opt) == ["Dense", "Relu", "Dense"]
    assert opt.node("fc1").inputs == ("x", "w1", "b1")


def test_matmul_add_with_runtime_operand_not_fused():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "z"], ["y"], name="add"),
    ]
    model = make_model(nodes, [("x", [2, 3]), ("z", [2, 4])], [("y", [2, 4])], {"w": rand((3, 4))})
    assert _ops(conveyor.from_model(model)) == ["MatMul", "Add"]


def test_drop_dead_removes_unused_branches():
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="used"),
        helper.make_node("Sigmoid", ["x"], ["unused"], name="dead"),
    ]
    g = conveyor.from_model(make_model(nodes, [("x", [2])], [("y", [2])]), optimize=False)
    g2, changed = passes.drop_dead(g)
    assert changed and _ops(g2) == ["Relu"]
    assert passes.drop_dead(g2) == (g2, False)
