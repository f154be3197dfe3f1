"""Bit-accurate execution: Graph.run(precision=...) against an independent integer
reference, accuracy of the trained digits CNN, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

import conveyor
from conveyor import PrecisionError, ops, zoo
from conveyor.graph.quantized import quantization_report
from conveyor.numerics.fixed import FixedType

Q16 = FixedType.parse("ap_fixed<16,6>")


def _raw(t: FixedType, x):
    return np.asarray(t.to_raw(np.asarray(x, np.float64)), dtype=np.int64)


def _int_conv2d(x_raw, w_raw, pads):
    """Straight integer convolution (stride 1, groups 1): loops over taps, int64 sums."""
    n, c, h, w = x_raw.shape
    m, _, kh, kw = w_raw.shape
    xp = np.pad(x_raw, ((0, 0), (0, 0), (pads, pads), (pads, pads)))
    oh, ow = h + 2 * pads - kh + 1, w + 2 * pads - kw + 1
    out = np.zeros((n, m, oh, ow), np.int64)
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, ci, i:i + oh, j:j + ow]                  # (n, oh, ow)
                out += patch[:, None] * w_raw[None, :, ci, i, j, None, None]
    return out


def _reference_digits(graph, x):
    """digits-cnn (Conv-Relu-MaxPool x2, Flatten, Gemm) in integers, every value an
    ap_fixed<16,6> raw code: products of 10-fractional-bit codes carry 20 bits."""
    f = Q16.frac_bits
    conv1, relu1, pool1, conv2, relu2, pool2, flat, fc = graph.nodes
    assert [n.op_type for n in graph.nodes] == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm"]
    W = lambda name: _raw(Q16, graph.weights[name])  # noqa: E731

    def requant(acc_raw, acc_frac):  # exact value acc_raw * 2^-acc_frac, assigned to Q16
        return _raw(Q16, acc_raw.astype(np.float64) * 2.0 ** -acc_frac)

    def pool2x2(a):
        n, c, h, w = a.shape
        return a.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

    a = _raw(Q16, x)
    for conv in (conv1, conv2):
        acc = _int_conv2d(a, W(conv.inputs[1]), pads=1)
        acc += W(conv.inputs[2])[None, :, None, None] << f         # bias on the product grid
        a = requant(acc, 2 * f)
        a = requant(np.maximum(a, 0), f)                            # Relu, cast
        a = requant(pool2x2(a), f)                                  # MaxPool, cast
    a = a.reshape(a.shape[0], -1)
    wfc = W(fc.inputs[1])
    wfc = wfc.T if fc.attr("transB", 0) else wfc
    acc = a @ wfc + (W(fc.inputs[2]) << f)
    return requant(acc, 2 * f) * 2.0 ** -f


def test_digits_cnn_matches_integer_reference_bit_for_bit():
    g = zoo.build("digits-cnn")
    x, _ = zoo.digits_dataset("test")
    x = x[:40]
    got = g.with_batch(len(x)).run(x, precision="ap_fixed<16,6>")["output"]
    want = _reference_digits(g, x)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)


def test_digits_cnn_accuracy_within_one_point_at_ap_fixed_16_6():
    g = zoo.build("digits-cnn")
    x, y = zoo.digits_dataset("test")
    r = quantization_report(g, "ap_fixed<16,6>", x, y)
    assert r.float_accuracy == pytest.approx(zoo.digits_record()["test_accuracy"])
    assert r.accuracy >= r.float_accuracy - 0.01
    conv1 = next(layer for layer in r.layers if layer.node == r.layers[0].node)
    assert conv1.result_format == "ap_fixed<16,6>" and conv1.max > conv1.min


def test_overflow_is_counted_and_wrap_vs_sat_differ():
    g = zoo.build("digits-cnn")
    x, y = zoo.digits_dataset("test")
    wrap = quantization_report(g, "ap_fixed<6,2>", x[:50], y[:50])
    sat = quantization_report(g, "ap_fixed<6,2,AP_TRN,AP_SAT>", x[:50], y[:50])
    assert sum(layer.overflow for layer in wrap.layers) > 0
    assert sum(layer.saturated for layer in wrap.layers) == 0
    assert sum(layer.saturated for layer in sat.layers) == sum(layer.overflow for layer in sat.layers) > 0


def test_resnet18_rounding_beats_truncation():
    """ap_fixed's default AP_TRN rounds every weight toward -inf: over 20 layers with
    non-negative activations that bias dominates; AP_RND_CONV removes it."""
    g = zoo.build("resnet18")
    x = np.random.default_rng(0).standard_normal(g.inputs[0].shape).astype(np.float32)
    ref = g.run(x)["output"]
    rel = lambda p: np.sqrt(np.mean((g.run(x, precision=p)["output"] - ref) ** 2) / np.mean(ref ** 2))  # noqa: E731
    rounded, truncated = rel("ap_fixed<18,8,AP_RND_CONV>"), rel("ap_fixed<18,8>")
    assert rounded < 0.05
    assert truncated > 5 * rounded


def test_every_registered_op_has_a_fixed_point_kernel():
    assert all(ops.get(op).run_fixed for op in ops.supported_ops())


def test_a_precision_a_kernel_cannot_apply_is_refused_by_node_name():
    """The recurrent kernels index sigmoid/tanh tables by ap_fixed bits: block formats are refused."""
    g = zoo.build("lstm-small")
    with pytest.raises(PrecisionError, match=r"LSTM node 'lstm'.*mx:fp8_e4m3.*accepted: ap_fixed"):
        g.run(np.zeros(g.inputs[0].shape, np.float32), precision="mx:fp8_e4m3")


def test_lossy_accumulator_is_emulated_and_a_wide_one_equals_auto():
    """A narrow accum_t rounds every product and wraps/saturates partial sums as hls4ml's
    dense/conv loops do (bit for bit against hls4ml's C++ in test_numerics_dot.py)."""
    g = zoo.build("digits-cnn")
    x, _ = zoo.digits_dataset("test")
    x = x[:8]
    g = g.with_batch(len(x))
    auto = g.run(x, precision="ap_fixed<16,6>")["output"]
    lossy = g.run(x, precision={"default": "ap_fixed<16,6>", "accum": "ap_fixed<16,6>"})["output"]
    assert lossy.shape == auto.shape and np.all(np.isfinite(lossy))
    assert not np.array_equal(lossy, auto)  # products lose their low 10 bits: results move
    assert np.max(np.abs(lossy - auto)) < 0.5  # ... but only by rounding, nothing overflows here
    # A wide enough accumulator gives exactly the 'auto' result.
    wide = {"default": "ap_fixed<16,6>", "accum": "ap_fixed<48,20>"}
    np.testing.assert_array_equal(g.run(x, precision=wide)["output"], auto)


def test_block_floating_point_weights_and_activations():
    g = zoo.build("digits-cnn")
    x, y = zoo.digits_dataset("test")
    r = quantization_report(g, "mx:fp8_e4m3", x, y)
    assert r.accuracy >= r.float_accuracy - 0.03


def test_bad_precision_string_shows_the_grammar():
    g = conveyor.zoo.build("jet-mlp")
    with pytest.raises(PrecisionError, match="ap_fixed"):
        g.run(np.zeros((1, 16), np.float32), precision="float<8>")
