"""The emulator's batch-1 fast paths give the bits of the kernels they replace: a Relu fused into
the result cast of the Conv / Add before it, x * Sigmoid(x) in one compiled pass, Concat's
identity cast skipped, the compiled ap_fixed cast (ops/fixed.py, numerics/fixed_quantize.py).

Each fused run is compared with runs that cannot fuse: fetching the intermediate tensor (then
the producer's output must exist, so the Emulator runs both kernels) and observing runs (which
never fuse: their statistics are each cast's own)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from conveyor.frontends.onnx import from_model
from conveyor.graph.quantized import emulator_for
from conveyor.numerics import fixed_quantize as fq
from conveyor.numerics.cast import cast
from conveyor.numerics.fixed import FixedType
from tests.helpers import make_model, rand

COMMON = [
    "ap_fixed<18,8,AP_RND_CONV>",
    "ap_fixed<12,4,AP_RND,AP_SAT>",
    "ap_fixed<10,3>",  # TRN, WRAP: sums wrap (to negatives too)
]
RELU_PRECISIONS = COMMON + [
    # the Relu's result narrower than the Conv's: its cast is not the identity, nothing fuses
    {"default": "ap_fixed<16,6,AP_RND_CONV>", "op_types": {"Relu": {"result": "ap_ufixed<6,2,AP_RND,AP_SAT>"}}},
]
SWISH_PRECISIONS = COMMON + [
    # Sigmoid's result coarser than its table's entries, Mul's result saturating
    {"default": "ap_fixed<16,6>", "op_types": {"Sigmoid": {"result": "ap_ufixed<5,0,AP_RND_CONV>"},
                                              "Mul": {"result": "ap_fixed<7,2,AP_RND,AP_SAT>"}}},
]


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.float64).view(np.int64)


def _graph(nodes, outputs, inits, name):
    model = make_model(nodes, [("x", [1, 3, 8, 8])], outputs, inits, name=name)
    return from_model(model, name=name, optimize=False)


def _conv_relu_graph():
    """x -> Conv -> Relu -> Conv -> Add(residual) -> Relu -> y, and the Relu's output r1 also an output."""
    inits = {"w1": rand((4, 3, 3, 3), 1, 0.6), "b1": rand((4,), 2, 0.5),
             "w2": rand((4, 4, 3, 3), 3, 0.4), "b2": rand((4,), 4, 0.5)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu2"),
    ]
    return _graph(nodes, [("y", [1, 4, 8, 8]), ("r1", [1, 4, 8, 8])], inits, "conv_relu")


def _swish_graph():
    """x -> Conv -> c; c * Sigmoid(c) -> m -> Conv -> y (EfficientNet's SiLU as exported)."""
    inits = {"w1": rand((4, 3, 3, 3), 5, 0.8), "b1": rand((4,), 6, 0.5),
             "w2": rand((2, 4, 1, 1), 7, 0.5)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Sigmoid", ["c"], ["s"], name="sig"),
        helper.make_node("Mul", ["c", "s"], ["m"], name="mul"),
        helper.make_node("Conv", ["m", "w2"], ["y"], name="conv2"),
    ]
    return _graph(nodes, [("y", [1, 2, 8, 8])], inits, "swish")


@pytest.mark.parametrize("precision", RELU_PRECISIONS, ids=str)
def test_relu_fused_at_batch_one_equals_the_kernels_one_by_one(precision):
    g = _conv_relu_graph()
    emu = emulator_for(g, precision)
    identity = not isinstance(precision, dict) or "Relu" not in precision.get("op_types", {})
    # where the Relu's cast is the identity the emulator fuses it (conv1 and the residual Add)
    assert sorted(emu._relu_after) == (["add", "conv1"] if identity else [])
    x = rand((1, 3, 8, 8), 0, 2.0)
    fused, _ = emu.run(x)
    # fetching the producers' outputs keeps every kernel separate
    apart, _ = emu.run(x, fetch=["y", "r1", "c1", "s"])
    observed, _ = emu.run(x, observe=True)
    for t in ("y", "r1"):
        np.testing.assert_array_equal(_bits(fused[t]), _bits(apart[t]), err_msg=t)
        np.testing.assert_array_equal(_bits(fused[t]), _bits(observed[t]), err_msg=t)
    # the fused values are the Relu's of the separately computed Conv result
    np.testing.assert_array_equal(_bits(apart["r1"]), _bits(cast(np.maximum(apart["c1"], 0.0),
                                                               emu.node_precision["relu1"].result)))
    assert emu.last_formats["r1"] == emu.node_precision["relu1"].result


