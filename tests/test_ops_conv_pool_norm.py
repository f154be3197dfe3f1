"""Conv, MaxPool, AveragePool, GlobalAveragePool, BatchNormalization and LRN kernels
against onnxruntime (the float reference), single-node ONNX models.

Where onnxruntime rejects a configuration or departs from the ONNX spec (SAME
padding with dilations), the ONNX reference evaluator or a naive loop written
straight from the spec text is the oracle instead.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import conveyor.ops.conv
import conveyor.ops.norm
import conveyor.ops.pool
from conveyor.errors import ModelError
from conveyor.graph.tensor import Node
from conveyor.ops import registry
from conveyor.ops.registry import ValueInfo

RTOL, ATOL = 1e-4, 1e-5

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
         np.dtype(np.float64): TensorProto.DOUBLE, np.dtype(np.int8): TensorProto.INT8,
         np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int64): TensorProto.INT64}


def _model(op, inputs, outputs, attrs, opset):
    node = helper.make_node(op, [n for n, _ in inputs], list(outputs), **attrs)
    ins = [helper.make_tensor_value_info(n, _ELEM[a.dtype], list(a.shape)) for n, a in inputs]
    outs = []
    for i, o in enumerate(outputs):
        elem = TensorProto.INT64 if (op == "MaxPool" and i == 1) else _ELEM[inputs[0][1].dtype]
        outs.append(helper.make_tensor_value_info(o, elem, None))
    graph = helper.make_graph([node], "g", ins, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


_SO = ort.SessionOptions()
_SO.intra_op_num_threads = 1
_SO.log_severity_level = 4


def run_ort(op, inputs, outputs, attrs, opset):
    m = _model(op, inputs, outputs, attrs, opset)
    sess = ort.InferenceSession(m.SerializeToString(), _SO, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(inputs))


def run_ref(op, inputs, outputs, attrs, opset):
    return ReferenceEvaluator(_model(op, inputs, outputs, attrs, opset)).run(None, dict(inputs))


def run_mine(op, inputs, outputs, attrs, opset):
    """check, infer and run conveyor's op; asserts infer agrees with the kernel."""
    node = Node("n", op, tuple(n for n, _ in inputs), tuple(outputs), dict(attrs), opset)
    opdef = registry.get(op)
    opdef.check(node)
    results = opdef.run(node, [a for _, a in inputs])
    inferred = opdef.infer(node, [ValueInfo(a.shape, a.dtype, None) for _, a in inputs])
    assert len(results) >= len(outputs)
    for got, (shape, dtype) in zip(results[: len(outputs)], inferred):
        assert tuple(got.shape) == tuple(shape), (got.shape, shape)
        assert got.dtype == np.dtype(dtype), (got.dtype, dtype)
    return list(results[: len(outputs)])


def assert_same(op, inputs, outputs, attrs, opset, oracle=run_ort):
    want = oracle(op, inputs, outputs, attrs, opset)
    got = run_mine(op, inputs, outputs, attrs, opset)
    for w, g in zip(want, got):
        assert w.shape == g.shape, f"{op} {attrs}: shape {g.shape}, expected {w.shape}"
        if np.issubdtype(w.dtype, np.integer):
            np.testing.assert_array_equal(g, w, err_msg=f"{op} {attrs}")
        else:
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"{op} {attrs}")
    return got


