"""Code generation of a float-scale quantized model in the integer domain (requant="integer"):
onnxruntime's quantize_static model planned on one board, compiled, and its C simulation (g++,
conveyor_requant.h) equal to the emulator bit for bit, the emulator within the stated output
steps of onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import torch

import conveyor
from conveyor.cli import _resolve_cluster
from conveyor.codegen import compile as compile_plan
from conveyor.codegen.csim import compare, run_chain
from conveyor.planner import plan


class _Net(torch.nn.Module):
    """Conv-ReLU, a residual Conv-ReLU-Add, AveragePool (3x3, stride 2, padding not counted: a
    multiplier per position), GlobalAveragePool, Linear: every op the integer domain writes (Requant
    of one accumulator per channel and per position, of a sum and of the float input; SumPool;
    ReduceSum; Gemm; a dequantizing Requant on the output)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.nn.functional.avg_pool2d(torch.relu(self.c2(a)) + a, 3, 2, 1, count_include_pad=False)
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(b, 1).flatten(1))


def quantize_static_model(path, per_channel: bool):
    """_Net exported by torch and quantized by onnxruntime's quantize_static (QDQ, float scales)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    torch.manual_seed(0)
    fp, qp = path / "f.onnx", path / "q.onnx"
    torch.onnx.export(_Net().eval(), (torch.randn(1, 3, 8, 8),), fp, input_names=["x"], output_names=["y"],
                      dynamo=False, opset_version=17)
    quantize_static(str(fp), str(qp), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel)
    return qp


def _ort(model, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": xi[None].astype(np.float32)})[0] for xi in x])


def test_quantize_static_model_in_the_integer_domain_csim_is_bit_exact(tmp_path):
    """Per-channel weights (a multiplier per output channel; per-tensor is the same kernel with one)."""
    qp = quantize_static_model(tmp_path, per_channel=True)
    graph = conveyor.load(qp, requant="integer")
    assert [n.op_type for n in graph.nodes] == ["Requant", "Conv", "Requant", "Conv", "Requant", "Requant", "SumPool",
                                                "Requant", "ReduceSum", "Requant", "Flatten", "Requant", "Gemm",
                                                "Requant"]
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=graph.model_precision.config)
    assert len(p.stages) == 1
    compile_plan(p, graph, tmp_path / "hls")
    header = (tmp_path / "hls" / "fpga0" / "firmware" / "parameters.h").read_text()
    assert '#include "conveyor_requant.h"' in header and "Requant, an Add's two inputs" in header
    top = next((tmp_path / "hls" / "fpga0" / "firmware").glob("*_top.cpp")).read_text()
    assert all(f"conveyor::{k}<" in top for k in ("quantize", "requant", "requant2", "sumpool_2d_cl"))
    x = np.random.default_rng(1).standard_normal((60, 3, 8, 8)) * 1.5   # past the calibrated range: saturation
    env, runs = run_chain(tmp_path / "hls", {"x": x})
    assert compare(graph, p.precision, {"x": x}, runs) is None
    want = graph.with_batch(60).run(x, precision=p.precision)["y"]
    np.testing.assert_array_equal(env["y"], np.asarray(want, np.float64).reshape(60, -1))
    # and the emulator against onnxruntime (graph optimizations off): 0 or 1 output step (an
    # AveragePool's exact ties, which onnxruntime's float32 sums break either way)
    step = next(q for q in graph.model_precision.quantizers if q.tensor == "y").scale[0]
    ref = _ort(onnx.load(qp), x)
    assert round(float(np.max(np.abs(env["y"] - ref))) / step, 3) <= 1