def _relu6_graph(opset_attrs: bool = False):
    """x -> Conv -> Clip(0, 6) -> Conv (depthwise) -> Clip(0, 6) -> Conv -> y (MobileNetV2's
    ReLU6 as exported), the last Clip's bounds 0 and 5.3 (5.3: no value of a coarse format)."""
    inits = {"w1": rand((4, 3, 3, 3), 11, 1.5), "b1": rand((4,), 12, 2.0),
             "w2": rand((4, 1, 3, 3), 13, 1.5), "w3": rand((2, 4, 1, 1), 14, 0.5),
             "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32), "hi2": np.array(5.3, np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="clip1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=4, name="conv2"),
        helper.make_node("Clip", ["c2", "lo", "hi2"], ["r2"], name="clip2"),
        helper.make_node("Conv", ["r2", "w3"], ["y"], name="conv3"),
    ]
    return _graph(nodes, [("y", [1, 2, 8, 8])], inits, "relu6")


RELU6_PRECISIONS = COMMON + [
    # the Clip's result holds 6 but not the Conv's values (coarser): its cast is not the identity
    {"default": "ap_fixed<16,6,AP_RND_CONV>", "op_types": {"Clip": {"result": "ap_ufixed<6,3,AP_RND,AP_SAT>"}}},
]


@pytest.mark.parametrize("precision", RELU6_PRECISIONS, ids=str)
def test_relu6_fused_at_batch_one_equals_the_kernels_one_by_one(precision):
    g = _relu6_graph()
    emu = emulator_for(g, precision)
    fmt = emu.node_precision["clip1"].result
    six = float(cast(np.array([6.0]), fmt)[0]) == 6.0  # not in ap_fixed<10,3> (max 3.99)
    # fused where the Clip's cast is the identity (its format holds the Conv's and 6); 5.3 is a
    # value of none of these formats, so clip2 stays a node of its own
    expected = {"conv1": "clip1"} if six and not isinstance(precision, dict) else {}
    assert {k: v.name for k, v in emu._relu_after.items()} == expected
    for seed in (0, 1):
        x = rand((1, 3, 8, 8), seed, 4.0)  # many sums beyond 6 and below 0
        fused, _ = emu.run(x, fetch=["y", "r1"])
        apart, _ = emu.run(x, fetch=["y", "r1", "c1"])  # the Conv's output fetched: no fusion
        observed, _ = emu.run(x, fetch=["y", "r1"], observe=True)
        for t in ("y", "r1"):
            np.testing.assert_array_equal(_bits(fused[t]), _bits(apart[t]), err_msg=f"{t} seed {seed}")
            np.testing.assert_array_equal(_bits(fused[t]), _bits(observed[t]), err_msg=f"{t} seed {seed}")
        assert (apart["r1"] == 0.0).any() and (not six or (apart["r1"] == 6.0).any())  # both bounds taken
        np.testing.assert_array_equal(_bits(apart["r1"]), _bits(cast(np.clip(apart["c1"], 0.0, 6.0),
                                                                   emu.node_precision["clip1"].result)))


