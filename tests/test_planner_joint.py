"""The joint planner against brute force, and against the baselines on zoo models."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import conveyor
from conveyor import PlanError
from conveyor.cost.fpga import LayerOption, Resources
from conveyor.cost.work import LayerWork
from conveyor.hardware import Cluster
from conveyor.planner import plan
from conveyor.planner.chain import ChainProblem, Cut, chain_problem
from conveyor.planner.joint import plan_joint


def _work(i: int) -> LayerWork:
    return LayerWork(f"l{i}", "Conv", 1, 0, 1, 16, 16, 32, 1, 1, 1, 1, 1, 0)


def _random_problem(rng, m: int, k: int) -> ChainProblem:
    clocks = tuple(float(rng.choice([1.0, 2.0])) for _ in range(k))
    options = []
    for j in range(k):
        per_layer = []
        for i in range(m):
            n = int(rng.integers(1, 4))
            intervals = sorted(rng.integers(1, 40, n).tolist(), reverse=True)
            # as the cost model guarantees: a faster engine costs at least as much of every resource
            opts, dsp, bram = [], 0, 0
            for iv in dict.fromkeys(intervals):
                dsp += int(rng.integers(1, 6))
                bram += int(rng.integers(0, 3))
                opts.append(LayerOption(dsp, int(iv), int(iv) + int(rng.integers(0, 5)), Resources(dsp, bram, 0, 0)))
            per_layer.append(tuple(opts))
        options.append(tuple(per_layer))
    budgets = tuple(Resources(int(rng.integers(6, 20)), int(rng.integers(4, 12)), 10**9, 10**9) for _ in range(k))
    cuts = tuple(Cut(i, (f"t{i}",), int(rng.integers(0, 3)) * 18432 // 8) for i in range(m - 1))
    link_seconds = tuple(tuple(float(rng.integers(0, 12)) for _ in range(m - 1)) if j + 1 < k
                         else tuple(float("inf") for _ in range(m - 1)) for j in range(k))
    return ChainProblem(tuple(f"l{i}" for i in range(m)), tuple(_work(i) for i in range(m)), tuple(f"b{j}" for j in range(k)),
                        clocks, budgets, tuple(options), cuts, link_seconds, tuple("x" for _ in range(k)))


def _with_streaming(rng, prob: ChainProblem) -> ChainProblem:
    """`prob` where some boards may also stream their weights: each option again with less
    BRAM (tiles instead of the weights), a little more latency (the first tile) and bytes per item."""
    import dataclasses

    stream, bw, cap = [], [], []
    for j in range(prob.k):
        if rng.random() < 0.3:
            stream.append(None)
            bw.append(0.0)
            cap.append(0)
            continue
        per_layer = []
        for layer in prob.options[j]:
            off = int(rng.integers(0, 30))
            saved = int(rng.integers(0, 3))
            per_layer.append(tuple(LayerOption(o.parallelism, o.interval_cycles, o.latency_cycles + int(rng.integers(0, 3)),
                                               Resources(o.resources.dsp, max(0, o.resources.bram18k - saved), 0, 0),
                                               offchip_bytes=off) for o in layer))
        stream.append(tuple(per_layer))
        bw.append(float(rng.choice([1.0, 2.0, 4.0])))
        cap.append(int(rng.integers(20, 80)))
    # and some of those may also spill activations: again less BRAM (staging tiles instead of the
    # buffers) for more bytes per item, the traffic independent of the engine chosen
    spill = []
    for table in stream:
        if table is None or rng.random() < 0.3:
            spill.append(None)
            continue
        per_layer = []
        for layer in table:
            acts, saved = int(rng.integers(0, 8)), int(rng.integers(2, 9))
            per_layer.append(tuple(LayerOption(o.parallelism, o.interval_cycles, o.latency_cycles,
                                               Resources(o.resources.dsp, max(0, o.resources.bram18k - saved), 0, 0),
                                               offchip_bytes=o.offchip_bytes + acts, act_offchip_bytes=acts)
                                   for o in layer))
        spill.append(tuple(per_layer))
    return dataclasses.replace(prob, stream_options=tuple(stream), stream_memory=tuple("dram" if o else None for o in stream),
                               stream_Bps=tuple(bw), stream_bytes=tuple(cap),
                               spill_options=tuple(spill) if any(o is not None for o in spill) else ())


def _brute(prob: ChainProblem):
    """Every split into <= k leading boards, every link mode, every option per layer, and on
    a board that can stream, weights pinned or streamed, or streamed with activations spilled (then the board's bytes per item over
    its memory bandwidth bound the interval, and they must fit the memory)."""
    m, k = prob.m, prob.k
    best = (float("inf"), float("inf"))
    for nb in range(1, k + 1):
        for cuts in itertools.combinations(range(1, m), nb - 1):
            bounds = (0,) + cuts + (m,)
            for modes in itertools.product(("stage", "merged"), repeat=nb - 1):
                per_board = []
                for j in range(nb):
                    s, e = bounds[j], bounds[j + 1]
                    t_in = prob.link_seconds[j - 1][s - 1] if j > 0 and modes[j - 1] == "merged" else 0.0
                    t_out = prob.link_seconds[j][e - 1] if j < nb - 1 else 0.0
                    merged_out = j < nb - 1 and modes[j] == "merged"
                    buffer = 2 * -(-prob.cuts[e - 1].bytes * 8 // 18432) if j < nb - 1 and modes[j] == "stage" else 0
                    choices = []
                    tables = [(prob.options[j], None)]
                    if prob.stream_options and prob.stream_options[j] is not None:
                        tables.append((prob.stream_options[j], j))
                    if prob.spill_options and prob.spill_options[j] is not None:
                        tables.append((prob.spill_options[j], j))   # activations spilled too, same memory
                    for table, streams in tables:
                        for combo in itertools.product(*(range(len(table[i])) for i in range(s, e))):
                            opts = [table[i][c] for i, c in zip(range(s, e), combo)]
                            res = sum((o.resources for o in opts), Resources())
                            if not (res + Resources(0, buffer, 0, 0)).fits(prob.budgets[j]):
                                continue
                            off = sum(o.offchip_bytes for o in opts)
                            if streams is not None and off > prob.stream_bytes[j]:
                                continue
                            bandwidth_bound = off / prob.stream_Bps[j] if streams is not None else 0.0
                            interval = max(o.interval_cycles for o in opts) / prob.clocks[j]
                            lat = sum(o.latency_cycles for o in opts) / prob.clocks[j]
                            stage = interval + t_in + (t_out if merged_out else 0.0)
                            link_stage = t_out if (j < nb - 1 and modes[j] == "stage") else 0.0
                            choices.append((max(stage, link_stage, bandwidth_bound), lat + (t_out if j < nb - 1 else 0.0)))
                    if not choices:
                        break
                    per_board.append(choices)
                else:
                    for pick in itertools.product(*per_board):
                        cand = (max(p[0] for p in pick), sum(p[1] for p in pick))
                        best = min(best, cand)
    return best


@pytest.mark.parametrize("seed, streaming", [(s, False) for s in range(6)] + [(s, True) for s in range(6)])
def test_joint_planner_matches_brute_force(seed, streaming):
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(60):
        prob = _random_problem(rng, m=int(rng.integers(1, 6)), k=int(rng.integers(1, 4)))
        if streaming:
            prob = _with_streaming(rng, prob)
        want = _brute(prob)
        if want[0] == float("inf"):
            with pytest.raises(PlanError):
                plan_joint(prob)
            continue
        got = plan_joint(prob)
        plain = plan_joint(prob, upgrade=False)
        assert got.interval_s == pytest.approx(want[0], rel=1e-6), (seed, prob)
        assert plain.interval_s == pytest.approx(want[0], rel=1e-6)
        # spending leftover resources never slows the pipeline and never adds latency
        assert got.latency_s <= plain.latency_s * (1 + 1e-12)
        # and the reported figures are what the assignment really does
        stage_max = max(max(b.stage_time_s for b in got.boards),
                        max((b.link_out_s for b in got.boards if b.link_out_mode == "stage"), default=0.0))
        assert got.interval_s == stage_max
        checked += 1
    assert checked >= 20


def test_spilling_activations_matches_brute_force_where_it_changes_the_optimum():
    """Random chains where spilling activations (less BRAM, more bytes per item) changes what
    brute force finds best: the planner finds the same interval, and uses the spill."""
    import dataclasses

    rng = np.random.default_rng(77)
    checked = 0
    for _ in range(1500):
        prob = _random_problem(rng, m=int(rng.integers(1, 6)), k=int(rng.integers(1, 4)))
        prob = _with_streaming(rng, prob)
        if not prob.spill_options:
            continue
        want = _brute(prob)
        if want[0] == _brute(dataclasses.replace(prob, spill_options=()))[0]:
            continue   # the spill does not change the best interval
        got = plan_joint(prob, upgrade=False)
        assert got.interval_s == pytest.approx(want[0], rel=1e-6)
        assert any(b.activations_in == "dram" for b in got.boards)
        checked += 1
        if checked == 8:
            break
    assert checked >= 8


@pytest.mark.parametrize("name, precision", [("alexnet-conv", "ap_fixed<8,3>"), ("alexnet-conv", "ap_fixed<16,6>"),
                                             ("jet-mlp", "ap_fixed<16,6>"), ("digits-cnn", "ap_fixed<16,6>")])
def test_never_worse_than_any_baseline(name, precision):
    g = conveyor.zoo.build(name)
    cluster = Cluster.uniform("zynq7035", 4, link="srio-10g")
    ours = plan(g, cluster, precision=precision)
    fitted = 0
    for method in ("equal", "dichotomy", "greedy"):
        try:
            base = plan(g, cluster, precision=precision, method=method)
        except PlanError:
            continue  # a baseline that does not fit the boards at all
        fitted += 1
        assert ours.interval_s <= base.interval_s * (1 + 1e-9), method
    assert fitted >= 1


def test_plan_round_trips_and_describes_every_layer(tmp_path):
    g = conveyor.zoo.build("alexnet-conv")
    p = plan(g, Cluster.uniform("zynq7035", 4, link="srio-10g"), precision="ap_fixed<8,3>")
    assert [n for s in p.stages for n in s.layers] == [n.name for n in g.nodes]
    assert p.fingerprint == g.fingerprint() and p.throughput == pytest.approx(1 / p.interval_s)
    for s in p.stages:
        assert all(s.resources[r] <= s.budget[r] for r in s.budget)
        assert s.stage_time_s <= p.interval_s * (1 + 1e-9)
    path = tmp_path / "plan.json"
    p.save(path)
    assert conveyor.Plan.load(path) == p


def test_a_layer_too_big_for_any_board_is_named():
    g = conveyor.zoo.build("vgg16-conv")
    # weights and activations on chip only: conv3_2 (590 k weights at 16 bits) fits no PYNQ-Z2
    prob = chain_problem(g, Cluster.uniform("pynq-z2", 2, link="eth-1g"), "ap_fixed<16,6>", offchip=False)
    with pytest.raises(PlanError, match="conv3_2.*fits no device.*nor split"):
        plan_joint(prob)
    # with its weights streamed and its input map spilled to DDR it fits one; the model needs 7
    with pytest.raises(PlanError, match="do not fit on 2 devices.*7 such devices"):
        plan(g, Cluster.uniform("pynq-z2", 2, link="eth-1g"))


def _variant(rng, prob: ChainProblem) -> ChainProblem:
    """`prob` with some devices sequential (one option per layer, times summed) and, sometimes,
    every device identical on a switch (replicas)."""
    import dataclasses

    archs = list(prob.archs)
    options, stream, spill = list(prob.options), list(prob.stream_options), list(prob.spill_options)
    if rng.random() < 0.5:
        for j in range(prob.k):
            if rng.random() < 0.4:
                archs[j] = "overlay"
                options[j] = tuple(layer[:1] for layer in options[j])
                if stream and stream[j] is not None:
                    stream[j] = tuple(layer[:1] for layer in stream[j])
                if spill:
                    spill[j] = None   # a sequential device's layer times already count its activations
    spill = tuple(spill) if any(o is not None for o in spill) else ()
    prob = dataclasses.replace(prob, archs=tuple(archs), options=tuple(options), stream_options=tuple(stream),
                               spill_options=spill, links=(None,) * prob.k)
    if rng.random() < 0.4:
        same = lambda xs: (xs[0],) * prob.k  # noqa: E731
        prob = dataclasses.replace(
            prob, archs=same(prob.archs), options=same(prob.options), clocks=same(prob.clocks),
            budgets=same(prob.budgets), replicable=True, signatures=("x",) * prob.k,
            stream_options=same(prob.stream_options) if prob.stream_options else (),
            stream_memory=same(prob.stream_memory) if prob.stream_memory else (),
            stream_Bps=same(prob.stream_Bps) if prob.stream_Bps else (),
            stream_bytes=same(prob.stream_bytes) if prob.stream_bytes else (),
            spill_options=same(prob.spill_options) if prob.spill_options else ())
    return prob


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_probe_matches_the_reference_dp(seed):
    """The fast probe (per-level prefix tables, joint_levels) against the plain DP, state by state,
    on random chains with streaming, sequential devices and replicas, at every interval where an
    engine choice changes and between them; and its "next event": the plain DP stays
    infeasible everywhere between a failed probe and the event it reports."""
    from conveyor.planner.joint import _Tables, probe, probe_reference

    rng = np.random.default_rng(100 + seed)
    compared = infeasible = 0
    for _ in range(25):
        prob = _random_problem(rng, m=int(rng.integers(1, 8)), k=int(rng.integers(1, 5)))
        if rng.random() < 0.6:
            prob = _with_streaming(rng, prob)
        prob = _variant(rng, prob)
        t = _Tables(prob)
        secs = sorted({x for tm in t.modes() for board in tm.secs for layer in board for x in layer})
        grid = sorted(set(secs) | {x * f for x in secs for f in (0.5, 1.5, 2.5, 4.0)})
        for T in grid[:: max(1, len(grid) // 12)]:
            events: list = []
            fast, ref = probe(prob, t, T, events=events), probe_reference(prob, t, T)
            assert (fast is None) == (ref is None), (seed, T)
            if fast is None:
                event = min(events, default=float("inf"))
                assert event > T * (1 - 1e-12)
                for f in (0.25, 0.5, 0.999):
                    below = T + (min(event, 4 * T + 100) - T) * f
                    if below < event * (1 - 1e-9):
                        assert probe_reference(prob, t, below) is None, (seed, T, below, event)
                infeasible += 1
                continue
            assert fast.latency_s == pytest.approx(ref.latency_s, rel=1e-9), (seed, T)
            assert fast.interval_s <= T * (1 + 1e-9)
            assert [(b.start, b.end) for b in fast.boards][-1][1] == prob.m
            compared += 1
    assert compared >= 40 and infeasible >= 10


@pytest.mark.parametrize("seed", range(3))
def test_upgrade_heap_equals_the_rescanning_greedy(seed):
    from conveyor.planner.joint import _Tables, _upgrade, probe

    rng = np.random.default_rng(200 + seed)
    boards = 0
    for _ in range(40):
        prob = _random_problem(rng, m=int(rng.integers(2, 9)), k=int(rng.integers(1, 4)))
        prob = _with_streaming(rng, prob) if rng.random() < 0.5 else prob
        t = _Tables(prob)
        secs = sorted({x for board in t.secs for layer in board for x in layer})
        r = probe(prob, t, secs[-1] * 3)
        if r is None:
            continue
        for b in r.boards:
            assert _upgrade(t.for_board(b), b) == _upgrade(t.for_board(b), b, plain=True)
            boards += 1
    assert boards >= 30
