"""ConvTranspose and Resize/Upsample: float against onnxruntime, bit-accurate kernels against
integer references, and torch autoencoder / segmentation nets through the dynamo exporter."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import conveyor
from conveyor.numerics.fixed import FixedType
from conveyor.ops import conv_transpose, fixed, get
from conveyor.ops.conv import conv_nd
from tests.helpers import ort_run, rand

CT_CASES = [
    ((1, 3, 5, 5), (3, 4, 3, 3), {}),
    ((2, 3, 5, 6), (3, 4, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    ((1, 4, 5, 5), (4, 2, 3, 2), dict(strides=[2, 3], pads=[0, 1, 2, 0], group=2, dilations=[2, 1])),
    ((1, 4, 7), (4, 3, 4), dict(strides=[2], pads=[1, 1])),                       # 1-D
    ((1, 2, 4, 4), (2, 3, 3, 3), dict(strides=[2, 2], output_shape=[10, 9])),
    ((1, 2, 4, 4), (2, 3, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 4, 4), (2, 3, 3, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 6, 4, 4), (6, 1, 3, 3), dict(strides=[2, 2], group=6, pads=[1, 1, 1, 1], output_padding=[1, 1])),
    ((1, 2, 3, 3), (2, 2, 3, 3), dict(pads=[3, 0, 0, 3])),                      # a pad beyond k - 1 crops
]


def _ct_model(xs, ws, attrs, seed=0):
    w = rand(ws, seed)
    b = rand((ws[1] * attrs.get("group", 1),), seed + 1)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="ct", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("xs,ws,attrs", CT_CASES)
def test_conv_transpose_matches_onnxruntime(xs, ws, attrs):
    m = _ct_model(xs, ws, attrs)
    x = rand(xs, 3)
    want = ort_run(m, {"x": x})["y"]
    g = conveyor.from_model(m)
    assert g.tensors["y"].shape == want.shape
    np.testing.assert_allclose(g.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
    # the Conv the bit-accurate kernel's tap order comes from computes the same thing
    node = g.nodes[0]
    xs_, wc, geo, group = conv_transpose.equivalent_conv(node, x.astype(np.float64), g.weights["w"].astype(np.float64))
    np.testing.assert_allclose(conv_nd(xs_, wc, g.weights["b"], geo, group), want, rtol=1e-5, atol=1e-5)


def _int_conv_transpose(x_raw, w_raw, stride, pad):
    """ConvTranspose 2-D by its definition, int64: y[o*] += x[i] w[t] where o = i s + t - pad."""
    n, c, h, w_ = x_raw.shape
    _, m, kh, kw = w_raw.shape
    full = np.zeros((n, m, (h - 1) * stride + kh, (w_ - 1) * stride + kw), np.int64)
    for i in range(h):
        for j in range(w_):
            full[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += np.einsum(
                "nc,cmab->nmab", x_raw[:, :, i, j], w_raw)
    return full[:, :, pad:full.shape[2] - pad, pad:full.shape[3] - pad]


def test_conv_transpose_fixed_point_is_the_integer_sum():
    q = FixedType.parse("ap_fixed<12,4>")
    m = _ct_model((2, 3, 4, 4), (3, 2, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1]))
    g = conveyor.from_model(m)
    x = rand((2, 3, 4, 4), 5)
    got = g.run({"x": x}, precision="ap_fixed<12,4>")["y"]
    raw = lambda a: np.asarray(q.to_raw(np.asarray(a, np.float64)), np.int64)  # noqa: E731
    acc = _int_conv_transpose(raw(x), raw(g.weights["w"]), 2, 1)
    acc = acc + (raw(g.weights["b"]) << q.frac_bits)[None, :, None, None]
    want = q.quantize(acc.astype(np.float64) * 2.0 ** (-2 * q.frac_bits))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("accum", ["ap_fixed<14,6>", "ap_fixed<14,4,AP_RND,AP_SAT>", "ap_fixed<18,4,AP_RND_CONV>"])
def test_conv_transpose_lossy_accumulator_fast_paths_equal_the_loop(accum):
    m = _ct_model((2, 4, 3, 3), (4, 2, 3, 3), dict(strides=[2, 2], group=2, pads=[0, 1, 1, 0]))
    g = conveyor.from_model(m)
    node = g.nodes[0]
    q = FixedType.parse("ap_fixed<10,3>")
    A = FixedType.parse(accum)
    x = q.quantize(rand((2, 4, 3, 3), 7, scale=2.0))
    w, b = q.quantize(g.weights["w"]), q.quantize(g.weights["b"])
    spec = get("ConvTranspose").run_fixed.spec
    fast = fixed.accumulate(spec, node, x, w, b, q, q, q, A)
    slow = fixed.accumulate(spec, node, x, w, b, q, q, q, A, method="sequential")
    np.testing.assert_array_equal(fast, slow)
    exact = fixed.accumulate(spec, node, x, w, b, q, q, q, None)
    assert fast.shape == exact.shape == (2, 4, 6, 6)
    assert not np.array_equal(fast, exact)  # the accumulator is lossy here: the loop's casts matter


def _resize_model(xs, scales=None, sizes=None, roi=None, opset=19, op="Resize", **attrs):
    inits, names = [], ["x", "", "", ""]
    if roi is not None:
        inits.append(numpy_helper.from_array(np.array(roi, np.float32), "roi"))
        names[1] = "roi"
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array(scales, np.float32), "scales"))
        names[2] = "scales"
    if sizes is not None:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        names[3] = "sizes"
    if opset < 11:
        names = ["x", "scales"]
    while names[-1] == "":
        names.pop()
    node = helper.make_node(op, names, ["y"], name="rs", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


RESIZE_CASES = [
    dict(scales=[1, 1, 2, 2], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(scales=[1, 1, 2, 2], mode="linear", coordinate_transformation_mode="half_pixel"),
    dict(scales=[1, 1, 2, 2], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    dict(sizes=[1, 2, 7, 13], mode="linear", coordinate_transformation_mode="align_corners"),
    dict(sizes=[1, 2, 7, 13], mode="cubic", coordinate_transformation_mode="half_pixel_symmetric"),
    dict(scales=[1, 1, 1.5, 2.5], mode="nearest", nearest_mode="round_prefer_ceil"),
    dict(scales=[1, 1, 0.5, 0.7], mode="nearest", coordinate_transformation_mode="half_pixel"),  # float32 ties
    dict(scales=[1, 1, 0.5, 0.7], mode="linear", antialias=1),
    dict(scales=[1, 1, 1.5, 0.7], mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5),
    dict(sizes=[4, 5], axes=[2, 3], mode="linear", keep_aspect_ratio_policy="not_larger"),
    dict(roi=[0, 0, 0.2, 0.3, 1, 1, 0.9, 1.2], sizes=[1, 2, 5, 6], mode="linear",
         coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=10.0),
    dict(scales=[1, 1, 2, 3], opset=10, mode="nearest"),
    dict(scales=[1, 1, 2, 2], opset=10, mode="linear"),
    dict(scales=[1, 1, 2, 2], opset=9, op="Upsample", mode="nearest"),
]


@pytest.mark.parametrize("case", RESIZE_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())[:60])
def test_resize_matches_onnxruntime(case):
    xs = (1, 2, 8, 9) if "roi" in case or "antialias" in case or "exclude_outside" in case else (1, 2, 5, 6)
    m = _resize_model(xs, **case)
    x = rand(xs, 4)
    want = ort_run(m, {"x": x})["y"]
    g = conveyor.from_model(m)
    assert g.tensors["y"].shape == want.shape
    np.testing.assert_allclose(g.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)


def test_resize_refuses_what_it_cannot_read():
    with pytest.raises(conveyor.ModelError, match=r"Resize node 'rs'.*mode='area'.*accepted: nearest, linear, cubic"):
        conveyor.from_model(_resize_model((1, 1, 4, 4), scales=[1, 1, 2, 2], mode="area"))
    with pytest.raises(conveyor.ModelError, match=r"coordinate_transformation_mode='corners'.*accepted: half_pixel"):
        conveyor.from_model(_resize_model((1, 1, 4, 4), scales=[1, 1, 2, 2], coordinate_transformation_mode="corners"))


def test_resize_fixed_point_nearest_keeps_format_linear_casts_the_exact_value():
    q = FixedType.parse("ap_fixed<10,4>")
    x = rand((1, 2, 4, 5), 9)
    xq = q.quantize(x)
    near = conveyor.from_model(_resize_model(x.shape, scales=[1, 1, 2, 2], mode="nearest",
                                             coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
    got = near.run({"x": x}, precision="ap_fixed<10,4>")["y"]
    np.testing.assert_array_equal(got, np.repeat(np.repeat(xq, 2, axis=2), 2, axis=3))
    # bilinear x2, half_pixel: weights 1/4 and 3/4 per axis -> an exact sum on 2^-(6+4); one cast
    lin = conveyor.from_model(_resize_model(x.shape, scales=[1, 1, 2, 2], mode="linear"))
    got = lin.run({"x": x}, precision={"default": "ap_fixed<10,4>", "result": "ap_fixed<16,4,AP_RND>"})["y"]
    raw = np.asarray(q.to_raw(xq), np.int64)

    def up(a, axis):  # 4x the half-pixel linear upsample by 2 on integers: 3 a[i] + a[i -+ 1], edges clamped
        n = a.shape[axis]
        o = np.arange(2 * n)
        other = np.clip(np.where(o % 2 == 0, o // 2 - 1, o // 2 + 1), 0, n - 1)
        return 3 * np.take(a, o // 2, axis=axis) + np.take(a, other, axis=axis)

    want_raw = up(up(raw, 2), 3)  # units 2^-(6 + 4)
    want = FixedType.parse("ap_fixed<16,4,AP_RND>").quantize(want_raw * 2.0 ** -(q.frac_bits + 4))
    np.testing.assert_array_equal(got, want)


def test_torch_autoencoder_and_segmentation_net_through_dynamo():
    import torch
    from torch import nn

    torch.manual_seed(0)
    auto = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, groups=4), nn.ReLU(),
        nn.Conv2d(4, 3, 1),
    ).eval()

    class Seg(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.up1 = nn.Upsample(scale_factor=2, mode="nearest")
            self.up2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.up3 = nn.Upsample(size=(20, 20), mode="bilinear", align_corners=True)
            self.head = nn.Conv2d(16, 5, 1)

        def forward(self, x):
            d = self.down(x)
            y = torch.cat([self.up1(self.mid(d)), d], dim=1)
            return self.up3(self.head(self.up2(y)))

    seg = Seg().eval()
    rng = np.random.default_rng(0)
    for model, shape, want_ops in ((auto, (1, 3, 16, 16), {"ConvTranspose"}), (seg, (1, 3, 16, 16), {"Resize"})):
        x = rng.standard_normal(shape).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # a fallback to TorchScript would warn: fail
            g = conveyor.from_torch(model, torch.from_numpy(x))
        assert want_ops <= {n.op_type for n in g.nodes}
        from conveyor.frontends.export import to_onnx

        ort = ort_run(to_onnx(g), {g.input_names[0]: x})[g.output_names[0]]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = g.run(x)[g.output_names[0]]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, ort, rtol=1e-4, atol=1e-5)
        # and it runs bit-accurately under a precision (finite, close to float at 18 bits)
        fx = g.run(x, precision="ap_fixed<18,8,AP_RND_CONV>")[g.output_names[0]]
        assert np.max(np.abs(fx - ref)) < 0.05 * max(1.0, np.max(np.abs(ref)))


def test_conv_transpose_and_resize_costs():
    from conveyor.cost.work import layer_work
    from conveyor.graph.counters import node_counters

    g = conveyor.from_model(_ct_model((1, 4, 5, 5), (4, 3, 3, 3), dict(strides=[2, 2], group=2)))
    (work,) = layer_work(g, "ap_fixed<8,3>")
    assert work.macs == 4 * 25 * 3 * 9                     # every input value x every weight of its group
    assert work.params == 4 * 3 * 9 + 6 and work.weight_bytes == work.params  # 8-bit weights and biases
    assert work.max_parallel == 4 * 3 * 9
    # 2 input channels per group x ceil(3/2)^2 taps landing per output: 8 + 8 + ceil(log2 8) bits
    assert work.accum_bits == 8 + 8 + 3
    lin = conveyor.from_model(_resize_model((1, 2, 5, 6), scales=[1, 1, 2, 2], mode="linear"))
    near = conveyor.from_model(_resize_model((1, 2, 5, 6), scales=[1, 1, 2, 2], mode="nearest"))
    assert node_counters(lin, lin.nodes[0]).macs == 2 * 10 * 12 * 2 * 2
    assert node_counters(near, near.nodes[0]).macs == 0
    assert layer_work(near)[0].out_bytes == 2 * 10 * 12 * 4
