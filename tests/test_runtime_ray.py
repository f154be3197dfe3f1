"""The `ray` executor on a real two-node Ray cluster (both nodes on this machine): a head
node and an "FPGA node" offering the custom resource `fpga`. Stages must land on the FPGA
node, outputs must equal the bit-accurate emulation, and a killed stage actor must cost
no request (Compiled Graph and plain actor calls)."""

from __future__ import annotations

import contextlib
import glob
import os
import threading
import time
from collections import Counter

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster as RayCluster  # noqa: E402

from conveyor import ModelError, zoo  # noqa: E402
from conveyor.errors import RuntimeFault  # noqa: E402
from conveyor.hardware import Cluster  # noqa: E402
from conveyor.planner import plan as make_plan  # noqa: E402
from conveyor.runtime.pipeline import Pipeline  # noqa: E402

MODES = ("compiled", "plain")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = RayCluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    fpga_node = c.add_node(num_cpus=2, resources={"fpga": 2})
    c.wait_for_nodes()
    c.fpga_node_id = fpga_node.node_id
    raylets = [n.all_processes["raylet"][0].process.pid for n in (c.head_node, fpga_node)]
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()
    # Ray's raylets leave the named semaphores of cross-node channels in /dev/shm; remove ours
    for pid in raylets:
        for f in glob.glob(f"/dev/shm/sem.hdr{pid}-*"):
            with contextlib.suppress(OSError):
                os.unlink(f)


@pytest.fixture(scope="module")
def model():
    graph = zoo.build("digits-cnn")
    plan = make_plan(graph, Cluster.uniform("zcu102", 2, link="aurora-10g"), precision="ap_fixed<16,6>",
                     method="equal")
    assert len(plan.stages) == 2 and [s.device for s in plan.stages] == ["fpga0", "fpga1"]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 1, 8, 8)).astype(np.float32) for _ in range(20)]
    refs = [graph.run(x, precision=plan.precision) for x in xs]
    return graph, plan, xs, refs


def _pipeline(cluster, model, mode, **options) -> Pipeline:
    graph, plan, _, _ = model
    return Pipeline(plan, graph, executor="ray", address=cluster.address,
                    use_compiled_graph=(mode == "compiled"), **options)


def _same(out: dict, ref: dict) -> bool:
    return set(out) == set(ref) and all(np.array_equal(out[k], ref[k]) for k in ref)


def _count_deliveries(p: Pipeline) -> Counter:
    seen: Counter = Counter()
    inner = p.executor._deliver_cb

    def counting(rid, result):
        seen[rid] += 1
        inner(rid, result)

    p.executor._deliver_cb = counting
    return seen


@pytest.mark.parametrize("mode", MODES)
def test_outputs_placement_and_bad_request(cluster, model, mode):
    _, _, xs, refs = model
    with _pipeline(cluster, model, mode) as p:
        assert p.executor.mode == mode, p.executor.fallback_reason
        outs = list(p.map(xs))
        assert all(_same(o, r) for o, r in zip(outs, refs))  # in order, bit for bit
        bad = p.submit(np.zeros((1, 1, 4, 4), np.float32))
        good = p.submit(xs[3])
        with pytest.raises(ModelError):
            bad.result(timeout=30)
        assert _same(good.result(timeout=30), refs[3])
        stats = p.stats()
        assert stats["completed"] == len(xs) + 1 and stats["failed"] == 1
        stages = stats["stages"]
        assert [s["index"] for s in stages] == [0, 1]
        assert [s["device"] for s in stages] == ["fpga0", "fpga1"]
        assert all(s["backend"] == "emulator" for s in stages)
        assert all(s["node_id"] == cluster.fpga_node_id for s in stages)  # placed on the FPGA node
        assert all(s["items"] == len(xs) + 1 and s["busy_s"] > 0 and s["restarts"] == 0 for s in stages)
    assert not ray.is_initialized()  # the executor started this connection, so it closed it


def test_paced_across_nodes_is_exact_and_never_ahead_of_the_plan(cluster, model):
    """Release times travel with the items between nodes: at batch 1 a result never comes
    back before the plan's (stretched) latency, and the values are still bit-exact."""
    graph, plan, xs, refs = model
    scale = 0.010 / plan.interval_s  # about 10 ms per item
    with _pipeline(cluster, model, "compiled", paced=True, time_scale=scale) as p:
        outs = [p(x) for x in xs[:5]]
        stats = p.stats()
    assert all(_same(o, r) for o, r in zip(outs, refs))
    assert stats["latency_p50_s"] >= stats["predicted_latency_s"] * (1 - 1e-6)
    assert all(s["overruns"] is not None for s in stats["stages"])


