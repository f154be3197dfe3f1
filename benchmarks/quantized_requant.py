"""Float-scale quantized models: conveyor's integer requantisation against onnxruntime. A script, not a test:

    python benchmarks/quantized_requant.py [--inputs 300]

Two 4-layer CNNs (random weights, torch seed 1): `maxpool` Conv 8->32, Conv 32->32, MaxPool, Linear 512->64,
Linear 64->10; `avgpool` the same with AvgPool2d(2) (a SumPool and a Requant by s_x / (4 s_y) in the integer
domain); ReLUs; quantized by onnxruntime's quantize_static (8 calibration inputs, standard normal), QDQ and
QOperator, per-tensor and per-channel weights. Per variant, over N inputs (standard normal x 1.5): the largest
difference from onnxruntime (graph optimizations off) in output steps and how many outputs differ, for
- `fixed`: `graph.run(x, precision=model_precision.config)` of `conveyor.load(q)` (requant="integer", the
  default), int32 sums and Q31 multiplier + shift per Requant;
- `float`: `graph.run(x)`, the same exact int32 sums requantised in float32 as onnxruntime does;
- `pow2`: `conveyor.load(q, requant="nearest")` under its model precision, each float scale's nearest power of two.
Where `float` is off too, the difference is onnxruntime's float32 Conv/Gemm sums (not exact) at a near-tie.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def _ort(model: onnx.ModelProto):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})[0]


def main() -> None:
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    import conveyor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=300)
    n = ap.parse_args().inputs
    def net(pool):
        torch.manual_seed(1)
        return torch.nn.Sequential(
            torch.nn.Conv2d(8, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
            torch.nn.ReLU(), pool, torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, 10)).eval()

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"x": rng.standard_normal((1, 8, 8, 8)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d:
        fp, qp = Path(d) / "f.onnx", Path(d) / "q.onnx"
        print(f"{'model':8} {'format':10} {'weights':12} {'path':6} {'max steps':>9} {'outputs off':>12}")
        for name, pool in (("maxpool", torch.nn.MaxPool2d(2)), ("avgpool", torch.nn.AvgPool2d(2))):
            torch.onnx.export(net(pool), (torch.randn(1, 8, 8, 8),), fp, input_names=["x"], output_names=["y"],
                              dynamo=False, opset_version=17)
            for fmt in ("QDQ", "QOperator"):
                for per_channel in (False, True):
                    quantize_static(str(fp), str(qp), Reader(), quant_format=getattr(QuantFormat, fmt),
                                    per_channel=per_channel)
                    model = onnx.load(qp)
                    graph, pow2 = conveyor.load(qp), conveyor.load(qp, requant="nearest")
                    assert "Requant" in [nd.op_type for nd in graph.nodes]
                    mp = graph.model_precision
                    step = next(q for q in mp.quantizers if q.tensor == "y").scale[0]
                    ref = _ort(model)
                    for path, g, prec in (("fixed", graph, mp.config), ("float", graph, None),
                                          ("pow2", pow2, pow2.model_precision.config)):
                        rng = np.random.default_rng(7)
                        worst, off = 0.0, 0
                        for _ in range(n):
                            x = (rng.standard_normal((1, 8, 8, 8)) * 1.5).astype(np.float32)
                            dif = np.abs(g.run(x, precision=prec)["y"] - ref(x)) / step
                            worst, off = max(worst, float(dif.max())), off + int((dif > 0.5).sum())
                        print(f"{name:8} {fmt:10} {'per-channel' if per_channel else 'per-tensor':12} {path:6} "
                              f"{worst:9.3f} {off:>5} of {n * 10}")


if __name__ == "__main__":
    main()
