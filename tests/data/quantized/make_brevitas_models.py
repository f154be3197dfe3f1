"""Write the Brevitas-exported models tests/test_frontend_qdq.py loads (committed: brevitas'
ONNX export needs `onnxoptimizer`, which the test environment lacks).

    pip install onnxoptimizer   # brevitas.export requires it
    python tests/data/quantized/make_brevitas_models.py

A small CNN with power-of-two (fixed-point) quantizers: Int8ActPerTensorFixedPoint on the
input and the layer outputs, Uint8ActPerTensorFixedPoint after the ReLU,
Int8WeightPerTensorFixedPoint weights; scales calibrated on random data (seed 0).
Writes brevitas_qcdq.onnx (export_onnx_qcdq) and brevitas_qonnx.onnx (export_qonnx).
"""

import os

import onnx
import torch
import brevitas.nn as qnn
from brevitas.export import export_onnx_qcdq, export_qonnx
from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

HERE = os.path.dirname(os.path.abspath(__file__))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.conv = qnn.QuantConv2d(3, 4, 3, padding=1, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                    output_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.relu = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(4 * 8 * 8, 10, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                  output_quant=Int8ActPerTensorFixedPoint)

    def forward(self, x):
        return self.fc(self.relu(self.conv(self.inp(x))).flatten(1))


def main():
    torch.manual_seed(0)
    net = Net().train()
    with torch.no_grad():
        for _ in range(4):       # calibrate the activation scales (power-of-two by construction)
            net(torch.randn(8, 3, 8, 8) * 2)
    net.eval()
    x = torch.randn(1, 3, 8, 8)
    kw = dict(input_names=["x"], output_names=["y"])
    for export, name in ((export_onnx_qcdq, "brevitas_qcdq.onnx"), (export_qonnx, "brevitas_qonnx.onnx")):
        path = os.path.join(HERE, name)
        export(net, args=x, export_path=path, **kw)
        onnx.save(onnx.load(path), path, save_as_external_data=False)  # one file, weights inside
        if os.path.exists(path + ".data"):
            os.remove(path + ".data")


if __name__ == "__main__":
    main()