def test_stage_exception_fails_only_its_request(cluster, model):
    """An exception inside a stage (here: a bundle that skips the Pipeline's checks) fails
    that request alone; a Ray the executor did not start is left running."""
    from conveyor.runtime.ray_executor import RayExecutor
    from conveyor.runtime.stages import build_stages

    graph, plan, xs, refs = model
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    results: dict = {}
    done = threading.Event()

    def deliver(rid, result):
        results[rid] = result
        if len(results) == 3:
            done.set()

    ex = RayExecutor(use_compiled_graph=True)
    try:
        ex.start(build_stages(plan, graph), deliver, paced=False)
        name = graph.input_names[0]
        ex.send(0, {name: xs[0]})
        ex.send(1, {name: np.zeros((1, 1, 3, 3), np.float32)})
        ex.send(2, {name: xs[2]})
        assert done.wait(60)
        assert _same({k: results[0][k] for k in graph.output_names}, refs[0])
        assert isinstance(results[1], RuntimeFault) and "stage 0" in str(results[1])
        assert _same({k: results[2][k] for k in graph.output_names}, refs[2])
    finally:
        ex.close()
    assert ray.is_initialized()
    ray.shutdown()


@pytest.mark.parametrize("mode", MODES)
def test_killed_stage_restarts_and_every_request_completes_once(cluster, model, mode):
    _, _, xs, refs = model
    with _pipeline(cluster, model, mode, max_in_flight=6) as p:
        assert p.executor.mode == mode
        seen = _count_deliveries(p)
        futs = [p.submit(x) for x in xs[:5]]
        ray.kill(p.executor.actors[1], no_restart=False)
        futs += [p.submit(x) for x in xs[5:]]
        outs = [f.result(timeout=90) for f in futs]
        assert all(_same(o, r) for o, r in zip(outs, refs))
        assert len(seen) == len(xs) and set(seen.values()) == {1}  # exactly once
        stats = p.stats()
        assert stats["completed"] == len(xs) and stats["failed"] == 0
        assert stats["stages"][1]["restarts"] >= 1 and stats["stages"][0]["restarts"] == 0
        assert stats["stages"][1]["node_id"] == cluster.fpga_node_id
        assert _same(p(xs[7]), refs[7])  # and it keeps serving


@pytest.mark.parametrize("mode", MODES)
def test_stage_dead_for_good_gives_runtime_fault(cluster, model, mode):
    _, _, xs, refs = model
    with _pipeline(cluster, model, mode, max_restarts=0) as p:
        assert _same(p(xs[0]), refs[0])
        futs = [p.submit(x) for x in xs[:3]]
        ray.kill(p.executor.actors[1], no_restart=False)
        futs += [p.submit(x) for x in xs[3:5]]
        errors = []
        t0 = time.monotonic()
        for f in futs:
            try:
                f.result(timeout=90)
            except RuntimeFault as e:
                errors.append(str(e))
        assert time.monotonic() - t0 < 90
        assert errors and all("stage 1" in e and "fpga1" in e for e in errors)
        with pytest.raises(RuntimeFault, match="stage 1"):
            p(xs[0])


def test_replicated_stage_round_robins_over_its_actors_and_survives_a_kill(cluster, model):
    """A plan that runs stage 1 on two boards: one actor per board, every other request
    each (plain calls: a compiled graph routes every request the same way); a killed
    replica restarts without losing a request."""
    import dataclasses

    graph, plan, xs, refs = model
    plan2 = dataclasses.replace(plan, stages=(plan.stages[0], dataclasses.replace(plan.stages[1], replicas=("fpga2",))))
    with Pipeline(plan2, graph, executor="ray", address=cluster.address, num_cpus_per_stage=0.5,
                  max_in_flight=6) as p:
        assert p.executor.mode == "plain" and "replicates" in p.executor.fallback_reason
        seen = _count_deliveries(p)
        futs = [p.submit(x) for x in xs[:6]]
        ray.kill(p.executor.actors[2], no_restart=False)  # stage 1's second replica
        futs += [p.submit(x) for x in xs[6:]]
        outs = [f.result(timeout=90) for f in futs]
        stats = p.stats()
    assert all(_same(o, r) for o, r in zip(outs, refs))
    assert len(seen) == len(xs) and set(seen.values()) == {1}
    reps = stats["stages"][1]["replicas"]
    assert [r["device"] for r in reps] == ["fpga1", "fpga2"]
    assert all(r["node_id"] == cluster.fpga_node_id for r in reps)
    assert reps[0]["items"] == len(xs) // 2 and reps[1]["restarts"] >= 1
