"""The emulator's exact Conv sums by Winograd F(2x2, 3x3) (conveyor/ops/winograd.py, float64 on
grid values): bit for bit the sequential loop and the im2col sums where the proved headroom
admits it (at least winograd.EXACT_BITS below 2^53), and the direct sums where it does not
(docs/numerics.md, "the exact path")."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor import ops, zoo
from conveyor.graph.tensor import Node
from conveyor.numerics.fixed import FixedType
from conveyor.ops import conv, fixed, winograd
from conveyor.ops import conv_float as cf


@pytest.fixture(autouse=True)
def _winograd_alone(monkeypatch):
    """These tests hold Winograd's exact path: small outputs, which ConvPlan gives the one-pass
    kernel first (conv_small, its own tests), take Winograd here."""
    monkeypatch.setattr(cf, "_SMALL_USES", {})
    conv._FIXED_PLANS.clear()
    yield
    conv._FIXED_PLANS.clear()

SPEC = ops.get("Conv").run_fixed.spec


def _node(pads):
    return Node("c", "Conv", ("x", "W", "B"), ("y",), {"pads": pads}, 17)


def _grid(t: FixedType, shape, rng, extreme=False):
    """Values of type t: raw codes uniform over the range, or (extreme) only its end points."""
    if extreme:
        raw = np.where(rng.random(shape) < 0.5, t.raw_min, t.raw_max)
    else:
        raw = rng.integers(t.raw_min, t.raw_max, size=shape, endpoint=True)
    return t.from_raw(raw)


def _exact_reference(x, w, pads, fx, fw):
    """The direct sums in Python integers (no float at all), as float64 grid values."""
    xi = np.rint(x * 2.0 ** fx.frac_bits).astype(np.int64).astype(object)
    wi = np.rint(w * 2.0 ** fw.frac_bits).astype(np.int64).astype(object)
    xp = np.pad(xi, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    acc = sum(np.einsum("nchw,mc->nmhw", xp[:, :, a:a + oh, b:b + ow], wi[:, :, a, b])
              for a in range(3) for b in range(3))
    return np.array(acc, dtype=np.float64) * 2.0 ** -(fx.frac_bits + fw.frac_bits)


def _methods(node, x, w, b, fx, fw, fb, acc):
    """accumulate's result and the Conv methods its exact sums took."""
    conv._FIXED_PLANS.clear()
    y = fixed.accumulate(SPEC, node, x, w, b, fx, fw, fb, acc)
    return y, {p.kind for _, p in conv._FIXED_PLANS.values()}


@pytest.mark.parametrize("extreme", [False, True])
def test_winograd_sums_equal_the_sequential_loop_and_im2col(extreme):
    rng = np.random.default_rng(3 + extreme)
    seen = 0
    for case in range(8):
        fx = FixedType(int(rng.integers(6, 17)), int(rng.integers(0, 8)), bool(case % 3))
        fw = FixedType(int(rng.integers(4, 13)), int(rng.integers(-1, 3)))
        fb = FixedType(12, 4)
        n, c, m = int(rng.integers(1, 3)), int(rng.choice([16, 24])), int(rng.integers(2, 6))
        h, wd = int(rng.integers(5, 12)), int(rng.integers(5, 12))  # odd sizes: cut tiles
        pads = [int(rng.integers(0, 3)) for _ in range(4)]
        node = _node(pads)
        x = _grid(fx, (n, c, h, wd), rng, extreme)
        w = _grid(fw, (m, c, 3, 3), rng, extreme)
        b = _grid(fb, (m,), rng)
        # a lossless accumulator (the sums' grid, integer bits for the largest sum) for the loop
        units = fx.frac_bits + fw.frac_bits
        top = int(np.ceil(np.log2(9 * c * fx.max_value * np.abs(w).max() + 16 + 1))) + 2
        wide = FixedType(top + max(units, fb.frac_bits), top)
        auto, kinds = _methods(node, x, w, b, fx, fw, fb, None)
        assert kinds == {"winograd"}, (case, kinds)
        seq = fixed.accumulate(SPEC, node, x, w, b, fx, fw, fb, wide, method="sequential")
        np.testing.assert_array_equal(auto, seq, err_msg=str(case))
        # the same accumulator's exact sums by float_dot (an ap_fixed accum goes to the compiled
        # integer loop first: here its bound, K max|x| max|w| + max|b|, goes to _exact_sum)
        bound = 9 * c * np.abs(x).max() * np.abs(w).max() + np.abs(b).max()
        conv._FIXED_PLANS.clear()
        via = fixed._exact_sum(SPEC, node, x, w, wide.quantize(b), max(units, fb.frac_bits), bound, wide)
        assert {p.kind for _, p in conv._FIXED_PLANS.values()} == {"winograd"}
        np.testing.assert_array_equal(via, seq, err_msg=str(case))
        geo, _ = conv._conv_shapes(node, x.shape, w.shape)
        direct = cf.ConvPlan(x.shape, np.float64, w, None, geo, 1)  # no proof: im2col or taps
        assert direct.kind in ("im2col", "taps")
        np.testing.assert_array_equal(auto, direct(x) + b.reshape(-1, 1, 1), err_msg=str(case))
        seen += 1
    assert seen == 8


