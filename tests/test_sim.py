"""The simulator: exact closed forms, its two engines against each other, the CLI, and
agreement with paced runs of the local executor on three plans."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from conveyor import zoo
from conveyor.errors import ConveyorError
from conveyor.hardware import Cluster
from conveyor.plan import Plan
from conveyor.planner import plan as make_plan
from conveyor.sim import simulate
from conveyor.sim.model import servers
from conveyor.sim.recurrence import scan

ROOT = os.path.join(os.path.dirname(__file__), "..")
ALEXNET_PLAN = os.path.join(ROOT, "docs", "reports", "alexnet-conv-zynq7035x4.plan.json")


@pytest.fixture(scope="module")
def alexnet():
    return Plan.load(ALEXNET_PLAN)


def test_scan_is_the_single_server_recurrence():
    ready = np.array([0.0, 0.0, 0.5, 5.0, 5.1])
    assert scan(ready, 1.0).tolist() == [0.0, 1.0, 2.0, 5.0, 6.0]


def test_saturated_deterministic_pipeline_runs_at_one_over_the_interval(alexnet):
    r = simulate(alexnet, rate=10 / alexnet.interval_s, requests=5000)  # offered 10x what it can take
    assert r.throughput_per_s == pytest.approx(1 / alexnet.interval_s, rel=1e-9)
    bottleneck = max(r.stages, key=lambda s: s.interval_s)
    assert bottleneck.name == alexnet.bottleneck() and bottleneck.utilisation == pytest.approx(1.0, rel=1e-3)


def test_light_load_latency_is_the_plans_latency(alexnet):
    r = simulate(alexnet, rate=0.2 / alexnet.interval_s, requests=2000, arrivals="poisson", seed=1)
    assert r.latency_p50_s == pytest.approx(alexnet.latency_s, rel=1e-9)
    assert r.throughput_per_s == pytest.approx(0.2 / alexnet.interval_s, rel=0.1)
    assert all(q == 0 for s in r.stages for q in [s.stall_s])


def _replicated(plan):
    st = plan.stages[1]
    return dataclasses.replace(plan, stages=(plan.stages[0], dataclasses.replace(
        st, stage_time_s=plan.interval_s * 0.75, replicas=("fpga9",))) + plan.stages[2:])


@pytest.mark.parametrize("fifo", [None, 1, 3])
@pytest.mark.parametrize("arrivals", ["constant", "poisson"])
def test_recurrence_and_event_engines_agree(alexnet, fifo, arrivals):
    for plan in (alexnet, _replicated(alexnet)):
        kw = dict(rate=1.3 / plan.interval_s, requests=400, arrivals=arrivals, seed=7, fifo_depth=fifo)
        a, b = simulate(plan, engine="recurrence", **kw), simulate(plan, engine="events", **kw)
        assert a.engine == "recurrence" and b.engine == "events"
        for key in ("throughput_per_s", "latency_p50_s", "latency_p99_s", "latency_p999_s", "span_s"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-9), key
        assert [s.stall_s for s in a.stages] == pytest.approx([s.stall_s for s in b.stages], abs=1e-9)
        assert a.queue_depths == b.queue_depths


def test_back_pressure_stalls_the_senders_of_a_full_fifo(alexnet):
    free = simulate(alexnet, rate=2 / alexnet.interval_s, requests=2000)
    tight = simulate(alexnet, rate=2 / alexnet.interval_s, requests=2000, fifo_depth=1)
    assert sum(s.stall_s for s in free.stages) == 0
    assert sum(s.stall_s for s in tight.stages) > 0
    # depth counts the items inside a stage too: one item in fpga0 at a time -> 1 / its latency
    assert tight.throughput_per_s == pytest.approx(1 / alexnet.stages[0].latency_s, rel=1e-6)
    deep = simulate(alexnet, rate=2 / alexnet.interval_s, requests=2000, fifo_depth=8)
    assert deep.throughput_per_s == pytest.approx(free.throughput_per_s, rel=1e-6)  # the bottleneck sets it again


def test_closed_loop_of_one_runs_one_item_at_a_time(alexnet):
    r = simulate(alexnet, closed=1, requests=50)
    assert r.engine == "events"
    assert r.throughput_per_s == pytest.approx(1 / alexnet.latency_s, rel=1e-9)


def test_energy_is_modeled_and_consistent(alexnet):
    r = simulate(alexnet, rate=1 / alexnet.interval_s, requests=3000)
    assert r.modeled and set(r.power_w) >= {"fpga0", "fpga1", "fpga2", "fpga3"}
    assert r.average_power_w == pytest.approx(sum(r.power_w.values()))
    assert r.energy_per_inference_j == pytest.approx(r.average_power_w * r.span_s / r.requests)
    assert r.inferences_per_j == pytest.approx(1 / r.energy_per_inference_j)
    idle = simulate(alexnet, rate=0.05 / alexnet.interval_s, requests=300)
    assert idle.average_power_w < r.average_power_w  # dynamic power follows the load
    assert idle.energy_per_inference_j > r.energy_per_inference_j  # static power spread over fewer items


def test_arrivals_from_a_csv_file(alexnet, tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("time_s\n0\n0.001\n0.5\n")
    r = simulate(alexnet, arrivals=str(f))
    assert r.requests == 3
    with pytest.raises(ConveyorError, match="non-decreasing"):
        simulate(alexnet, arrivals=[1.0, 0.0])
    with pytest.raises(ConveyorError, match="rate"):
        simulate(alexnet, requests=10)


def test_cli_json_keys_and_errors(alexnet):
    from conveyor.cli import cli

    res = CliRunner().invoke(cli, ["simulate", ALEXNET_PLAN, "--rate", "200", "--requests", "500", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    for k in ("throughput_per_s", "latency_p50_s", "latency_p99_s", "latency_p999_s", "energy_per_inference_j",
              "inferences_per_j", "average_power_w", "stages"):
        assert k in data
    assert data["throughput_per_s"] == pytest.approx(200, rel=1e-6)
    assert len(data["stages"]) == len(servers(alexnet))
    res = CliRunner().invoke(cli, ["simulate", ALEXNET_PLAN, "--closed", "0"])
    assert res.exit_code != 0 and "closed" in str(res.exception)


def test_cli_report_draws_the_timeline_utilisation_and_knee(tmp_path):
    from conveyor.cli import cli

    out = tmp_path / "sim.html"
    res = CliRunner().invoke(cli, ["simulate", ALEXNET_PLAN, "--rate", "200", "--requests", "500", "--report", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert html.count("<svg") == 3 and "request 11:" in html and "Latency against offered load" in html


def test_an_overlay_boards_power_counts_its_engine():
    from conveyor.hardware.power import load_power

    g = zoo.build("jet-mlp")
    plan = make_plan(g, Cluster.uniform("zynq7035", 2, link="srio-10g"), precision="ap_fixed<8,3>",
                     arch="overlay", method="equal")
    assert {st.arch for st in plan.stages} == {"overlay"}
    busy = simulate(plan, rate=1 / plan.interval_s, requests=500)
    idle = simulate(plan, rate=0.01 / plan.interval_s, requests=50)
    static = load_power()[0]["zynq-7000"].static_w
    for st in plan.stages:  # the engine's multipliers draw dynamic power while it works
        assert busy.power_w[st.device] > idle.power_w[st.device] > static


def test_results_name_the_assumed_power_figures_and_bad_power_files_are_refused(alexnet, tmp_path):
    from conveyor.errors import HardwareSpecError
    from conveyor.hardware.power import load_power

    r = simulate(alexnet, rate=100, requests=50)
    assumed = [n for n in r.notes if n.startswith("assumed power figures")]
    assert assumed and "zynq-7000 dsp_w_per_mhz" in assumed[0]
    bad = tmp_path / "power.yaml"
    bad.write_text("families:\n  zynq-7000: {static_w: 1, dsp_w_per_mhz: 1, bram18k_w_per_mhz: 1, lut_w_per_mhz: 1,"
                   " assumed: [dsp_w]}\n")
    with pytest.raises(HardwareSpecError, match="zynq-7000: unknown field.*dsp_w"):
        load_power(str(bad))
