"""Batched MatMul of two run-time tensors (attention's Q K^T and A V) under a precision: products
exact, the accumulator per the config, against integer references; torch MultiheadAttention."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import conveyor
from conveyor.numerics.fixed import FixedType
from tests.helpers import make_model, ort_run, rand

Q = FixedType.parse("ap_fixed<10,3>")


def _attention_core():
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2], name="t"),
             helper.make_node("MatMul", ["q", "kt"], ["s"], name="qk"),
             helper.make_node("MatMul", ["s", "v"], ["y"], name="av")]
    m = make_model(nodes, [("q", (2, 3, 4, 8)), ("k", (2, 3, 4, 8)), ("v", (1, 3, 4, 5))], [("y", (2, 3, 4, 5))])
    feeds = {"q": rand((2, 3, 4, 8), 1), "k": rand((2, 3, 4, 8), 2), "v": rand((1, 3, 4, 5), 3)}  # v broadcasts
    return m, feeds


def _raw(fmt, a):
    return np.asarray(fmt.to_raw(np.asarray(a, np.float64)), np.int64)


def _lossy_matmul(a_raw, b_raw, frac_in: int, A: FixedType) -> np.ndarray:
    """hls4ml's loop on integers for accum_t with AP_TRN, AP_WRAP: acc += (accum_t)(a[k] b[k]),
    k ascending; each product floored to accum's LSB, each sum wrapped to accum's width."""
    shift = frac_in - A.frac_bits
    assert shift > 0
    acc = np.zeros(np.broadcast_shapes(a_raw.shape[:-2], b_raw.shape[:-2]) + (a_raw.shape[-2], b_raw.shape[-1]), np.int64)
    half = 1 << (A.width - 1)
    for k in range(a_raw.shape[-1]):
        p = a_raw[..., :, k, None] * b_raw[..., k, None, :]
        acc = acc + (p >> shift)                    # floor (arithmetic shift)
        acc = (acc + half) % (1 << A.width) - half  # wrap to W bits, signed
    return acc.astype(np.float64) * 2.0 ** -A.frac_bits


def test_attention_matmuls_exact_accumulator_equal_the_integer_product():
    m, feeds = _attention_core()
    g = conveyor.from_model(m)
    np.testing.assert_allclose(g.run(feeds)["y"], ort_run(m, feeds)["y"], rtol=1e-5, atol=1e-5)
    R = FixedType.parse("ap_fixed<16,6,AP_RND_CONV,AP_SAT>")
    got = g.run(feeds, precision={"default": "ap_fixed<10,3>", "result": str(R), "input": "ap_fixed<10,3>"})
    q, kt, v = _raw(Q, feeds["q"]), _raw(Q, feeds["k"]).swapaxes(-1, -2), _raw(Q, feeds["v"])
    s = R.quantize((q @ kt).astype(np.float64) * 2.0 ** (-2 * Q.frac_bits))   # exact sum, one cast
    y = R.quantize((_raw(R, s) @ v).astype(np.float64) * 2.0 ** -(R.frac_bits + Q.frac_bits))
    np.testing.assert_array_equal(got["y"], y)


def test_attention_matmuls_lossy_accumulator_follow_the_loop():
    m, feeds = _attention_core()
    g = conveyor.from_model(m)
    A = FixedType.parse("ap_fixed<9,4>")  # AP_TRN, AP_WRAP; products carry 14 fractional bits, accum 5
    cfg = {"default": "ap_fixed<10,3>", "accum": str(A), "result": "ap_fixed<9,4>"}
    got = g.run(feeds, precision=cfg)
    q, kt, v = _raw(Q, feeds["q"]), _raw(Q, feeds["k"]).swapaxes(-1, -2), _raw(Q, feeds["v"])
    s = A.quantize(_lossy_matmul(q, kt, 2 * Q.frac_bits, A))  # result format = accum format here
    y = _lossy_matmul(_raw(A, s), v, A.frac_bits + Q.frac_bits, A)
    np.testing.assert_array_equal(got["y"], A.quantize(y))
    exact = g.run(feeds, precision={"default": "ap_fixed<10,3>", "result": "ap_fixed<9,4>"})["y"]
    assert not np.array_equal(exact, got["y"])  # the accumulator's casts matter here


def test_multihead_attention_under_a_precision():
    torch = pytest.importorskip("torch")

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            return self.a(x, x, x, need_weights=False)[0]

    torch.manual_seed(0)
    model = Attn().eval()
    x = np.random.default_rng(0).standard_normal((1, 6, 16)).astype(np.float32)
    g = conveyor.from_torch(model, torch.from_numpy(x))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = g.output_names[0]
    np.testing.assert_allclose(g.run(x)[out], ref, rtol=1e-4, atol=1e-5)
    runtime = [n for n in g.nodes if n.op_type == "MatMul" and not g.is_weight(n.inputs[1])]
    assert len(runtime) == 2  # Q K^T and A V
    p = "ap_fixed<18,6,AP_RND_CONV>"
    assert float(np.max(np.abs(g.run(x, precision=p)[out] - ref))) < 0.05
    # each run-time MatMul is the exact integer product of the values it was given, cast once
    R = FixedType.parse(p)
    for node in runtime:
        t = g.run(x, precision=p, fetch=[node.inputs[0], node.inputs[1], node.outputs[0]])
        a, b = (_raw(R, t[i]) for i in node.inputs[:2])
        np.testing.assert_array_equal(t[node.outputs[0]], R.quantize((a @ b) * 2.0 ** (-2 * R.frac_bits)))
    from conveyor.cost.work import layer_work

    work = {w.node: w for w in layer_work(g, "ap_fixed<18,6>")}
    qk = work[runtime[0].name]
    assert qk.params == 0 and qk.macs == 2 * 6 * 6 * 8  # heads x L x L x head dim
