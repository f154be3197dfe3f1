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


def _einsum_matmul(a_raw, b_raw, frac_in: int, A: FixedType) -> np.ndarray:
    """hls4ml's einsum loop (nnet_einsum.h) on integers: ``accum_buf += product(a, b)``, k
    ascending: the exact product added to the running sum, the sum assigned to accum_t. Written
    here for AP_TRN (floor) or AP_RND_CONV (ties to even), with AP_WRAP or AP_SAT."""
    shift = frac_in - A.frac_bits
    assert shift > 0
    acc = np.zeros(np.broadcast_shapes(a_raw.shape[:-2], b_raw.shape[:-2]) + (a_raw.shape[-2], b_raw.shape[-1]), np.int64)
    half = 1 << (A.width - 1)
    for k in range(a_raw.shape[-1]):
        v = (acc << shift) + a_raw[..., :, k, None] * b_raw[..., k, None, :]   # exact, in product LSBs
        q, r = v >> shift, v & ((1 << shift) - 1)                             # floor and remainder
        if A.rounding == "RND_CONV":
            q = q + ((r > (1 << (shift - 1))) | ((r == (1 << (shift - 1))) & (q % 2 == 1)))
        acc = np.clip(q, -half, half - 1) if A.overflow == "SAT" else (q + half) % (1 << A.width) - half
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


# 10-bit inputs with 7 fractional bits; 8-bit ones with 3, whose products (6) are one bit finer than
# accum (5): rounding ties are frequent, where AP_RND_CONV on sums and on products part ways
@pytest.mark.parametrize("accum,fmt", [("ap_fixed<9,4>", "ap_fixed<10,3>"), ("ap_fixed<9,4,AP_RND_CONV,AP_SAT>", "ap_fixed<8,5>")])
def test_attention_matmuls_lossy_accumulator_follow_hls4ml_einsum(accum, fmt):
    m, feeds = _attention_core()
    g = conveyor.from_model(m)
    A, Q = FixedType.parse(accum), FixedType.parse(fmt)
    cfg = {"default": fmt, "accum": accum, "result": accum}
    got = g.run(feeds, precision=cfg)
    q, kt, v = _raw(Q, feeds["q"]), _raw(Q, feeds["k"]).swapaxes(-1, -2), _raw(Q, feeds["v"])
    s = _einsum_matmul(q, kt, 2 * Q.frac_bits, A)  # result format = accum format here: no further cast
    y = _einsum_matmul(_raw(A, s), v, A.frac_bits + Q.frac_bits, A)
    np.testing.assert_array_equal(got["y"], y)
    exact = g.run(feeds, precision={"default": fmt, "result": accum})["y"]
    assert not np.array_equal(exact, got["y"])  # the accumulator's casts matter here
    if A.rounding == "RND_CONV":  # ... and casting each product first (hls4ml's Dense) differs from einsum's
        from conveyor.ops import fixed, get

        node = next(n for n in g.nodes if n.name == "qk")
        xs = [Q.quantize(feeds["q"]), Q.quantize(feeds["k"]).swapaxes(-1, -2)]
        dense = fixed.accumulate(get("MatMul").run_fixed.spec, node, *xs, None, Q, Q, None, A, method="sequential")
        assert not np.array_equal(dense, s)


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
