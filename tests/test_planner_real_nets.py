"""Torchvision networks (random weights) planned on real clusters: weights that do not fit on
chip stream from the boards' DDR, every layer placed once, every stage within its budget, no
board's memory bandwidth oversubscribed. Small input resolutions keep CI fast, except where
the network's adaptive pooling needs its native 224 x 224 (AlexNet's classifier)."""

from __future__ import annotations

import functools

import pytest

import conveyor
from conveyor import PlanError
from conveyor.cost.fpga import weight_memory
from conveyor.hardware import Cluster
from conveyor.planner import plan


@functools.lru_cache(maxsize=None)
def _net(name: str, size: int, exporter: str = "dynamo"):
    import torch

    from conveyor.frontends.torchvision_compat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(0)
    # TorchScript exports these CNNs in 1-3 s (dynamo: 10-40 s); the planner sees the same layers
    return conveyor.from_torch(getattr(tv.models, name)(), torch.randn(1, 3, size, size), name=name, exporter=exporter)


def _check(p, g, cluster):
    placed = [n for s in p.stages for n in s.layers]
    assert sorted(placed) == sorted(n.name for n in g.nodes)   # every layer exactly once
    assert len(placed) == len(set(placed))
    for s in p.stages:
        assert all(s.resources[k] <= s.budget[k] for k in s.budget), s.device
        board = cluster.device(s.device).board
        streamed = [n for n in s.layers if s.weights_in[n] != "on_chip"]
        mem = weight_memory(board)
        if streamed:
            assert {s.weights_in[n] for n in streamed} == {mem[0]}
        spilled = [n for n in s.layers if s.activations_in[n] != "on_chip"]
        if spilled:
            assert {s.activations_in[n] for n in spilled} == {mem[0]}
        # the layers that stream weights or spill activations share the board's memory: together
        # within its bandwidth
        used = sum(s.weight_bandwidth_Bps.values()) + sum(s.activation_bandwidth_Bps.values())
        assert used <= (mem[1] if mem else 0.0) * (1 + 1e-9), s.device
        assert all(s.weight_bandwidth_Bps[n] == 0.0 for n in s.layers if s.weights_in[n] == "on_chip")
        assert all(s.activation_bandwidth_Bps[n] == 0.0 for n in s.layers if s.activations_in[n] == "on_chip")
    return sum(1 for s in p.stages for n in s.layers if s.weights_in[n] != "on_chip")


