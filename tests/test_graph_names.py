"""Layer names: `fc1` for `/fc1/Gemm`, unique, accepted wherever a node name is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import conveyor
from conveyor import PrecisionError
from conveyor.graph.names import short_name


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 8)
        self.features = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh())
        self.fc_out = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc_out(self.features(torch.relu(self.fc1(x))))


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    return conveyor.from_torch(_Net(), torch.zeros(1, 6))


def test_short_names_follow_module_paths():
    assert short_name("/fc1/Gemm") == "fc1"
    assert short_name("/features/features.0/Gemm") == "features_0"
    assert short_name("/Relu_1") == "relu_1"
    assert short_name("conv1") == "conv1"


def test_every_node_has_a_unique_layer_name(graph):
    names = graph.layer_names
    assert set(names) == {n.name for n in graph.nodes}
    assert len(set(names.values())) == len(names)
    assert {"fc1", "features_0", "features_1", "fc_out"} <= set(names.values()), names
    assert graph.node("fc1").name == next(k for k, v in names.items() if v == "fc1")


def test_precision_config_takes_layer_names(graph):
    x = np.random.default_rng(0).standard_normal((5, 1, 6))
    fc1 = graph.node("fc1").name
    by_layer = graph.run(x, precision={"default": "ap_fixed<16,6>", "nodes": {"fc1": {"weight": "ap_fixed<4,1>"}}})
    by_node = graph.run(x, precision={"default": "ap_fixed<16,6>", "nodes": {fc1: {"weight": "ap_fixed<4,1>"}}})
    plain = graph.run(x, precision="ap_fixed<16,6>")
    k = graph.output_names[0]
    np.testing.assert_array_equal(by_layer[k], by_node[k])
    assert not np.array_equal(by_layer[k], plain[k])  # the override took effect
    with pytest.raises(PrecisionError, match="both name node"):
        graph.run(x, precision={"default": "ap_fixed<16,6>",
                                "nodes": {"fc1": {"weight": "ap_fixed<4,1>"}, fc1: {"weight": "ap_fixed<6,1>"}}})
    with pytest.raises(PrecisionError, match="fc9"):
        graph.run(x, precision={"default": "ap_fixed<16,6>", "nodes": {"fc9": {"weight": "ap_fixed<4,1>"}}})


def test_inspect_and_quantize_show_layer_names(graph, tmp_path):
    from click.testing import CliRunner

    from conveyor.cli import cli

    path = tmp_path / "net.onnx"
    torch.onnx.export(_Net(), torch.zeros(1, 6), str(path), dynamo=False)
    r = CliRunner().invoke(cli, ["inspect", str(path), "--json"])
    assert r.exit_code == 0, r.output
    import json

    layers = [row["layer"] for row in json.loads(r.output)["layers"]]
    assert "fc1" in layers and "fc_out" in layers
    r = CliRunner().invoke(cli, ["quantize", str(path), "--precision", "ap_fixed<16,6>", "--json", "-n", "4"])
    assert r.exit_code == 0, r.output
    assert "fc_out" in [row["layer"] for row in json.loads(r.output)["reports"][0]["layers"]]


def test_plan_stages_take_layer_names(graph):
    """A plan written with layer names (fc1) builds the same stages as one with node names."""
    from conveyor import PlanError
    from conveyor.hardware import Cluster
    from conveyor.plan import Plan
    from conveyor.planner import plan as make_plan
    from conveyor.runtime.stages import build_stages

    p = make_plan(graph, Cluster.uniform("zcu102", 2, link="aurora-10g"), precision="ap_fixed<16,6>", method="equal")
    names = graph.layer_names
    assert any(names[n] != n for st in p.stages for n in st.layers), "the test needs node names that differ"
    data = p.to_dict()
    for st in data["stages"]:
        st["layers"] = [names[n] for n in st["layers"]]
        st["parallelism"] = {names[k]: v for k, v in st["parallelism"].items()}
    by_layer = Plan.from_dict(data)
    by_layer.check_graph(graph)
    assert by_layer.with_node_names(graph).stages == p.stages
    ref, got = build_stages(p, graph), build_stages(by_layer, graph)
    assert [s.graph.nodes for s in got] == [s.graph.nodes for s in ref]
    assert [s.parallelism for s in got] == [s.parallelism for s in ref]
    x = np.random.default_rng(0).standard_normal((1, 6)).astype(np.float32)
    with conveyor.runtime.pipeline.Pipeline(by_layer, graph, executor="local") as pipe:
        out = list(pipe.map([x]))[0]
    np.testing.assert_array_equal(out[graph.output_names[0]], graph.run(x, precision=p.precision)[graph.output_names[0]])
    data["stages"][0]["layers"][0] = "no_such_layer"
    with pytest.raises(PlanError, match="no_such_layer"):
        Plan.from_dict(data).check_graph(graph)


def test_with_node_names_renames_every_per_layer_map(graph):
    """Every StagePlan map keyed by layer (spill, streamed weights, measured figures...) is renamed,
    not only parallelism: a plan edited by layer name must not keep a stale key."""
    from dataclasses import fields, replace

    from conveyor.hardware import Cluster
    from conveyor.plan import PER_LAYER_FIELDS, StagePlan
    from conveyor.planner import plan as make_plan

    p = make_plan(graph, Cluster.uniform("zcu102", 1), precision="ap_fixed<16,6>", method="equal")
    names = graph.layer_names
    st = p.stages[0]
    node = next(n for n in st.layers if names[n] != n)
    values = {"weights_in": "dram", "weight_bandwidth_Bps": 1e9, "activations_in": "hbm",
              "activation_bandwidth_Bps": 2e9, "measured": "csynth.xml:layer0", "parallelism": 2,
              "layer_interval_s": 1e-6}
    assert set(values) == set(PER_LAYER_FIELDS)
    by_layer = replace(p, stages=(replace(st, **{f: {names[node]: v} for f, v in values.items()}),))
    renamed = by_layer.with_node_names(graph).stages[0]
    for f in PER_LAYER_FIELDS:
        assert dict(getattr(renamed, f)) == {node: values[f]}, f
    # a new per-layer map added to StagePlan must join PER_LAYER_FIELDS
    maps = {f.name for f in fields(StagePlan) if "Mapping" in str(f.type)}
    assert maps - set(PER_LAYER_FIELDS) == {"resources", "budget"}
