"""Larger torchvision architectures (random weights, 32 px) and a torch GRU through torch's dynamo
exporter (conveyor.from_torch's default), checked against torch and onnxruntime. Batch-norm
statistics are randomised too, so that activations stay O(1) through 50-120 layers (with
torchvision's fresh running stats some nets' outputs shrink to 1e-17 and any check passes)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import conveyor
from conveyor.frontends.export import to_onnx
from conveyor.frontends.torchvision_compat import import_torchvision, randomise_batchnorm
from tests.helpers import assert_float32_close, ort_run


def _check(model, x, want_ops=()):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fallback to TorchScript would warn: fail instead
        g = conveyor.from_torch(model, torch.from_numpy(x))
    assert set(want_ops) <= {n.op_type for n in g.nodes}
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    scale = float(np.max(np.abs(ref)))
    assert scale > 1e-3, f"degenerate reference output (max |y| = {scale:.3g})"
    got = g.run(x)[g.output_names[0]]
    assert_float32_close(got, ref, g)  # both float32: the accumulation bound (tests/helpers.py)
    ort = ort_run(to_onnx(g), {g.input_names[0]: x})[g.output_names[0]]
    np.testing.assert_allclose(ort, ref, rtol=1e-4, atol=1e-4 * scale)
    # and bit-accurately under a wide fixed-point precision: every op has a kernel, the result is close
    # (measured relative RMS errors: 0.05 for the GRU, whose sigmoid/tanh are hls4ml's lookup tables)
    fx = g.run(x, precision="ap_fixed<24,10,AP_RND_CONV>")[g.output_names[0]]
    assert np.sqrt(np.mean((fx - ref) ** 2) / np.mean(ref ** 2)) < 0.1


@pytest.mark.parametrize("arch,ops", [
    ("resnet50", {"ReduceMean"}),                     # bottlenecks; the dynamo exporter's mean pooling
    ("mobilenet_v2", {"Clip"}),                       # depthwise convs, ReLU6
    ("efficientnet_b0", {"Sigmoid", "Mul"}),          # SiLU, squeeze-and-excitation
    ("densenet121", {"Concat", "AveragePool"}),       # dense concatenation, transitions
])
def test_torchvision_architecture_through_dynamo(arch, ops):
    tv = import_torchvision()
    torch.manual_seed(0)
    model = randomise_batchnorm(getattr(tv.models, arch)(weights=None, num_classes=10)).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    _check(model, x, ops)


def test_torch_gru_through_dynamo():
    class Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(8, 12, num_layers=2, batch_first=True)
            self.fc = torch.nn.Linear(12, 3)

        def forward(self, x):
            y, _ = self.gru(x)
            return self.fc(y[:, -1])

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 5, 8)).astype(np.float32)
    _check(Seq().eval(), x, {"GRU"})