def test_a_high_resolution_conv_stack_spills_its_feature_maps_to_ddr():
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers, c = [], 3
    for out in (32, 64, 64):   # VGG's blocks: two 3x3 convs and a 2x2 max pool each, at 512 x 512 px
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.Conv2d(out, out, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
        c = out
    g = conveyor.from_torch(nn.Sequential(*layers), torch.randn(1, 3, 512, 512), name="vgg-stack-512",
                            exporter="torchscript")
    cluster = Cluster.uniform("pynq-z2", 1, link="eth-1g")
    # 2-row line buffers of 512 px x 64 channels x 16 bits (0.5 Mb each) and the weights
    # overflow the Zynq-7020's 280 BRAM18K with everything on chip
    with pytest.raises(PlanError, match="do not fit on 1 devices"):
        plan(g, cluster, precision="ap_fixed<16,6>", offchip=False)
    p = plan(g, cluster, precision="ap_fixed<16,6>")
    _check(p, g, cluster)
    s = p.stages[0]
    spilled = [n for n in s.layers if s.activations_in[n] == "dram"]
    assert any(g.node(n).op_type == "Conv" for n in spilled)
    assert all(s.activation_bandwidth_Bps[n] > 0 for n in spilled)
    # the report's engine table says where each layer's activations live
    from conveyor.reports.plan_report import engine_rows

    head, rows = engine_rows(p, g)
    col = head.index("activations in")
    assert {r[0] for r in rows if r[col].startswith("dram")} == set(spilled)


def test_resnet50_on_eight_zcu102_at_16_bits_streams_what_does_not_fit():
    # 25.5 M weights x 2 B = 51 MB; eight ZU9EG hold 8 x 0.85 x 32.1 Mb = 27 MB on chip (DS891)
    g = _net("resnet50", 64, "torchscript")
    cluster = Cluster.uniform("zcu102", 8, link="aurora-10g")
    p = plan(g, cluster, precision="ap_fixed<16,6>")
    assert _check(p, g, cluster) > 0


@pytest.mark.parametrize("precision", ["ap_fixed<16,6>", "ap_fixed<8,3>"])
def test_full_alexnet_on_four_zynq7035_keeps_its_classifier(precision):
    # the multi-FPGA AlexNet paper dropped the fully connected layers: 58.6 M of its 61 M weights
    g = _net("alexnet", 224)
    assert any(n.op_type == "Gemm" for n in g.nodes)
    cluster = Cluster.uniform("zynq7035", 4, link="srio-10g")
    p = plan(g, cluster, precision=precision)
    assert _check(p, g, cluster) > 0
    fc = [n.name for n in g.nodes if n.op_type == "Gemm"]
    weights_in = {n: w for s in p.stages for n, w in s.weights_in.items()}
    assert any(weights_in[n] == "dram" for n in fc)   # 37.7 M weights of fc6 fit no Zynq-7035


def test_the_error_names_how_many_boards_would_hold_the_model():
    g = conveyor.zoo.build("resnet18")
    with pytest.raises(PlanError) as e:
        plan(g, Cluster.uniform("zynq7035", 2, link="srio-10g"), precision="ap_fixed<8,3>", offchip=False)
    import re

    n = int(re.search(r"; (\d+) such devices", str(e.value)).group(1))
    assert n > 2
    plan(g, Cluster.uniform("zynq7035", n, link="srio-10g"), precision="ap_fixed<8,3>", offchip=False)
    with pytest.raises(PlanError):
        plan(g, Cluster.uniform("zynq7035", n - 1, link="srio-10g"), precision="ap_fixed<8,3>", offchip=False)


@pytest.mark.parametrize("name, size, board, k, link, precision", [
    # DenseNet-121: 372 nodes, its concatenations crossing many cuts (the issue: 108-165 s to plan)
    ("densenet121", 32, "zcu102", 8, "aurora-10g", "ap_fixed<8,3>"),
    # EfficientNet-B0: 239 nodes with squeeze-excitation branches (the issue: 34-149 s on 4 U250)
    ("efficientnet_b0", 32, "alveo-u250", 4, "eth-100g", "ap_fixed<16,6>"),
    ("mobilenet_v2", 32, "zcu102", 8, "aurora-10g", "ap_fixed<16,6>"),
    # the multi-FPGA paper's boards: four Zynq-7035 on Serial RapidIO, at both widths
    ("mobilenet_v2", 32, "zynq7035", 4, "srio-10g", "ap_fixed<8,3>"),
    ("mobilenet_v2", 32, "zynq7035", 4, "srio-10g", "ap_fixed<16,6>"),
])
def test_many_node_networks_plan_on_the_issue_clusters(name, size, board, k, link, precision):
    g = _net(name, size, "torchscript")
    assert len(g.nodes) >= 100
    cluster = Cluster.uniform(board, k, link=link)
    p = plan(g, cluster, precision=precision)
    _check(p, g, cluster)
    # a multi-branch graph is cut only between topologically ordered prefixes: every tensor a
    # later stage reads was made by an earlier stage, or crosses every link in between
    where = {n: i for i, s in enumerate(p.stages) for n in s.layers}
    for node in g.nodes:
        for t in node.inputs:
            producer = g.producer(t) if t and not g.is_weight(t) else None
            if producer is not None and where[producer.name] < where[node.name]:
                for s in p.stages[where[producer.name]:where[node.name]]:
                    assert t in s.link_out.tensors, (t, s.device)


def test_vgg11_with_its_classifier_on_eight_zcu102():
    # 224 px: VGG's adaptive pooling to 7 x 7 exports only when 7 divides the feature map
    g = _net("vgg11", 224, "torchscript")
    cluster = Cluster.uniform("zcu102", 8, link="aurora-10g")
    p = plan(g, cluster, precision="ap_fixed<16,6>")
    assert _check(p, g, cluster) > 0
    weights_in = {n: w for s in p.stages for n, w in s.weights_in.items()}
    fc6 = next(n.name for n in g.nodes if n.op_type in ("Gemm", "Dense"))
    assert weights_in[fc6] == "dram"   # 102.8 M weights x 2 B: no ZCU102 holds them on chip


@pytest.mark.parametrize("precision", ["ap_fixed<8,3>", "ap_fixed<16,6>"])
def test_vgg16_with_its_classifier_on_eight_zcu102(precision):
    # 138.4 M weights; torch's export of them takes most of this test (planning: 2-4 s)
    g = _net("vgg16", 224, "torchscript")
    assert [n.op_type for n in g.nodes].count("Gemm") == 3
    cluster = Cluster.uniform("zcu102", 8, link="aurora-10g")
    p = plan(g, cluster, precision=precision)
    assert _check(p, g, cluster) > 0
    weights_in = {n: w for s in p.stages for n, w in s.weights_in.items()}
    fc6 = next(n.name for n in g.nodes if n.op_type == "Gemm")
    assert weights_in[fc6] == "dram"   # 102.8 M weights: even at 8 bits no ZCU102 holds them on chip


def test_the_error_names_the_widest_precision_that_would_fit():
    from conveyor.planner.make_plan import NARROWER

    g = conveyor.zoo.build("resnet18")
    cluster = Cluster.uniform("zynq7035", 6, link="srio-10g")
    with pytest.raises(PlanError) as e:
        plan(g, cluster, precision="ap_fixed<16,6>", offchip=False)
    fmt = str(e.value).split("; at ")[1].split()[0]
    plan(g, cluster, precision=fmt, offchip=False)          # it does fit there
    wider = NARROWER[:NARROWER.index(fmt)]
    if wider:                                               # and not one format wider
        with pytest.raises(PlanError):
            plan(g, cluster, precision=wider[-1], offchip=False)


def test_the_report_names_the_tensors_crossing_each_link():
    from html import escape

    from conveyor.reports.plan_report import render

    g = conveyor.zoo.build("resnet18")
    p = plan(g, Cluster.uniform("zcu102", 8, link="aurora-10g"), precision="ap_fixed<16,6>")
    html = render(p, {})
    links = [s.link_out for s in p.stages if s.link_out is not None]
    assert links
    for link in links:
        assert escape(link.tensors[0]) in html and f"{len(link.tensors)} tensor" in html
    # a residual block cut in its middle sends its skip tensor too
    assert any(len(link.tensors) > 1 for link in links)


def test_the_error_names_the_memory_that_would_hold_the_model():
    import re

    import torch
    from torch import nn

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8192, 8192), nn.ReLU(), nn.Linear(8192, 10))
    g = conveyor.from_torch(mlp, torch.randn(1, 8192), name="wide-mlp", exporter="torchscript")
    # 67.2 M weights x 2 B = 128.2 MiB: more than the Nexys4 DDR's 128 MiB of DDR2 (its manual),
    # and far more than its BRAM; one board streams all its weights, so it needs them all in DDR
    with pytest.raises(PlanError) as e:
        plan(g, Cluster.uniform("nexys4-ddr", 1), precision="ap_fixed<16,6>")
    need = sum(p.numel() for p in mlp.parameters()) * 2
    got = int(re.search(r"boards with >= ([\d,]+) MiB of DDR would hold it", str(e.value)).group(1).replace(",", ""))
    assert got == -(-need // (1 << 20)) == 129
    # where memory does not bind (a PYNQ-Z2's 512 MB hold AlexNet's conv weights; its fabric
    # does not hold the engines), the error does not name it
    with pytest.raises(PlanError) as e:
        plan(conveyor.zoo.build("alexnet-conv"), Cluster.uniform("pynq-z2", 1), precision="ap_fixed<16,6>")
    assert "MiB" not in str(e.value) and "ap_fixed<12,4>" in str(e.value)
