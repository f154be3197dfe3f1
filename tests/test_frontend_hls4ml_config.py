"""--hls4ml-config: hls4ml's config.yml read into conveyor's precision config, reuse
factors, strategy, IOType, part and clock; keys conveyor does not act on are reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

import conveyor
from conveyor import PrecisionError
from conveyor.frontends.hls4ml_config import read_hls4ml_config

# the layout hls4ml 1.3.0 writes (writer/vivado_writer.py write_yml) plus a user's edits
CONFIG = {
    "Backend": "Vivado",
    "OutputDir": "my-hls-test",
    "ProjectName": "myproject",
    "Part": "xcvu13p-flga2577-2-e",
    "ClockPeriod": 5,
    "IOType": "io_stream",
    "HLSConfig": {
        "Model": {"Precision": {"default": "fixed<16,6>", "maximum": "fixed<24,12>"}, "ReuseFactor": 2,
                  "Strategy": "Latency", "BramFactor": 1000000000, "TraceOutput": False},
        "LayerType": {"Dense": {"ReuseFactor": 4, "Compression": True}, "Softmax": {"Precision": "ap_fixed<18,8>"}},
        "LayerName": {
            "fc1": {"Precision": {"weight": "ap_fixed<8,3>", "bias": "ap_fixed<8,3>", "result": "ap_fixed<12,4,AP_RND,AP_SAT>",
                                  "accum": "auto"}, "ReuseFactor": 8, "Strategy": "Resource", "Trace": True},
            "fc2": {"Precision": "ap_fixed<14,5>"},
            "input_1": {"Precision": {"result": "ap_fixed<16,6>"}},
        },
    },
}


class _Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(10, 16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x):
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))), dim=-1)


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    return conveyor.from_torch(_Mlp(), torch.zeros(1, 10))


def test_reads_precision_parallelism_part_clock(graph):
    cfg = read_hls4ml_config(CONFIG, graph)
    fc1, fc2 = graph.node("fc1").name, graph.node("fc2").name
    assert cfg.precision["default"] == "hls4ml:fixed<16,6>"
    assert cfg.precision["order"] == "hls4ml_io_stream"
    assert cfg.precision["nodes"][fc1] == {"weight": "ap_fixed<8,3>", "bias": "ap_fixed<8,3>",
                                          "result": "ap_fixed<12,4,AP_RND,AP_SAT>", "accum": "auto"}
    assert cfg.precision["nodes"][fc2] == {r: "ap_fixed<14,5>" for r in ("weight", "bias", "result", "accum")}
    assert cfg.precision["op_types"]["Softmax"]["accum"] == "ap_fixed<18,8>"
    assert cfg.reuse_factor[fc1] == 8 and cfg.reuse_factor[fc2] == 4
    assert all(cfg.reuse_factor[n.name] == 2 for n in graph.nodes if n.op_type not in ("Gemm", "Dense", "MatMul"))
    assert cfg.strategy[fc1] == "resource" and cfg.strategy[fc2] == "latency"
    assert (cfg.io_type, cfg.part, cfg.clock_period_ns, cfg.clock_hz) == ("io_stream", "xcvu13p-flga2577-2-e", 5.0, 2e8)
    unused = "\n".join(cfg.unused)
    for key in ("Backend", "OutputDir", "Model.Precision.maximum", "Model.BramFactor", "LayerType.Dense.Compression",
                "LayerName.fc1.Trace", "LayerName.input_1"):
        assert key in unused, (key, unused)


def test_the_precision_runs_as_hls4ml_means_it(graph):
    cfg = read_hls4ml_config(CONFIG, graph)
    x = np.random.default_rng(0).standard_normal((64, 10))
    got = graph.run(x, precision=cfg.precision)
    fc1, fc2 = graph.node("fc1").name, graph.node("fc2").name
    by_hand = {"default": "ap_fixed<16,6>", "accum": "ap_fixed<16,6>", "order": "hls4ml_io_stream",
               "op_types": {"Softmax": {"weight": "ap_fixed<18,8>", "bias": "ap_fixed<18,8>",
                                        "result": "ap_fixed<18,8>", "accum": "ap_fixed<18,8>"}},
               "nodes": {fc1: {"weight": "ap_fixed<8,3>", "bias": "ap_fixed<8,3>",
                               "result": "ap_fixed<12,4,AP_RND,AP_SAT>", "accum": "auto"},
                         fc2: "ap_fixed<14,5>"}}
    by_hand["nodes"][fc2] = {r: "ap_fixed<14,5>" for r in ("weight", "bias", "result", "accum")}
    want = graph.run(x, precision=by_hand)
    for k in got:
        np.testing.assert_array_equal(got[k], want[k])


def test_errors_name_the_key(graph):
    bad = {"HLSConfig": {"Model": {"Precision": "ap_fixed<16,6>"}, "LayerName": {"fc1": {"ReuseFactor": 0}}}}
    with pytest.raises(PrecisionError, match=r"LayerName.fc1.ReuseFactor"):
        read_hls4ml_config(bad, graph)
    bad = {"HLSConfig": {"Model": {"Precision": "ap_fixd<16,6>"}}}
    with pytest.raises(PrecisionError, match=r"Model.Precision"):
        read_hls4ml_config(bad, graph)


def test_cli_quantize_takes_it(graph, tmp_path):
    from click.testing import CliRunner

    from conveyor.cli import cli

    onnx_path = tmp_path / "mlp.onnx"
    torch.onnx.export(_Mlp(), torch.zeros(1, 10), str(onnx_path), dynamo=False)
    cfg_path = tmp_path / "config.yml"
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    r = CliRunner().invoke(cli, ["quantize", str(onnx_path), "--hls4ml-config", str(cfg_path), "-n", "16"])
    assert r.exit_code == 0, r.output
    assert "not used: Backend: Vivado" in r.output  # reported (stderr, mixed in by CliRunner)
    assert "ap_fixed<12,4,AP_RND,AP_SAT>" in r.output
