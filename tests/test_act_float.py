"""The compiled in-place Relu and Clip of the fused float plan (conveyor.ops.act_float) against
the numpy calls they replace: the same bits (NaN, +-0, +-inf included), float32 and float64,
contiguous or not, and in a plan (a Conv's Relu/Clip merged into it) against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor.graph.tensor import Node
from conveyor.ops import act_float
from tests.test_graph_float_plan import _check, _graph, _w

SPECIAL = [-0.0, 0.0, np.nan, -np.nan, -1.5, 2.0, 6.0, 6.5, -np.inf, np.inf, 1e-40, -1e-40]


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
def test_relu_and_clip_into_equal_numpy_bit_for_bit(dtype, contiguous):
    rng = np.random.default_rng(0)
    base = np.concatenate([np.array(SPECIAL), rng.standard_normal(1000) * 5]).astype(dtype)

    def make():  # a fresh array to write into: contiguous, or every other column of one
        return base.reshape(4, -1).copy() if contiguous else np.repeat(base, 2).reshape(4, -1)[:, ::2]
    for fn, ref in ((act_float.relu_into, lambda v: np.maximum(v, np.zeros((), v.dtype))),
                    (act_float.clip_into(np.float32(0), np.float32(6)),
                     lambda v: np.clip(v, np.asarray(0, v.dtype), np.asarray(6, v.dtype))),
                    (act_float.clip_into(np.array([-1.0]), np.array(1.0)),
                     lambda v: np.clip(v, np.asarray(-1, v.dtype), np.asarray(1, v.dtype)))):
        v = make()
        assert v.flags.c_contiguous == contiguous
        want = ref(make())
        got = fn(v)
        assert got is v  # in place
        _same_bits(np.ascontiguousarray(got), np.ascontiguousarray(want))


@pytest.mark.parametrize("act", ["Relu", "Clip"])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_then_activation_in_a_plan(act, bias, monkeypatch):
    """A Conv's Relu/Clip runs in the Conv's bias pass (act_float.bias_act), the values of the
    unfused plan and onnxruntime's."""
    calls = []
    real = act_float.bias_act
    monkeypatch.setattr(act_float, "bias_act", lambda *a: calls.append(a[2]) or real(*a))
    rng = np.random.default_rng(1)
    weights = {"w": _w(rng, 6, 3, 3, 3), "b": _w(rng, 6), "lo": np.array(0.0, np.float32),
               "hi": np.array(0.5, np.float32)}
    ins = ("a", "lo", "hi") if act == "Clip" else ("a",)
    nodes = [Node("c", "Conv", ("x", "w", "b") if bias else ("x", "w"), ("a",), {"pads": [1, 1, 1, 1]}, 17),
             Node("r", act, ins, ("y",), {}, 17)]
    g = _graph(nodes, (1, 3, 7, 7), ["y"], weights)
    plan, lost = g._float_plan
    assert [e[0].op_type for e in plan] == ["Conv"] and lost == {"a"}  # merged into the Conv
    got = _check(g, rng.standard_normal((1, 3, 7, 7)).astype(np.float32))["y"]
    assert got.min() == 0 and (act == "Relu" or got.max() == np.float32(0.5))
    assert calls and set(calls) == {1 if act == "Relu" else 2}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("xs,ws,attrs", [
    ((1, 4, 6, 6), (8, 4, 1, 1), {}),                                    # pointwise / one-pass
    ((1, 3, 12, 12), (5, 3, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),  # im2col
    ((1, 16, 10, 10), (16, 16, 3, 3), {"pads": [1, 1, 1, 1]}),           # winograd (float32)
    ((1, 6, 9, 9), (6, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 6}),    # depthwise
])
def test_conv_call_act_equals_conv_then_activation(dtype, xs, ws, attrs):
    """ConvPlan.call_act against the Conv's prepared kernel then relu_into/clip_into: the same
    bits, for each method and dtype (float16 outputs take the unfused order)."""
    from conveyor.ops import registry
    from conveyor.ops.registry import ValueInfo

    rng = np.random.default_rng(3)
    x = rng.standard_normal(xs).astype(dtype)
    w = _w(rng, *ws).astype(dtype)
    b = _w(rng, ws[0]).astype(dtype)
    node = Node("c", "Conv", ("x", "w", "b"), ("y",), attrs, 17)
    kernel = registry.get("Conv").prepare(node, [ValueInfo(x.shape, x.dtype, None), ValueInfo(w.shape, w.dtype, w),
                                                 ValueInfo(b.shape, b.dtype, b)])
    for act, lo, hi, after in ((1, 0.0, 0.0, act_float.relu_into), (2, -0.25, 0.5, act_float.clip_into(-0.25, 0.5))):
        want = after(kernel([x])[0])
        _same_bits(kernel.with_act(act, lo, hi)([x])[0], want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 5, 4, 3), (2, 3, 7), (3, 4)])
def test_batchnorm_prepared_equals_its_numpy_kernel(dtype, shape):
    """BatchNormalization's prepared kernel (compiled a * x + b) and its in-place form against
    `run` (np.multiply then +=): the same bits; a strided input takes numpy."""
    from conveyor.ops import registry
    from conveyor.ops.registry import ValueInfo

    rng = np.random.default_rng(2)
    c = shape[1]
    params = [rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype),
              rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.1).astype(dtype)]
    node = Node("bn", "BatchNormalization", ("x", "s", "b", "m", "v"), ("y",), {"epsilon": 1e-3}, 15)
    opdef = registry.get("BatchNormalization")
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x.flat[:3] = [np.nan, -0.0, np.inf]
    kernel = opdef.prepare(node, [ValueInfo(x.shape, x.dtype, None)] + [ValueInfo(p.shape, p.dtype, p) for p in params])
    want = opdef.run(node, [x] + params)[0]
    x0 = x.copy()
    _same_bits(kernel([x])[0], want)
    _same_bits(x, x0)  # run does not write into its input
    v = x.copy()
    assert kernel.into(v) is v
    _same_bits(v, want)
    wide = np.repeat(x, 2, axis=-1)[..., ::2]  # not contiguous
    _same_bits(kernel([wide])[0], want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_bias_added_by_the_compiled_pass_equals_numpy(dtype, monkeypatch):
    """ConvPlan's bias on planes of >= 256 outputs (act_float.bias_act, act 0) against the
    same plan without bias then numpy's += bias: the same bits."""
    from conveyor.ops import conv_float
    from conveyor.ops.conv import Windows

    calls = []
    real = act_float.bias_act
    monkeypatch.setattr(act_float, "bias_act", lambda *a: calls.append(a[2]) or real(*a))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 5, 16, 16)).astype(dtype)
    w = _w(rng, 7, 5, 3, 3).astype(dtype)
    b = _w(rng, 7).astype(dtype)
    geo = Windows((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), (16, 16))
    with_bias = conv_float.ConvPlan(x.shape, x.dtype, w, b, geo, 1)(x)
    assert calls == [0]
    want = conv_float.ConvPlan(x.shape, x.dtype, w, None, geo, 1)(x)
    want += b.reshape(1, 7, 1, 1)
    _same_bits(with_bias, want)
