"""Cost model: layer work from the graph and precision, FPGA options, roofline, profiles."""

from __future__ import annotations

import math

import pytest

import conveyor
from conveyor.cost import Profile, dataflow_options, layer_work, profile_graph, roofline_seconds
from conveyor.cost.fpga import multiplier_cost, overlay_layer_seconds
from conveyor.hardware import catalog


@pytest.fixture(scope="module")
def alexnet():
    return conveyor.zoo.build("alexnet-conv")


def test_layer_work_counts_and_bit_widths(alexnet):
    works = {w.node: w for w in layer_work(alexnet, "ap_fixed<8,3>")}
    conv1 = works["conv1"]
    assert conv1.macs == 105_415_200 and conv1.params == 96 * 3 * 11 * 11 + 96
    assert conv1.weight_bits == conv1.act_bits == 8
    assert conv1.weight_bytes == conv1.params           # 8-bit weights: one byte each
    assert conv1.out_bytes == 96 * 55 * 55
    assert conv1.max_parallel == 96 * 3 * 11 * 11        # every weight its own multiplier
    assert conv1.stream_len == 227 * 227                  # one input pixel per cycle
    assert conv1.accum_bits == 8 + 8 + math.ceil(math.log2(363))  # exact ('auto') accumulator
    assert works["relu1"].macs == 0 and works["relu1"].elem_ops == 96 * 55 * 55
    float_work = {w.node: w for w in layer_work(alexnet)}
    assert float_work["conv1"].weight_bits == 32


def test_dataflow_options_trade_time_for_resources(alexnet):
    board = catalog().board("zynq7035")
    conv2 = next(w for w in layer_work(alexnet, "ap_fixed<16,6>") if w.node == "conv2")
    opts = dataflow_options(conv2, board)
    assert len(opts) > 10
    for slow, fast in zip(opts, opts[1:]):
        assert fast.interval_cycles < slow.interval_cycles
        r0, r1 = slow.resources, fast.resources
        assert r1.dsp >= r0.dsp and r1.bram18k >= r0.bram18k and r1.lut >= r0.lut and r1.ff >= r0.ff
    first = opts[0]
    assert first.parallelism == 1 and first.interval_cycles == conv2.macs   # fully folded: one MAC per cycle
    # 16x16-bit products take one DSP48E1 each; the weights (307,456 x 16 bits) need >= 267 BRAM18K
    p = opts[-1].parallelism
    assert opts[-1].resources.dsp >= p
    assert first.resources.bram18k >= math.ceil(conv2.params * 16 / (18 * 1024))


def test_multiplier_mapping_follows_the_part():
    z = catalog().board("zynq7035")
    assert multiplier_cost(z, 16, 16) == (1.0, 0)          # one DSP48E1 (25x18)
    assert multiplier_cost(z, 24, 24)[0] == 2.0             # 24 bits fit the 25-bit port; the other splits over two 18-bit ones
    assert multiplier_cost(z, 32, 32)[0] == 4.0             # 32x32 tiles 2x2 DSPs
    assert multiplier_cost(z, 4, 4) == (0.0, 16)            # small products go to LUTs


def test_overlay_streams_weights_it_cannot_pin(alexnet):
    board = catalog().board("pynq-z2")
    conv3 = next(w for w in layer_work(alexnet, "ap_fixed<16,6>") if w.node == "conv3")
    pinned = overlay_layer_seconds(conv3, board, weights_on_chip=True)
    streamed = overlay_layer_seconds(conv3, board, weights_on_chip=False)
    assert streamed >= pinned > 0
    assert streamed >= conv3.weight_bytes / board.offchip_bandwidth_Bps


def test_roofline_is_compute_or_memory_bound():
    works = {w.node: w for w in layer_work(conveyor.zoo.build("jet-mlp"))}
    cpu = catalog().host("xeon-gold-6248")
    t = roofline_seconds(works["fc1.matmul"], cpu)
    assert t >= 2 * works["fc1.matmul"].macs / cpu.peak_flops
    assert t >= works["fc1.matmul"].weight_bytes / cpu.mem_bandwidth_Bps


def test_profile_measures_every_layer_and_round_trips(tmp_path):
    g = conveyor.zoo.build("digits-cnn")
    prof = profile_graph(g, runs=3, warmup=1)
    assert set(prof.layer_seconds) == {n.name for n in g.nodes}
    assert all(t > 0 for t in prof.layer_seconds.values())
    assert prof.fingerprint == g.fingerprint()
    path = tmp_path / "p.json"
    prof.save(path)
    assert Profile.load(path) == prof
    path.write_text('{"version": 99}')
    with pytest.raises(conveyor.PlanError, match="not a conveyor profile"):
        Profile.load(path)