def _aligned(fx, fw, c):
    """Extreme values that drive Winograd's intermediates to the direct bound with the finest
    grid: every input at fx's maximum but one lsb less at odd positions (V_11 an odd number of
    lsb), every weight at fw's maximum (U_11 = 9/4 max|w|: a quarter lsb)."""
    x = np.full((1, c, 8, 8), fx.max_value)
    x[:, :, 1::2, 1::2] -= fx.lsb
    return x, np.full((4, c, 3, 3), fw.max_value)


def test_a_bound_without_the_headroom_falls_back_to_the_direct_sums():
    """0.8 bits of headroom: Winograd would round (its intermediates need 4.83 bits more), so the
    exact path takes im2col, which gives the integer sums; 7.8 bits: Winograd, also exact."""
    node, pads = _node([1, 1, 1, 1]), [1, 1, 1, 1]
    for wx, ww, want in ((24, 23, "im2col"), (22, 22, "im2col"), (20, 20, "winograd")):
        fx, fw = FixedType(wx, 4), FixedType(ww, 2)
        x, w = _aligned(fx, fw, 16)
        bits = 53 - fx.frac_bits - fw.frac_bits - np.log2(9 * 16 * fx.max_value * fw.max_value)
        assert (bits >= winograd.EXACT_BITS) == (want == "winograd")
        y, kinds = _methods(node, x, w, None, fx, fw, None, None)
        assert kinds == {want}, (wx, ww, bits, kinds)
        ref = _exact_reference(x, w, pads, fx, fw)
        np.testing.assert_array_equal(y, ref)
        if bits < 1:  # the fallback matters: Winograd itself rounds these sums
            geo, _ = conv._conv_shapes(node, x.shape, w.shape)
            forced = winograd.Winograd(x.shape, w, geo, np.float64)(x)
            assert np.mean(forced != ref) > 0.5


def test_per_output_bounds_pass_no_proof():
    """A bound per output (sum_k |x_k||w_k|, the accumulator check's tighter one) says nothing
    of Winograd's intermediates: the exact sums are the direct ones."""
    fx, fw = FixedType(10, 4), FixedType(8, 2)
    rng = np.random.default_rng(5)
    x, w = _grid(fx, (1, 16, 8, 8), rng), _grid(fw, (4, 16, 3, 3), rng)
    conv._FIXED_PLANS.clear()
    fixed._exact_sum(SPEC, _node([1, 1, 1, 1]), x, w, None, 12, 100.0, None, per_output=True)
    assert {p.kind for _, p in conv._FIXED_PLANS.values()} == {"im2col"}
    fixed._exact_sum(SPEC, _node([1, 1, 1, 1]), x, w, None, 12, 100.0, None)
    assert "winograd" in {p.kind for _, p in conv._FIXED_PLANS.values()}


def test_emulated_resnet_takes_winograd_and_keeps_its_bits(monkeypatch):
    g = zoo.build("resnet18", size=32)
    x = np.random.default_rng(0).normal(size=g.tensors[g.input_names[0]].shape)
    conv._FIXED_PLANS.clear()
    p = "ap_fixed<18,8,AP_RND_CONV>"
    got = g.run(x, precision=p)[g.output_names[0]]
    assert "winograd" in {pl.kind for _, pl in conv._FIXED_PLANS.values()}
    monkeypatch.setattr(cf, "_WINOGRAD_MIN_C", 1 << 30)  # no Winograd anywhere
    conv._FIXED_PLANS.clear()
    np.testing.assert_array_equal(g.run(x, precision=p)[g.output_names[0]], got)
    assert "winograd" not in {pl.kind for _, pl in conv._FIXED_PLANS.values()}