@pytest.mark.parametrize("precision", RELU_PRECISIONS, ids=str)
def test_batchnorm_relu_fused_equals_the_kernels_one_by_one(precision):
    """DenseNet's pre-activation: x -> BatchNormalization -> Relu -> Conv."""
    inits = {"s": rand((3,), 21, 1.5), "bb": rand((3,), 22, 1.0), "m": rand((3,), 23, 0.5),
             "v": np.abs(rand((3,), 24, 1.0)) + 0.5, "w": rand((2, 3, 1, 1), 25, 0.5)}
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "bb", "m", "v"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w"], ["y"], name="conv")]
    g = _graph(nodes, [("y", [1, 2, 8, 8])], inits, "bn_relu")
    emu = emulator_for(g, precision)
    identity = not isinstance(precision, dict)
    assert {k: v.name for k, v in emu._relu_after.items()} == ({"bn": "relu"} if identity else {})
    x = rand((1, 3, 8, 8), 26, 3.0)
    fused, _ = emu.run(x, fetch=["y", "r"])
    apart, _ = emu.run(x, fetch=["y", "r", "n"])  # the BN's output fetched: no fusion
    observed, _ = emu.run(x, fetch=["y", "r"], observe=True)
    for t in ("y", "r"):
        np.testing.assert_array_equal(_bits(fused[t]), _bits(apart[t]), err_msg=t)
        np.testing.assert_array_equal(_bits(fused[t]), _bits(observed[t]), err_msg=t)
    assert (apart["n"] < 0).any()  # the Relu had work to do


@pytest.mark.parametrize("precision", SWISH_PRECISIONS, ids=str)
def test_swish_in_one_pass_equals_sigmoid_then_mul(precision):
    g = _swish_graph()
    emu = emulator_for(g, precision)
    assert {k: v.name for k, v in emu._swish_after.items()} == {"sig": "mul"}
    for seed, scale in ((0, 1.0), (1, 6.0)):  # 6.0: many inputs beyond the table's [-8, 8)
        x = rand((1, 3, 8, 8), seed, scale)
        fused, _ = emu.run(x, fetch=["y", "m"])
        apart, _ = emu.run(x, fetch=["y", "m", "s"])  # the Sigmoid's output fetched: no fusion
        observed, _ = emu.run(x, fetch=["y", "m"], observe=True)
        for t in ("y", "m"):
            np.testing.assert_array_equal(_bits(fused[t]), _bits(apart[t]), err_msg=f"{t} seed {seed}")
            np.testing.assert_array_equal(_bits(fused[t]), _bits(observed[t]), err_msg=f"{t} seed {seed}")