def _randn(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ---- Conv ------------------------------------------------------------------------------

CONV_CASES = [
    # (x shape, w shape, bias, attrs)
    ((2, 3, 11), (4, 3, 3), True, {}),                                              # 1-D
    ((1, 4, 13), (6, 2, 4), True, {"group": 2, "strides": [2], "pads": [1, 2], "dilations": [2]}),
    ((2, 3, 9, 10), (5, 3, 3, 3), True, {"pads": [1, 1, 1, 1]}),                     # 2-D
    ((1, 3, 9, 10), (5, 3, 3, 3), False, {"pads": [1, 1, 1, 1]}),                    # no bias
    ((1, 4, 12, 11), (6, 4, 3, 2), True, {"strides": [2, 3]}),
    ((1, 4, 12, 11), (6, 4, 3, 3), True, {"dilations": [2, 3], "pads": [2, 3, 2, 3]}),
    ((1, 4, 10, 9), (6, 4, 3, 3), True, {"pads": [0, 2, 1, 0]}),                    # asymmetric
    ((1, 6, 10, 9), (9, 2, 3, 3), True, {"group": 3, "pads": [1, 1, 1, 1]}),            # groups
    ((2, 8, 10, 9), (8, 1, 3, 3), True, {"group": 8, "pads": [1, 1, 1, 1]}),            # depthwise
    ((1, 8, 10, 9), (16, 1, 3, 3), True, {"group": 8, "strides": [2, 2]}),              # depthwise x2
    ((1, 4, 7, 8), (3, 4, 1, 1), True, {}),                                           # pointwise
    ((1, 4, 7, 8), (3, 4, 1, 1), False, {"strides": [2, 2]}),
    ((1, 3, 10, 11), (4, 3, 3, 3), True, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 10, 11), (4, 3, 4, 2), True, {"auto_pad": "SAME_LOWER", "strides": [3, 2]}),
    ((1, 3, 10, 11), (4, 3, 4, 2), True, {"auto_pad": "SAME_UPPER"}),
    ((1, 3, 10, 11), (4, 3, 3, 2), True, {"auto_pad": "VALID", "strides": [2, 3]}),
    ((1, 3, 10, 11), (4, 3, 3, 3), True, {"auto_pad": "NOTSET", "pads": [1, 0, 0, 1]}),
    ((1, 2, 3, 3), (2, 2, 1, 1), False, {"auto_pad": "SAME_UPPER", "strides": [3, 3]}),  # negative SAME pad
    ((1, 3, 10, 11), (4, 3, 3, 3), True, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ((1, 2, 5, 6, 7), (4, 2, 3, 3, 3), True, {"pads": [1, 1, 1, 1, 1, 1]}),           # 3-D
    ((1, 4, 6, 7, 5), (4, 2, 2, 3, 2), True, {"group": 2, "strides": [2, 1, 2], "dilations": [1, 2, 1],
                                                   "pads": [1, 0, 1, 0, 2, 0]}),
    ((1, 3, 6, 7, 5), (2, 3, 3, 2, 3), False, {"auto_pad": "SAME_LOWER", "strides": [2, 2, 1]}),
]


@pytest.mark.parametrize("xs, ws, bias, attrs", CONV_CASES)
def test_conv_matches_onnxruntime(xs, ws, bias, attrs):
    rng = np.random.default_rng(0)
    inputs = [("x", _randn(rng, xs)), ("w", _randn(rng, ws))]
    if bias:
        inputs.append(("b", _randn(rng, (ws[0],))))
    assert_same("Conv", inputs, ["y"], attrs, 17)


@pytest.mark.parametrize("xs, ws, bias, attrs", [c for c in CONV_CASES if not (c[1][1] == 1 and c[3].get("group", 1) > 1)]
                         + [((1, 64, 2, 2), (48, 64, 3, 3), True, {"pads": [1, 1, 1, 1]}),       # resnet's layer4
                            ((2, 40, 3, 3), (24, 40, 1, 1), False, {"strides": [2, 2]})])
def test_conv_one_pass_kernel_matches_onnxruntime(monkeypatch, xs, ws, bias, attrs):
    """The one-pass kernel of GEMV-like convs (conveyor.ops.conv_small), forced on every non-depthwise
    case, against onnxruntime."""
    import conveyor.ops.conv_float as cf
    from conveyor.ops import conv_small

    if not conv_small.available():
        pytest.skip("numba (the `fast`/`test` extra) is not installed")
    monkeypatch.setattr(cf, "_SMALL_USES", {np.dtype(np.float32): 1e9, np.dtype(np.float64): 1e9})
    node = Node("n", "Conv", ("x", "w"), ("y",), dict(attrs), 17)
    geo, group = conveyor.ops.conv._conv_shapes(node, xs, ws)
    assert cf.ConvPlan(xs, np.float32, np.ones(ws, np.float32), None, geo, group).kind == "small"
    rng = np.random.default_rng(0)
    inputs = [("x", _randn(rng, xs)), ("w", _randn(rng, ws))]
    if bias:
        inputs.append(("b", _randn(rng, (ws[0],))))
    assert_same("Conv", inputs, ["y"], attrs, 17)


@pytest.mark.parametrize("opset", [1, 11, 22])
def test_conv_other_opsets(opset):
    rng = np.random.default_rng(1)
    inputs = [("x", _randn(rng, (1, 4, 9, 8))), ("w", _randn(rng, (4, 2, 3, 3))), ("b", _randn(rng, (4,)))]
    assert_same("Conv", inputs, ["y"], {"group": 2, "strides": [2, 1], "pads": [1, 0, 1, 1]}, opset)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_conv_same_with_dilation_follows_spec(auto_pad):
    # onnxruntime refuses dilations with SAME padding; the spec (and onnx's reference)
    # pads by the dilated kernel.
    rng = np.random.default_rng(2)
    inputs = [("x", _randn(rng, (1, 3, 9, 8))), ("w", _randn(rng, (4, 3, 3, 2))), ("b", _randn(rng, (4,)))]
    y, = assert_same("Conv", inputs, ["y"], {"auto_pad": auto_pad, "dilations": [2, 3], "strides": [2, 1]}, 17,
                     oracle=run_ref)
    assert y.shape == (1, 4, 5, 8)


def test_conv_float64_and_float16():
    rng = np.random.default_rng(3)
    x, w, b = _randn(rng, (1, 3, 8, 8)), _randn(rng, (4, 3, 3, 3)), _randn(rng, (4,))
    attrs = {"pads": [1, 1, 1, 1]}
    assert_same("Conv", [("x", x.astype(np.float64)), ("w", w.astype(np.float64)),
                         ("b", b.astype(np.float64))], ["y"], attrs, 17, oracle=run_ref)  # no double Conv in ort
    y16, = run_mine("Conv", [("x", x.astype(np.float16)), ("w", w.astype(np.float16)),
                             ("b", b.astype(np.float16))], ["y"], attrs, 17)
    y32, = run_mine("Conv", [("x", x.astype(np.float16).astype(np.float32)),
                             ("w", w.astype(np.float16).astype(np.float32)),
                             ("b", b.astype(np.float16).astype(np.float32))], ["y"], attrs, 17)
    assert y16.dtype == np.float16
    np.testing.assert_allclose(y16.astype(np.float32), y32, rtol=1e-3, atol=1e-2)


def test_conv_random_configurations():
    rng = np.random.default_rng(1234)
    for _ in range(200):
        nd = int(rng.choice([1, 2, 2, 3]))
        group = int(rng.choice([1, 1, 2, 3]))
        cg, mg = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        if rng.random() < 0.15:  # depthwise
            cg, mg = 1, int(rng.integers(1, 3))
            group = int(rng.integers(2, 6))
        kernel = [int(rng.integers(1, 4)) for _ in range(nd)]
        strides = [int(rng.integers(1, 4)) for _ in range(nd)]
        dil = [int(rng.integers(1, 3)) for _ in range(nd)]
        spatial = [int(rng.integers((k - 1) * d + 1, (k - 1) * d + 8)) for k, d in zip(kernel, dil)]
        if nd == 3:
            spatial = [min(s, 7) for s in spatial]
            spatial = [max(s, (k - 1) * d + 1) for s, k, d in zip(spatial, kernel, dil)]
        attrs = {"strides": strides}
        auto_pad = str(rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
        oracle = run_ort
        if auto_pad == "NOTSET":
            attrs["pads"] = [int(rng.integers(0, 3)) for _ in range(2 * nd)]
        else:
            attrs["auto_pad"] = auto_pad
            if auto_pad.startswith("SAME") and any(d > 1 for d in dil):
                oracle = run_ref
        if any(d > 1 for d in dil) or rng.random() < 0.5:
            attrs["dilations"] = dil
        if group > 1 or rng.random() < 0.3:
            attrs["group"] = group
        n = int(rng.integers(1, 3))
        inputs = [("x", _randn(rng, [n, cg * group] + spatial)),
                  ("w", _randn(rng, [mg * group, cg] + kernel))]
        if rng.random() < 0.7:
            inputs.append(("b", _randn(rng, (mg * group,))))
        assert_same("Conv", inputs, ["y"], attrs, 17, oracle=oracle)


def test_conv_large_chunked_matches_onnxruntime(monkeypatch):
    # Force several im2col chunks (the kernel cuts the column matrix by output rows).
    monkeypatch.setattr(conveyor.ops.conv_float, "_COLS_BYTES", 4096)
    rng = np.random.default_rng(5)
    inputs = [("x", _randn(rng, (2, 8, 17, 15))), ("w", _randn(rng, (12, 4, 3, 3))), ("b", _randn(rng, (12,)))]
    assert_same("Conv", inputs, ["y"], {"group": 2, "pads": [1, 2, 0, 1], "strides": [1, 2]}, 17)


def test_conv_macs_and_infer():
    node = Node("c", "Conv", ("x", "w", "b"), ("y",), {"group": 2, "pads": [1, 1, 1, 1], "strides": [2, 2]}, 17)
    opdef = registry.get("Conv")
    ins = [ValueInfo((2, 8, 32, 30), np.dtype(np.float32)), ValueInfo((16, 4, 3, 3), np.dtype(np.float32)),
           ValueInfo((16,), np.dtype(np.float32))]
    outs = opdef.infer(node, ins)
    assert outs == [((2, 16, 16, 15), np.dtype(np.float32))]
    assert opdef.macs(node, ins, outs) == 2 * 16 * 16 * 15 * 4 * 9
    assert opdef.param_slots == (1, 2)


def test_conv_check_and_shape_errors():
    opdef = registry.get("Conv")
    bad = Node("conv7", "Conv", ("x", "w"), ("y",), {"auto_pad": "SAME"}, 17)
    with pytest.raises(ModelError, match=r"conv7.*auto_pad='SAME'.*SAME_UPPER"):
        opdef.check(bad)
    with pytest.raises(ModelError, match=r"conv8.*strides.*positive"):
        opdef.check(Node("conv8", "Conv", ("x", "w"), ("y",), {"strides": [0, 1]}, 17))
    with pytest.raises(ModelError, match=r"conv9.*pads"):
        opdef.check(Node("conv9", "Conv", ("x", "w"), ("y",), {"pads": [1, 1, 1], "kernel_shape": [3, 3]}, 17))
    node = Node("conv10", "Conv", ("x", "w"), ("y",), {"group": 3}, 17)
    with pytest.raises(ModelError, match=r"conv10.*group=3"):
        opdef.infer(node, [ValueInfo((1, 4, 5, 5), np.dtype(np.float32)),
                           ValueInfo((6, 2, 3, 3), np.dtype(np.float32))])


# ---- pools -----------------------------------------------------------------------------


def naive_pool(x, kind, kernel, strides, begin, end, dil, out, count_include_pad=0, storage_order=0):
    """Straight from the spec text: loops over every output element and window tap."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    y = np.zeros((n, c) + tuple(out), x.dtype)
    idx = np.zeros((n, c) + tuple(out), np.int64)
    for ni, ci in itertools.product(range(n), range(c)):
        for o in itertools.product(*(range(v) for v in out)):
            vals, where, counted = [], [], 0
            for t in itertools.product(*(range(k) for k in kernel)):
                pos = [o[i] * strides[i] - begin[i] + t[i] * dil[i] for i in range(len(out))]
                inside = all(0 <= p < s for p, s in zip(pos, spatial))
                in_pads = all(-begin[i] <= pos[i] < spatial[i] + end[i] for i in range(len(out)))
                if inside:
                    vals.append(x[(ni, ci) + tuple(pos)])
                    where.append(pos)
                counted += inside if not count_include_pad else in_pads
            if kind == "max":
                j = int(np.argmax(vals))
                y[(ni, ci) + o] = vals[j]
                dims = spatial if storage_order == 0 else spatial[::-1]
                pos = where[j] if storage_order == 0 else where[j][::-1]
                idx[(ni, ci) + o] = (ni * c + ci) * int(np.prod(spatial)) + int(np.ravel_multi_index(pos, dims))
            else:
                y[(ni, ci) + o] = np.sum(vals, dtype=np.float64) / counted if counted else 0
    return y, idx


MAXPOOL_CASES = [
    ((1, 2, 9), {"kernel_shape": [3], "strides": [2]}),
    ((1, 2, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 2], "ceil_mode": 1}),
    ((2, 3, 8, 9), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 3, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 7, 9), {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 2, 4, 5), {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 1, 1], "ceil_mode": 1}),  # drop rule
    ((1, 2, 10, 9), {"kernel_shape": [3, 3], "strides": [3, 2], "pads": [2, 0, 2, 1], "ceil_mode": 1}),
    ((1, 2, 9, 10), {"kernel_shape": [3, 2], "dilations": [2, 3], "pads": [1, 1, 2, 1]}),
    ((1, 2, 9, 10), {"kernel_shape": [3, 2], "dilations": [2, 2], "strides": [2, 3], "ceil_mode": 1}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1], "storage_order": 1}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 7, 8), {"kernel_shape": [4, 3], "strides": [2, 3], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID"}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID", "dilations": [2, 1]}),
    ((1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1], "pads": [1, 0, 1, 0, 1, 1]}),
    ((1, 2, 5, 6, 7), {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2], "ceil_mode": 1, "storage_order": 1}),
]


@pytest.mark.parametrize("xs, attrs", MAXPOOL_CASES)
def test_maxpool_matches_onnxruntime(xs, attrs):
    rng = np.random.default_rng(0)
    assert_same("MaxPool", [("x", _randn(rng, xs))], ["y", "i"], attrs, 17)
    assert_same("MaxPool", [("x", _randn(rng, xs))], ["y"], attrs, 12)


def test_maxpool_old_opsets_and_int8():
    rng = np.random.default_rng(1)
    x = _randn(rng, (1, 3, 8, 7))
    assert_same("MaxPool", [("x", x)], ["y"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 1)
    assert_same("MaxPool", [("x", x)], ["y", "i"], {"kernel_shape": [3, 3], "strides": [2, 2], "storage_order": 1}, 8)
    assert_same("MaxPool", [("x", x)], ["y", "i"], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 22)
    xi = rng.integers(-128, 128, (1, 3, 8, 7)).astype(np.int8)
    assert_same("MaxPool", [("x", xi)], ["y"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}, 12)
    xu = rng.integers(0, 256, (1, 3, 8, 7)).astype(np.uint8)
    assert_same("MaxPool", [("x", xu)], ["y"], {"kernel_shape": [2, 3], "pads": [1, 0, 0, 1]}, 12)


AVGPOOL_CASES = [
    ((1, 2, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ((1, 2, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 2], "ceil_mode": 1, "count_include_pad": 1}),
    ((2, 3, 8, 9), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 3, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 3, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ((1, 2, 6, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ((1, 2, 6, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1, "count_include_pad": 1}),
    ((1, 2, 6, 7), {"kernel_shape": [4, 3], "strides": [3, 3], "pads": [1, 0, 1, 2], "ceil_mode": 1, "count_include_pad": 1}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 7, 8), {"kernel_shape": [4, 3], "strides": [2, 3], "auto_pad": "SAME_LOWER", "count_include_pad": 1}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "VALID"}),
    ((1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1], "pads": [1, 0, 1, 0, 1, 1],
                           "count_include_pad": 1}),
]


@pytest.mark.parametrize("xs, attrs", AVGPOOL_CASES)
def test_avgpool_matches_onnxruntime(xs, attrs):
    rng = np.random.default_rng(0)
    for opset in (11, 17, 19):
        assert_same("AveragePool", [("x", _randn(rng, xs))], ["y"], attrs, opset)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 1, 2, 1], "dilations": [2, 2]},
    {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 1, 2, 1], "dilations": [2, 2], "count_include_pad": 1},
    {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 1, 2, 1], "dilations": [2, 2], "count_include_pad": 1,
         "ceil_mode": 1},
    {"kernel_shape": [3, 2], "strides": [2, 1], "auto_pad": "VALID", "dilations": [2, 2]},
])
def test_avgpool_dilations_opset19(attrs):
    rng = np.random.default_rng(3)
    assert_same("AveragePool", [("x", _randn(rng, (1, 2, 9, 8)))], ["y"], attrs, 19)


def test_avgpool_older_opsets():
    rng = np.random.default_rng(4)
    x = _randn(rng, (1, 2, 7, 8))
    # onnxruntime has no AveragePool-1 kernel (and onnx's reference counts the pads
    # there, against the spec); opset 1 means count_include_pad=0, as opset 7's default.
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    got, = run_mine("AveragePool", [("x", x)], ["y"], attrs, 1)
    np.testing.assert_allclose(got, run_ort("AveragePool", [("x", x)], ["y"], attrs, 7)[0], rtol=RTOL, atol=ATOL)
    assert_same("AveragePool", [("x", x)], ["y"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                                       "count_include_pad": 1}, 7)
    assert_same("AveragePool", [("x", x)], ["y"], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                       "ceil_mode": 1}, 10)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_pool_same_with_dilation_follows_spec(op, auto_pad):
    # The spec pads SAME by the dilated kernel so that out = ceil(in / stride);
    # onnxruntime pads by the undilated kernel and gives a smaller output.
    rng = np.random.default_rng(6)
    x = _randn(rng, (1, 2, 7, 8))
    attrs = {"kernel_shape": [3, 2], "strides": [2, 1], "dilations": [2, 2], "auto_pad": auto_pad}
    outs = ["y", "i"] if op == "MaxPool" else ["y"]
    got = run_mine(op, [("x", x)], outs, attrs, 19)
    assert got[0].shape == (1, 2, 4, 8)
    total = [(4 - 1) * 2 + 5 - 7, (8 - 1) * 1 + 3 - 8]  # [4, 2]
    small = [t // 2 for t in total]
    big = [t - t // 2 for t in total]
    begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    y, idx = naive_pool(x, "max" if op == "MaxPool" else "avg", [3, 2], [2, 1], begin, end, [2, 2], [4, 8])
    np.testing.assert_allclose(got[0], y, rtol=RTOL, atol=ATOL)
    if op == "MaxPool":
        np.testing.assert_array_equal(got[1], idx)


def _random_pool_attrs(rng, nd, op):
    kernel = [int(rng.integers(1, 4)) for _ in range(nd)]
    attrs = {"kernel_shape": kernel}
    if rng.random() < 0.7:
        attrs["strides"] = [int(rng.integers(1, 4)) for _ in range(nd)]
    dilate = rng.random() < 0.4
    if dilate:
        attrs["dilations"] = [int(rng.integers(1, 3)) for _ in range(nd)]
    auto_pad = str(rng.choice(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto_pad == "NOTSET":
        if rng.random() < 0.7:  # onnxruntime wants pads smaller than the kernel
            attrs["pads"] = [int(rng.integers(0, k)) for k in kernel * 2]
        if rng.random() < 0.5:
            attrs["ceil_mode"] = 1
    else:
        attrs["auto_pad"] = auto_pad
        if rng.random() < 0.2:  # no effect on the shape with auto_pad
            attrs["ceil_mode"] = 1
    if op == "AveragePool" and rng.random() < 0.5:
        attrs["count_include_pad"] = 1
    if op == "MaxPool" and rng.random() < 0.3:
        attrs["storage_order"] = 1
    return attrs


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_random_configurations(op):
    rng = np.random.default_rng(99 if op == "MaxPool" else 98)
    for _ in range(120):
        nd = int(rng.choice([1, 2, 2, 3]))
        attrs = _random_pool_attrs(rng, nd, op)
        dil = attrs.get("dilations", [1] * nd)
        eff = [(k - 1) * d + 1 for k, d in zip(attrs["kernel_shape"], dil)]
        top = 7 if nd == 3 else 12
        spatial = [int(rng.integers(e, max(e, top) + 1)) for e in eff]
        x = _randn(rng, [int(rng.integers(1, 3)), int(rng.integers(1, 4))] + spatial)
        outs = ["y", "i"] if op == "MaxPool" else ["y"]
        opset = 19 if (op == "AveragePool" and "dilations" in attrs) else int(rng.choice([12, 17, 19]))
        # onnxruntime departs from the spec for SAME padding with dilations (it pads by
        # the undilated kernel) and when the SAME padding formula goes negative (stride
        # larger than the window; the spec's shape inference clamps it to 0).
        spatial_in = x.shape[2:]
        strides = attrs.get("strides", [1] * nd)
        raw_pad = [(-(-i // s) - 1) * s + e - i for i, s, e in zip(spatial_in, strides, eff)]
        same_odd = attrs.get("auto_pad", "").startswith("SAME") and (
            any(d > 1 for d in dil) or min(raw_pad) < 0)
        if not same_odd:
            assert_same(op, [("x", x)], outs, attrs, opset)
            continue
        # check against the naive loop instead.
        node = Node("n", op, ("x",), tuple(outs), attrs, opset)
        geo = conveyor.ops.pool._geometry(node, x.shape)
        got = run_mine(op, [("x", x)], outs, attrs, opset)
        y, idx = naive_pool(x, "max" if op == "MaxPool" else "avg", geo.kernel, geo.strides, geo.begin,
                            geo.end, geo.dilations, geo.out, attrs.get("count_include_pad", 0),
                            attrs.get("storage_order", 0))
        np.testing.assert_allclose(got[0], y, rtol=RTOL, atol=ATOL)
        if op == "MaxPool":
            np.testing.assert_array_equal(got[1], idx)


@pytest.mark.parametrize("xs", [(2, 3, 7), (2, 3, 7, 9), (1, 4, 3, 5, 6)])
def test_global_average_pool(xs):
    rng = np.random.default_rng(7)
    assert_same("GlobalAveragePool", [("x", _randn(rng, xs))], ["y"], {}, 17)
    opdef = registry.get("GlobalAveragePool")
    node = Node("g", "GlobalAveragePool", ("x",), ("y",), {}, 17)
    outs = opdef.infer(node, [ValueInfo(xs, np.dtype(np.float32))])
    assert opdef.macs(node, [ValueInfo(xs, np.dtype(np.float32))], outs) == int(np.prod(xs))


def test_pool_macs_and_infer():
    node = Node("p", "MaxPool", ("x",), ("y", "i"), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 17)
    ins = [ValueInfo((1, 64, 112, 112), np.dtype(np.float32))]
    outs = registry.get("MaxPool").infer(node, ins)
    assert outs == [((1, 64, 56, 56), np.dtype(np.float32)), ((1, 64, 56, 56), np.dtype(np.int64))]
    assert registry.get("MaxPool").macs(node, ins, outs) == 0
    node = Node("a", "AveragePool", ("x",), ("y",), {"kernel_shape": [2, 2], "strides": [2, 2]}, 17)
    outs = registry.get("AveragePool").infer(node, ins)
    assert registry.get("AveragePool").macs(node, ins, outs) == 64 * 56 * 56 * 4


def test_pool_check_errors():
    mp = registry.get("MaxPool")
    with pytest.raises(ModelError, match=r"pool1.*storage_order=2.*0 or 1"):
        mp.check(Node("pool1", "MaxPool", ("x",), ("y",), {"kernel_shape": [2, 2], "storage_order": 2}, 17))
    with pytest.raises(ModelError, match=r"pool2.*kernel_shape.*required"):
        mp.check(Node("pool2", "MaxPool", ("x",), ("y",), {}, 17))
    with pytest.raises(ModelError, match=r"pool3.*Indices.*opset 8"):
        mp.check(Node("pool3", "MaxPool", ("x",), ("y", "i"), {"kernel_shape": [2, 2]}, 7))
    ap = registry.get("AveragePool")
    with pytest.raises(ModelError, match=r"pool4.*dilations.*opset 19"):
        ap.check(Node("pool4", "AveragePool", ("x",), ("y",), {"kernel_shape": [2, 2], "dilations": [2, 2]}, 17))
    with pytest.raises(ModelError, match=r"pool5.*count_include_pad=2"):
        ap.check(Node("pool5", "AveragePool", ("x",), ("y",), {"kernel_shape": [2], "count_include_pad": 2}, 17))
    with pytest.raises(ModelError, match=r"pool6.*auto_pad='same'"):
        ap.check(Node("pool6", "AveragePool", ("x",), ("y",), {"kernel_shape": [2], "auto_pad": "same"}, 17))


# ---- BatchNormalization and LRN ------------------------------------------------------


def _bn_inputs(rng, shape, dtype=np.float32):
    c = shape[1]
    return [("x", _randn(rng, shape, dtype)), ("s", _randn(rng, (c,), dtype)), ("b", _randn(rng, (c,), dtype)),
            ("m", _randn(rng, (c,), dtype)), ("v", (rng.random(c) + 0.1).astype(dtype))]


@pytest.mark.parametrize("opset", [7, 9, 14, 15, 17])
@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 5), (2, 3, 6, 5), (1, 2, 3, 4, 5)])
def test_batchnorm_matches_onnxruntime(opset, shape):
    rng = np.random.default_rng(8)
    attrs = {"epsilon": 1e-3} if opset != 9 else {}
    assert_same("BatchNormalization", _bn_inputs(rng, shape), ["y"], attrs, opset)


def test_batchnorm_old_opset_and_float64():
    rng = np.random.default_rng(9)
    y, = run_mine("BatchNormalization", _bn_inputs(rng, (2, 3, 4, 4)), ["y"], {"is_test": 1}, 6)
    want, = run_ort("BatchNormalization", _bn_inputs(np.random.default_rng(9), (2, 3, 4, 4)), ["y"], {}, 9)
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)
    assert_same("BatchNormalization", _bn_inputs(rng, (2, 3, 4, 4), np.float64), ["y"], {}, 15)


def test_batchnorm_rejects_training():
    bn = registry.get("BatchNormalization")
    assert bn.param_slots == (1, 2, 3, 4)
    ins = ("x", "s", "b", "m", "v")
    with pytest.raises(ModelError, match=r"bn1.*training_mode=1.*inference"):
        bn.check(Node("bn1", "BatchNormalization", ins, ("y",), {"training_mode": 1}, 15))
    with pytest.raises(ModelError, match=r"bn2.*running_mean.*inference only"):
        bn.check(Node("bn2", "BatchNormalization", ins, ("y", "running_mean", "running_var"), {}, 15))
    with pytest.raises(ModelError, match=r"bn3.*spatial=0"):
        bn.check(Node("bn3", "BatchNormalization", ins, ("y",), {"spatial": 0}, 7))
    with pytest.raises(ModelError, match=r"bn4.*is_test=0"):
        bn.check(Node("bn4", "BatchNormalization", ins, ("y",), {}, 6))
    bn.check(Node("bn5", "BatchNormalization", ins, ("y", "", ""), {}, 15))  # omitted outputs are fine
    node = Node("bn6", "BatchNormalization", ins, ("y",), {}, 15)
    with pytest.raises(ModelError, match=r"bn6.*scale.*\(4,\)"):
        bn.infer(node, [ValueInfo((1, 4, 2, 2), np.dtype(np.float32))] + [ValueInfo((3,), np.dtype(np.float32))] * 4)
    vi = [ValueInfo((1, 4, 2, 2), np.dtype(np.float32))] + [ValueInfo((4,), np.dtype(np.float32))] * 4
    assert bn.macs(node, vi, bn.infer(node, vi)) == 16


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("opset", [1, 13, 17])
def test_lrn_matches_onnxruntime(size, opset):
    rng = np.random.default_rng(10 + size)
    attrs = {"size": size, "alpha": 0.01, "beta": 0.6, "bias": 1.5} if size % 3 else {"size": size}
    x = _randn(rng, (2, 7, 5, 4))
    if size % 2:
        assert_same("LRN", [("x", x)], ["y"], attrs, opset)
    # onnxruntime only takes odd sizes (and onnx's reference LRN is broken), so the
    # spec formula itself is the oracle as well.
    got, = run_mine("LRN", [("x", x)], ["y"], attrs, opset)
    alpha, beta, bias = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    x64 = x.astype(np.float64)
    square_sum = np.stack([np.sum(x64[:, max(0, c - lo): c + hi + 1] ** 2, axis=1) for c in range(7)], axis=1)
    want = x64 / (bias + alpha / size * square_sum) ** beta
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_lrn_defaults_check_and_macs():
    rng = np.random.default_rng(11)
    x = _randn(rng, (1, 5, 3, 3))
    assert_same("LRN", [("x", x)], ["y"], {"size": 5}, 17)
    lrn = registry.get("LRN")
    with pytest.raises(ModelError, match=r"lrn1.*size.*required"):
        lrn.check(Node("lrn1", "LRN", ("x",), ("y",), {}, 13))
    with pytest.raises(ModelError, match=r"lrn2.*size=0.*positive"):
        lrn.check(Node("lrn2", "LRN", ("x",), ("y",), {"size": 0}, 13))
    node = Node("lrn3", "LRN", ("x",), ("y",), {"size": 5}, 13)
    vi = [ValueInfo((1, 5, 3, 3), np.dtype(np.float32))]
    assert lrn.macs(node, vi, lrn.infer(node, vi)) == 45 * 5
