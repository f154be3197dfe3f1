"""Planner features beyond one chain of identical boards: CPU/GPU stages, the overlay
architecture, replicas and free order on a switch, the Pareto front, edge-cloud."""

from __future__ import annotations

import pytest

import conveyor
from conveyor import PlanError
from conveyor.hardware import Cluster
from conveyor.planner import plan
from conveyor.planner.chain import chain_problem
from conveyor.planner.make_plan import pareto_front


@pytest.fixture(scope="module")
def alexnet():
    return conveyor.zoo.build("alexnet-conv")


def _cluster(topology, link, *devices):
    return Cluster.from_dict({"name": "t", "topology": topology, "link": link,
                              "devices": [dict(d, name=f"d{i}") for i, d in enumerate(devices)]})


def test_host_stage_time_is_the_sum_of_its_layers(alexnet):
    c = _cluster("chain", "pcie3-x16", {"host": "xeon-gold-6248"}, {"board": "zcu102"})
    p = plan(alexnet, c, precision="ap_fixed<8,3>")
    host = next((s for s in p.stages if s.device_kind == "cpu"), None)
    if host is not None:
        assert host.arch == "host"
        assert host.compute_interval_s == pytest.approx(sum(host.layer_interval_s.values()), rel=1e-6)
        assert host.resources["memory_bytes"] <= host.budget["memory_bytes"]
    # a CPU alone is a valid cluster too: one sequential stage, interval = latency
    only = plan(alexnet, _cluster("chain", "eth-1g", {"host": "xeon-gold-6248"}))
    assert len(only.stages) == 1 and only.interval_s == pytest.approx(only.latency_s, rel=1e-9)


def test_measured_profile_replaces_the_roofline(alexnet):
    from conveyor.cost import Profile

    c = _cluster("chain", "eth-1g", {"host": "cloud-vm-2c"})
    layer_seconds = {n.name: 1e-3 for n in alexnet.nodes}
    prof = Profile(alexnet.name, alexnet.fingerprint(), "test", 1, 1, layer_seconds)
    p = plan(alexnet, c, profiles={"d0": prof})
    assert p.interval_s == pytest.approx(1e-3 * len(alexnet.nodes), rel=1e-6)
    other = Profile("x", "0" * 64, "test", 1, 1, layer_seconds)
    with pytest.raises(PlanError, match="measured on another model"):
        plan(alexnet, c, profiles={"d0": other})


def test_overlay_pins_weights_on_chip_or_refuses(alexnet):
    p = plan(alexnet, Cluster.uniform("alveo-u250", 2, link="eth-100g"), arch="overlay")
    assert all(s.arch == "overlay" for s in p.stages)
    assert all(s.resources["onchip_bytes"] <= s.budget["onchip_bytes"] for s in p.stages)
    vgg = conveyor.zoo.build("vgg16-conv")
    with pytest.raises(PlanError):
        plan(vgg, Cluster.uniform("pynq-z2", 1, link="eth-1g"), arch="overlay", offchip=False)
    streamed = plan(vgg, Cluster.uniform("pynq-z2", 1, link="eth-1g"), arch="overlay")  # weights in its DDR
    assert set(streamed.stages[0].weights_in.values()) == {"on_chip", "dram"}


def test_replicas_on_a_switch_beat_a_single_bottleneck(alexnet):
    chain = plan(alexnet, Cluster.uniform("zynq7035", 4, link="srio-10g"), precision="ap_fixed<8,3>")
    switch = plan(alexnet, Cluster.uniform("zynq7035", 4, link="srio-10g", topology="switch"), precision="ap_fixed<8,3>")
    assert switch.interval_s < chain.interval_s
    replicated = [s for s in switch.stages if s.replicas]
    assert replicated, "the faster switch plan should replicate a stage"
    for s in replicated:
        n = 1 + len(s.replicas)
        link_in = s.stage_time_s * n - s.compute_interval_s  # merged links, if any
        assert s.stage_time_s == pytest.approx((s.compute_interval_s + link_in) / n)
    used = [d for s in switch.stages for d in (s.device, *s.replicas)]
    assert len(used) == len(set(used)) <= 4


def test_switch_tries_every_device_order(alexnet):
    devices = ({"board": "pynq-z2"}, {"board": "zcu102"}, {"board": "zynq7035"})
    switch = plan(alexnet, _cluster("switch", "eth-100g", *devices), precision="ap_fixed<8,3>")
    for order in (("d0", "d1", "d2"), ("d2", "d1", "d0"), ("d1", "d0", "d2")):
        chain = _cluster("switch", "eth-100g", *devices)
        from conveyor.planner.joint import plan_joint

        try:
            r = plan_joint(chain_problem(alexnet, chain, "ap_fixed<8,3>", order=order))
        except PlanError:
            continue
        assert switch.interval_s <= r.interval_s * (1 + 1e-9)


def test_pareto_front_is_non_dominated(alexnet):
    prob = chain_problem(alexnet, Cluster.uniform("zynq7035", 4, link="srio-10g"), "ap_fixed<8,3>")
    front = pareto_front(prob)
    assert len(front) >= 2
    for a, b in zip(front, front[1:]):
        assert a.interval_s < b.interval_s and a.latency_s > b.latency_s
    lat = plan(alexnet, Cluster.uniform("zynq7035", 4, link="srio-10g"), precision="ap_fixed<8,3>", objective="latency")
    assert lat.latency_s == pytest.approx(min(r.latency_s for r in front))


def test_edge_cloud_picks_the_split_of_least_latency(alexnet):
    c = _cluster("chain", "eth-1g", {"host": "arm-cortex-a9"}, {"host": "xeon-gold-6248"})
    p = plan(alexnet, c, objective="edge-cloud")
    # brute force over split points with the same models
    from conveyor.planner.edge import edge_cloud

    prob = chain_problem(alexnet, c, "ap_fixed<16,6>")
    assert p.latency_s == pytest.approx(edge_cloud(alexnet, prob).latency_s)
    from conveyor.planner.joint import _Tables

    t = _Tables(prob)
    edge = [t.secs[0][i][0] for i in range(prob.m)]
    cloud = [t.secs[1][i][0] for i in range(prob.m)]
    assert p.latency_s <= sum(cloud) + 1.0  # never worse than all-cloud plus a second of uplink
    assert p.latency_s <= sum(edge) + 1e-12  # never worse than all-edge
    with pytest.raises(PlanError, match="two devices"):
        plan(alexnet, Cluster.uniform("zynq7035", 3, link="srio-10g"), objective="edge-cloud")


def test_layers_too_big_for_one_board_are_split_across_boards():
    g = conveyor.zoo.build("resnet18")
    with pytest.raises(PlanError):  # one board cannot hold layer4's 2.4 M-parameter convolutions
        plan(g, Cluster.uniform("zynq7035", 1, link="srio-10g"), precision="ap_fixed<8,3>", offchip=False)
    p = plan(g, Cluster.uniform("zynq7035", 12, link="srio-10g"), precision="ap_fixed<8,3>", offchip=False)
    split = [s for s in p.stages if s.split]
    assert split, "layer4's convolutions must be split"
    for s in split:
        assert s.layers[0] and g.node(s.layers[0]).op_type == "Conv"
        assert all(g.node(n).op_type in ("Relu", "MaxPool", "Conv") for n in s.layers)
        assert all(s.resources[r] <= s.budget[r] for r in s.budget)  # per board, its slice fits
    assert [n for s in p.stages for n in s.layers] == [n.name for n in g.nodes]
    devices = [d for s in p.stages for d in (s.device, *s.replicas)]
    assert len(devices) == len(set(devices)) <= 12
