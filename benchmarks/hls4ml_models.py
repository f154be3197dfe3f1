"""The three networks benchmarks/numerics.py runs in conveyor and in hls4ml 1.3.0's C simulation.

Plain torch, no conveyor import: the parent (conveyor's venv) and the child
benchmarks/hls4ml_csim.py (hls4ml's own venv) both import this file and build the same
modules; the parent sends its weights to the child as a torch state_dict.

- ``mlp``: the zoo's jet-mlp shape, 16-64-32-32-5, ReLU, softmax;
- ``cnn``: Conv(1->8, 3x3)-ReLU-MaxPool(2)-Conv(8->16, 3x3)-ReLU-Flatten-Dense(400->10), input 1x16x16;
- ``lstm``: one LSTM (8 features, 10 steps, hidden 16, batch_first) whose last hidden state
  feeds a Dense(16->5).

hls4ml's PyTorch LSTM returns the last hidden state whatever the module returns
(``return_sequences = False`` in converters/pytorch/recurrent.py), so the module given to
hls4ml returns ``fc(out)`` and the one exported to ONNX for conveyor ``fc(out[:, -1])``:
the same network.
"""

from __future__ import annotations

import torch
from torch import nn

#: model -> (input shape of one sample, output size)
SHAPES = {"mlp": ((16,), 5), "cnn": ((1, 16, 16), 10), "lstm": ((10, 8), 5)}


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(16, 64), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(64, 32), nn.ReLU()
        self.fc3, self.relu3 = nn.Linear(32, 32), nn.ReLU()
        self.fc_out, self.softmax = nn.Linear(32, 5), nn.Softmax(dim=1)

    def forward(self, x):
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        x = self.relu3(self.fc3(x))
        return self.softmax(self.fc_out(x))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2 = nn.Conv2d(8, 16, 3), nn.ReLU()
        self.flatten, self.fc = nn.Flatten(), nn.Linear(16 * 5 * 5, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        return self.fc(self.flatten(self.relu2(self.conv2(x))))


class LSTM(nn.Module):
    def __init__(self, for_hls4ml: bool = False):
        super().__init__()
        self.for_hls4ml = for_hls4ml
        self.lstm = nn.LSTM(input_size=8, hidden_size=16, batch_first=True)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out if self.for_hls4ml else out[:, -1])


def build(name: str, *, seed: int = 0, for_hls4ml: bool = False) -> nn.Module:
    """The module `name`, its weights drawn from torch's default initialisation with `seed`."""
    torch.manual_seed(seed)
    if name == "mlp":
        m = MLP()
    elif name == "cnn":
        m = CNN()
    elif name == "lstm":
        m = LSTM(for_hls4ml)
    else:
        raise SystemExit(f"unknown benchmark model {name!r}; accepted: {sorted(SHAPES)}")
    return m.eval()
