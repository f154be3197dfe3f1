"""Paced mode: emulated FPGA stages timed as the plan models them. The timing model itself
(exact recurrences), its agreement with the plan's own interval and latency, and a paced
pipeline that is never faster than the plan and still bit-exact. (How close to the plan a
paced run comes is a measurement: benchmarks/runtime.py.)"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conveyor import zoo
from conveyor.errors import RuntimeFault
from conveyor.hardware import Cluster
from conveyor.plan import Plan
from conveyor.planner import plan as make_plan
from conveyor.runtime.pipeline import Pipeline
from conveyor.runtime.stages import build_stages, stage_timing
from conveyor.runtime.worker import RELEASE_KEY, Pacer, StageWorker

ROOT = os.path.join(os.path.dirname(__file__), "..")
ALEXNET_PLAN = os.path.join(ROOT, "docs", "reports", "alexnet-conv-zynq7035x4.plan.json")


def releases(pacer, arrivals, compute=0.0):
    out = []
    for a in arrivals:
        s = pacer.start(a)
        out.append((s, pacer.release(s, s + compute)))
    return out


def test_pacer_overlaps_items_inside_a_stage_whose_latency_exceeds_its_interval():
    # interval 1, latency 3: a new item every 1, each out 3 after it started
    assert releases(Pacer([(1.0, 3.0)]), [0, 0, 0, 10]) == [(0, 3), (1, 4), (2, 5), (10, 13)]


def test_pacer_link_stage_after_compute_sets_the_pace_when_slower():
    # compute (interval 1, latency 3), then a link stage of 2 s: items leave every 2 s
    assert [r for _, r in releases(Pacer([(1.0, 3.0), (2.0, 2.0)]), [0, 0, 0])] == [5, 7, 9]


def test_pacer_time_scale_stretches_every_time():
    assert releases(Pacer([(1.0, 3.0)], time_scale=2), [0, 0]) == [(0, 6), (2, 8)]
    with pytest.raises(ValueError, match="time_scale"):
        Pacer([(1.0, 1.0)], time_scale=0)


def test_pacer_never_releases_before_the_result_exists_and_counts_overruns():
    p = Pacer([(1.0, 1.5)])
    assert p.release(p.start(0.0), done=4.0) == 4.0  # compute took 4 > the modeled interval
    assert p.overruns == 1
    assert p.release(p.start(5.0), done=5.5) == 6.5 and p.overruns == 1


def test_pacer_without_servers_passes_items_through_at_their_arrival():
    p = Pacer([])
    assert p.start(2.0) == 2.0 and p.release(2.0, 2.25) == 2.25


def _timing_agrees_with(plan):
    timings = [stage_timing(st) for st in plan.stages]
    assert sum(l for t in timings for _, l in t) == pytest.approx(plan.latency_s, rel=1e-9)
    assert max(i for t in timings for i, _ in t) == pytest.approx(plan.interval_s, rel=1e-9)


def test_stage_timing_adds_up_to_the_plan_of_record():
    plan = Plan.load(ALEXNET_PLAN)
    assert {st.link_out.mode for st in plan.stages if st.link_out} == {"stage", "merged"}
    _timing_agrees_with(plan)
    stage0 = stage_timing(plan.stages[0])
    assert stage0[0][1] > stage0[0][0]  # a dataflow stage: latency over interval


@pytest.mark.parametrize("name,k", [("digits-cnn", 3), ("jet-mlp", 2), ("alexnet-conv", 4), ("lstm-small", 2)])
def test_stage_timing_adds_up_to_fresh_plans(name, k):
    _timing_agrees_with(make_plan(zoo.build(name), Cluster.uniform("zcu102", k, link="aurora-10g"),
                                  precision="ap_fixed<16,6>"))


def test_paced_worker_tags_results_and_host_stages_only_pass_release_times_on():
    g = zoo.build("jet-mlp")
    plan = make_plan(g, Cluster.uniform("zcu102", 2, link="aurora-10g"), precision="ap_fixed<16,6>", method="equal")
    fpga, host = build_stages(plan, g), build_stages(plan, g, {"fpga1": "cpu"})
    x = np.zeros(g.inputs[0].shape, np.float32)
    w0 = StageWorker(fpga[0], paced=True, time_scale=1000)
    out = w0.process({g.input_names[0]: x, RELEASE_KEY: np.array(0.0)})
    release = float(out[RELEASE_KEY])
    assert w0.pacer.servers == [(i * 1000, l * 1000) for i, l in fpga[0].timing]
    assert release > 0
    w1 = StageWorker(host[1], paced=True)
    assert w1.pacer.servers == []  # a cpu stage runs at its real speed
    out1 = w1.process(dict(out, **{RELEASE_KEY: np.array(0.0)}))
    assert RELEASE_KEY in out1 and not StageWorker(fpga[0]).process({g.input_names[0]: x}).get(RELEASE_KEY)


@pytest.fixture(scope="module")
def jet():
    g = zoo.build("jet-mlp")
    plan = make_plan(g, Cluster.uniform("zcu102", 2, link="aurora-10g"), precision="ap_fixed<16,6>", method="equal")
    # stretch the modeled times to about 20 ms per item, well above what emulation takes here
    # (and well above scheduling jitter: the throughput bound below allows the first result
    # of the measured stream to be ~20 ms late)
    scale = 0.020 / plan.interval_s
    xs = list(np.random.default_rng(3).standard_normal((24,) + g.inputs[0].shape).astype(np.float32))
    return g, plan, scale, xs


def test_paced_local_pipeline_is_bit_exact_and_never_ahead_of_the_plan(jet):
    g, plan, scale, xs = jet
    with Pipeline(plan, g, paced=True, time_scale=scale) as p:
        list(p.map(xs[:4]))  # warm-up: first calls are slower than steady state
        p.reset_metrics()
        outs = list(p.map(xs))
        stream = p.stats()
        p.reset_metrics()
        for x in xs[:6]:
            p(x)
        single = p.stats()
    for x, out in zip(xs, outs):
        ref = g.run(x, precision=plan.precision)
        assert set(out) == set(g.output_names)  # the release time stays inside the runtime
        assert all(np.array_equal(out[k], ref[k]) for k in ref)
    assert stream["time_scale"] == scale
    assert stream["predicted_interval_s"] == pytest.approx(plan.interval_s * scale)
    # a result never leaves before the modeled pipeline releases it
    assert single["latency_p50_s"] >= single["predicted_latency_s"] * (1 - 1e-6)
    # (n-1)/span from the first to the last result: at most the modeled rate, with a few % for the first
    assert stream["throughput_per_s"] <= 1.05 / stream["predicted_interval_s"]


def test_time_scale_must_be_positive(jet):
    g, plan, _, _ = jet
    with pytest.raises(RuntimeFault, match="time_scale"):
        Pipeline(plan, g, paced=True, time_scale=0)


def test_paced_replicas_together_keep_the_plans_interval(jet):
    import dataclasses

    g, plan, scale, xs = jet
    # stage 1 at the plan's interval on two boards: each replica takes twice that per item
    st1 = plan.stages[1]
    slow = dataclasses.replace(st1, stage_time_s=plan.interval_s, replicas=("fpga2",))
    plan2 = dataclasses.replace(plan, stages=(plan.stages[0], slow))
    with Pipeline(plan2, g, paced=True, time_scale=scale) as p:
        list(p.map(xs[:4]))  # warm-up
        p.reset_metrics()
        outs = list(p.map(xs))
        stream = p.stats()
    assert all(np.array_equal(o[k], g.run(x, precision=plan.precision)[k]) for x, o in zip(xs, outs) for k in o)
    reps = stream["stages"][1]["replicas"]
    assert [r["items"] for r in reps] == [(len(xs) + 4) // 2] * 2
    assert stream["throughput_per_s"] <= 1.05 / stream["predicted_interval_s"]
