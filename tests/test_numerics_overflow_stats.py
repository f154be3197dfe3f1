"""Overflow statistics for the accumulator's casts (bias, products, running sums), counted
against hls4ml's loop written out literally with FixedType (itself checked against the
ap_fixed headers), for saturating and wrapping accumulators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import conveyor
from conveyor.graph.quantized import quantization_report
from conveyor.numerics.fixed import FixedType


def _literal_counts(x, w, b, A: FixedType):
    """acc = (A) b; for k: p = (A)(x_k w_k); acc = (A)(acc + p) -- overflow events of each cast."""
    wide = A.unbounded()

    def over(v):
        r = wide.quantize(v)
        return int(np.count_nonzero((r > A.max_value) | (r < A.min_value)))

    n, k = x.shape
    acc = np.broadcast_to(b, (n, len(b))).astype(np.float64)
    counts = {"bias": over(acc)}
    acc = A.quantize(acc)
    counts["products"] = counts["sums"] = 0
    for i in range(k):
        p = x[:, i:i + 1] * w[None, i, :]
        counts["products"] += over(p)
        p = A.quantize(p)
        counts["sums"] += over(acc + p)
        acc = A.quantize(acc + p)
    return counts, acc


@pytest.mark.parametrize("accum", ["ap_fixed<8,3,AP_RND,AP_SAT>", "ap_fixed<8,3>", "ap_fixed<9,2,AP_TRN,AP_WRAP>"])
def test_accumulator_overflow_counts_match_the_literal_loop(accum):
    torch.manual_seed(1)
    lin = torch.nn.Linear(24, 6)
    with torch.no_grad():
        lin.weight.mul_(12.0)
        lin.bias.mul_(40.0)
    g = conveyor.from_torch(lin, torch.zeros(1, 24))
    fmt = "ap_fixed<10,4,AP_RND,AP_SAT>"
    cfg = {"default": fmt, "accum": accum}
    x = FixedType.parse(fmt).quantize(np.random.default_rng(0).standard_normal((400, 24)) * 2)
    node = g.nodes[0]
    emu = conveyor.graph.quantized.emulator_for(g, cfg)
    w = emu.params[(node.name, 1)]
    w = w.T if node.attr("transB", 0) else w
    b = emu.params[(node.name, 2)]
    want, acc = _literal_counts(x, w, b, FixedType.parse(accum))
    assert want["sums"] > 0  # the case exercises overflow
    out, stats = emu.run(x, observe=True)
    st = stats[node.name]
    assert (st.accum_bias_overflow, st.accum_product_overflow, st.accum_sum_overflow) == \
        (want["bias"], want["products"], want["sums"])
    np.testing.assert_array_equal(out[g.output_names[0]], FixedType.parse(fmt).quantize(acc))
    rep = quantization_report(g, cfg, x)
    layer = rep.layers[0]
    assert layer.accum_overflow == sum(want.values())
    assert layer.accum_saturating == ("SAT" in accum)
    # the result cast alone would have said nothing about the accumulator
    assert layer.accum_casts == 400 * 6 * (24 * 2 + 1)


def test_quantize_cli_shows_accumulator_counts(tmp_path):
    from click.testing import CliRunner

    from conveyor.cli import cli

    torch.manual_seed(1)
    lin = torch.nn.Sequential(torch.nn.Linear(24, 6))
    with torch.no_grad():
        lin[0].weight.mul_(12.0)
    path = tmp_path / "lin.onnx"
    torch.onnx.export(lin, torch.zeros(1, 24), str(path), dynamo=False)
    r = CliRunner().invoke(cli, ["quantize", str(path), "--precision", "hls4ml:ap_fixed<8,3,AP_RND,AP_SAT>", "-n", "64"])
    assert r.exit_code == 0, r.output
    assert "accum sat/wrap" in r.output and " sat" in r.output
