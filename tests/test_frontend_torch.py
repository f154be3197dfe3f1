"""PyTorch frontend: through torch's ONNX export, equal to torch's own output."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import conveyor
from conveyor import ModelError


def test_missing_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ModelError, match=r"needs PyTorch.*conveyor\[torch\]"):
        conveyor.from_torch(object(), None)


def test_from_torch_matches_torch_and_folds_batchnorm():
    import torch  # installed by the test command (conveyor[torch]); missing torch is a failure, not a skip

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)
            self.drop = torch.nn.Dropout(0.5)
            self.fc = torch.nn.Linear(4 * 4 * 4, 10)

        def forward(self, x):
            y = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
            return self.fc(self.drop(torch.flatten(y, 1)))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 1, 8, 8)
    net.train()
    g = conveyor.from_torch(net, x)
    assert net.training, "from_torch must restore the module's mode"
    want = net.eval()(x).detach().numpy()
    got = g.run(x.numpy())[g.output_names[0]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert "BatchNormalization" not in [n.op_type for n in g.nodes]
    assert "Dropout" not in [n.op_type for n in g.nodes]
    with pytest.raises(ModelError, match="takes a torch.nn.Module"):
        conveyor.from_torch(lambda t: t, x)