def test_concat_skips_only_an_identity_cast():
    inits = {"w": rand((2, 3, 1, 1), 8, 0.7)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Concat", ["x", "c"], ["y"], axis=1, name="cat")]
    g = _graph(nodes, [("y", [1, 5, 8, 8])], inits, "cat")
    x = rand((1, 3, 8, 8), 9, 3.0)
    for precision in ("ap_fixed<16,6>",  # every input's format inside the result's: skipped
                      {"default": "ap_fixed<16,6>", "op_types": {"Concat": {"result": "ap_fixed<6,2,AP_RND,AP_SAT>"}}}):
        emu = emulator_for(g, precision)
        got, _ = emu.run(x)
        ref, _ = emu.run(x, observe=True)
        np.testing.assert_array_equal(_bits(got["y"]), _bits(ref["y"]))
        want = cast(np.concatenate([cast(x.astype(np.float64), emu.config.input_format()),
                                    emu.run(x, fetch=["c"])[0]["c"]], axis=1), emu.node_precision["cat"].result)
        np.testing.assert_array_equal(_bits(got["y"]), _bits(want))


FORMATS = [FixedType(w, i, s, q, o) for w, i in ((8, 3), (18, 8), (32, 12), (53, 20), (6, 0))
           for s in (True, False) for q in ("TRN", "TRN_ZERO", "RND_CONV", "RND", "RND_INF")
           for o in ("WRAP", "SAT", "SAT_SYM")]


@pytest.mark.parametrize("n", [100, 9000])  # the one-kernel path for short arrays, numpy's min/max for long ones
def test_compiled_cast_equals_numpy_cast(n, monkeypatch):
    rng = np.random.default_rng(n)
    for t in FORMATS:
        for scale in (t.max_value * 0.7, t.max_value * 1.01, 1.0):
            x = rng.standard_normal(n) * scale
            x[: n // 10] = (rng.integers(-40, 40, n // 10) + 0.5) * t.lsb  # ties
            x[-3:] = (t.max_value, t.min_value, -0.0)
            got = {}
            for compiled in (True, False):
                if not compiled:
                    monkeypatch.setattr(fq, "_njit", None)
                fresh = fq.quantize_in_range(t, x)
                own = x.copy()
                inplace = fq.quantize_in_range(t, own, inplace=True)
                ro = x.copy()
                ro.setflags(write=False)  # a read-only array (a parameter, a table) is never written
                readonly = fq.quantize_in_range(t, ro)
                got[compiled] = (fresh, inplace, readonly)
                monkeypatch.undo()
            assert (got[True][0] is None) == (got[False][0] is None), (t, scale)
            if got[False][0] is None:
                assert all(v is None for v in got[True]), (t, scale)
                continue
            for a in got[True]:
                np.testing.assert_array_equal(_bits(a), _bits(got[False][0]), err_msg=f"{t} {scale}")
            relu = fq.quantize_in_range(t, x, relu=True)
            if relu is not None:  # the compiled path; numpy's declines a fused Relu
                np.testing.assert_array_equal(_bits(relu), _bits(np.maximum(got[False][0], 0.0)))
            # and through the public entry, which falls back for what the fast path declines
            np.testing.assert_array_equal(_bits(cast(x, t, relu=True)), _bits(np.maximum(t.quantize(x), 0.0)))


@pytest.mark.parametrize("precision", COMMON, ids=str)
def test_conv_bias_added_in_the_plan_equals_the_bias_added_after(monkeypatch, precision):
    """The Emulator hands a Conv's bias to its ConvPlan (added in the plan's own pass): the
    same bits as the sum then `_add_bias`, for every method a plan may take."""
    from conveyor.ops import conv

    cases = [  # (C, M, H, kernel, stride, group): depthwise, pointwise, Winograd/taps, im2col, small output
        (8, 8, 10, 3, 1, 8), (6, 5, 9, 1, 1, 1), (16, 8, 12, 3, 1, 1), (3, 4, 32, 7, 2, 1), (32, 16, 2, 3, 1, 1)]
    seen = set()
    for i, (c, m, h, k, s, grp) in enumerate(cases):
        inits = {"w": rand((m, c // grp, k, k), 30 + i, 0.6), "b": rand((m,), 40 + i, 2.0)}
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[k // 2] * 4, strides=[s, s], group=grp,
                                  name="conv")]
        out = (h + 2 * (k // 2) - k) // s + 1
        model = make_model(nodes, [("x", [1, c, h, h])], [("y", [1, m, out, out])], inits, name=f"bias{i}")
        x = rand((1, c, h, h), 50 + i, 3.0)
        runs = []
        for in_plan in (True, False):
            monkeypatch.setattr(conv._conv_sum_fixed, "takes_bias", in_plan)
            conv._FIXED_PLANS.clear()
            g = from_model(model, name=f"bias{i}", optimize=False)
            runs.append(emulator_for(g, precision).run(x)[0]["y"])
            kinds = {p.kind for _, p in conv._FIXED_PLANS.values()}
            assert all((p.bias is not None) == in_plan for _, p in conv._FIXED_PLANS.values()), kinds
        seen |= kinds
        np.testing.assert_array_equal(_bits(runs[0]), _bits(runs[1]), err_msg=f"case {i} {kinds}")
    assert {"depthwise", "pointwise", "im2col", "small", "winograd"} <= seen, seen
