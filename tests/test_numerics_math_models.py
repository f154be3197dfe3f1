"""Real modules with the new elementwise and LayerNorm kernels, bit-accurately end to end:
a MobileNetV3-small block (HardSwish, squeeze-excitation with HardSigmoid) from torchvision and
torch's TransformerEncoderLayer (GELU, written by the exporter as Erf; two LayerNorms) run
under ap_fixed<16,6> without a PrecisionError, with their error against the float graph."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

import conveyor
from conveyor.frontends.torchvision_compat import import_torchvision


def _mobilenet_v3_block():
    tv = import_torchvision()
    torch.manual_seed(0)
    norm = partial(torch.nn.BatchNorm2d, eps=0.001, momentum=0.01)   # torchvision's mobilenet_v3 norm layer
    cfg = tv.models.mobilenetv3.InvertedResidualConfig(16, 3, 64, 16, True, "HS", 1, 1, 1.0)
    block = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Hardswish(),
                                tv.models.mobilenetv3.InvertedResidual(cfg, norm)).eval()
    for m in block.modules():   # trained-looking BatchNorm statistics (fresh ones are the identity)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return block


def test_mobilenet_v3_block_runs_under_ap_fixed_16_6():
    block = _mobilenet_v3_block()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    g = conveyor.from_torch(block, torch.from_numpy(x), exporter="torchscript")
    ops = [n.op_type for n in g.nodes]
    assert ops.count("HardSwish") == 3 and "HardSigmoid" in ops, ops
    ref = g.run(x)[g.output_names[0]]
    with torch.no_grad():
        np.testing.assert_allclose(ref, block(torch.from_numpy(x)).numpy(), atol=1e-5)
    out = g.run(x, precision="ap_fixed<16,6>")[g.output_names[0]]
    err = np.max(np.abs(out - ref))
    assert err < 0.02 * np.max(np.abs(ref)), (err, np.max(np.abs(ref)))   # measured 0.0069 of 1.6


def test_transformer_encoder_layer_gelu_runs_under_ap_fixed_16_6():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True,
                                             activation="gelu").eval()
    x = np.random.default_rng(1).standard_normal((1, 6, 16)).astype(np.float32)
    g = conveyor.from_torch(layer, torch.from_numpy(x))
    ops = {n.op_type for n in g.nodes}
    assert {"LayerNormalization", "Erf", "Softmax", "MatMul"} <= ops, ops
    ref = g.run(x)[g.output_names[0]]
    # hls4ml's LayerNorm defaults: a 4,096-entry 1/sqrt table over variances [1e-5, 1) in
    # ap_ufixed<8,5>: runs, but the 3 fraction bits and the clamp above 1 show (measured 0.27)
    coarse = np.max(np.abs(g.run(x, precision="ap_fixed<16,6>")[g.output_names[0]] - ref))
    wide = {"default": "ap_fixed<16,6>",
            "tables": {"layernorm": {"range_power2": -3, "format": "ap_ufixed<16,6,AP_RND_CONV,AP_SAT>"}}}
    fine = np.max(np.abs(g.run(x, precision=wide)[g.output_names[0]] - ref))
    assert np.isfinite(coarse) and coarse < 1.0, coarse
    assert fine < 0.05, fine   # measured 0.018 (outputs up to ~3)
