"""The exact chain partition (conveyor.partition.balance) against brute-force enumeration.

The bulk is seeded numpy randomness (fast), 2,000 cases for each of the 16 variants
(CONVEYOR_PARTITION_CASES overrides the count)
(equal / heterogeneous speeds x stage / merged links x memory caps off / on x empty boards
allowed / forbidden).  Costs are sometimes small integers (so that many splits tie in
bottleneck and latency), sometimes of very different magnitudes (so that rounding shows).
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.errors import PlanError
from conveyor.partition import Split, balance, brute_force
from conveyor.planner import partition_latency
from conveyor.planner.partition_rangemin import SparseMin, ThresholdRangeMin

CASES = int(os.environ.get("CONVEYOR_PARTITION_CASES", "2000"))   # per variant
VARIANTS = [
    dict(hetero=h, mode=md, mem=mm, allow_empty=ae)
    for h in (False, True) for md in ("stage", "merged") for mm in (False, True) for ae in (True, False)
]


def _ids(v):
    return f"{'hetero' if v['hetero'] else 'equal'}-{v['mode']}-{'mem' if v['mem'] else 'nomem'}-" \
           f"{'empty' if v['allow_empty'] else 'noempty'}"


def random_case(rng, hetero, mode, mem, allow_empty):
    m = int(rng.integers(1, 17))
    k = int(rng.integers(1, 7))
    if not allow_empty and k > m and rng.random() < 0.9:
        k = int(rng.integers(1, m + 1))
    kind = rng.integers(0, 5)
    if kind == 0:
        costs = rng.random(m) * 10
    elif kind == 1:
        costs = rng.integers(0, 4, m).astype(float)          # many ties
    elif kind == 2:
        costs = np.round(rng.random(m) * 10, 1)              # decimal fractions: inexact sums
    elif kind == 3:
        costs = 10.0 ** rng.uniform(-6, 6, m)                # magnitudes far apart
    else:
        costs = np.where(rng.random(m) < 0.6, 0.0, rng.integers(1, 5, m).astype(float))
    kw = dict(link_mode=mode, allow_empty=allow_empty)
    if hetero:
        kw["speeds"] = (rng.choice([0.5, 1.0, 1.5, 2.0, 3.0], k) if rng.random() < 0.5
                        else rng.uniform(0.2, 3.0, k))
    lk = rng.integers(0, 5)
    if lk == 1:
        kw["link_costs"] = rng.integers(0, 4, m - 1).astype(float)
    elif lk == 2:
        kw["link_costs"] = rng.random(m) * 5                  # m entries: the last is unused
    elif lk == 3:
        kw["link_costs"] = rng.random(m - 1) * float(costs.sum() + 1)   # links that rival the compute
    elif lk == 4:
        kw["link_costs"] = np.round(rng.random(m - 1) * 3, 1)
    if mem:
        if rng.random() < 0.8:
            memory = rng.integers(0, 10, m)
        else:
            memory = np.round(rng.random(m) * 10, 2)
        kw["memory"] = memory
        fair = max(float(memory.max()), float(memory.sum()) / k, 1.0)
        if rng.random() < 0.6:
            kw["capacity"] = fair * rng.uniform(1.0, 2.5)
        else:
            kw["capacity"] = np.round(fair * rng.uniform(0.6, 2.5, k)).astype(int)
    return costs, k, kw


def recompute(costs, k, kw, split: Split):
    """Bottleneck and latency of split.stages by the documented formulas, in plain Python."""
    m = len(costs)
    P = [0.0]
    for c in costs:
        P.append(P[-1] + float(c))
    speeds = [1.0] * k if kw.get("speeds") is None else [float(s) for s in kw["speeds"]]
    links = kw.get("link_costs")
    cut = [0.0] * (m + 1)
    if links is not None:
        for p in range(1, m):
            cut[p] = float(links[p - 1])
    merged = kw.get("link_mode", "stage") == "merged"
    stages = split.stages
    assert len(stages) == k
    assert stages[0][0] == 0 and stages[-1][1] == m
    for (a, b), (c, _) in zip(stages, stages[1:]):
        assert a <= b == c
    bott, lat, stage_t, link_t = 0.0, 0.0, [], []
    for j, (a, b) in enumerate(stages):
        if a == b:
            assert kw.get("allow_empty", True)
            stage_t.append(0.0)
            continue
        qa, qb = P[a] / speeds[j], P[b] / speeds[j]
        t = ((cut[a] - qa) + qb) + cut[b] if merged else qb - qa
        stage_t.append(t)
        bott = max(bott, t)
        lat = ((lat - qa) + qb) + cut[b]
        if b < m:
            link_t.append(cut[b])
            if not merged:
                bott = max(bott, cut[b])
    if kw.get("memory") is not None:
        cap = kw["capacity"]
        caps = [float(cap)] * k if np.ndim(cap) == 0 else [float(c) for c in cap]
        mem = np.asarray(kw["memory"])
        for j, (a, b) in enumerate(stages):
            assert mem[a:b].sum() <= caps[j] * (1 + 1e-12)
    return bott, lat, stage_t, link_t


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_matches_brute_force(variant, monkeypatch):
    rng = np.random.default_rng(sum(ord(ch) for ch in _ids(variant)))
    errors = 0
    for it in range(CASES):
        costs, k, kw = random_case(rng, **variant)
        if variant["mode"] == "merged":
            # every other case takes the 2-D (range, threshold) query instead of the direct scan
            monkeypatch.setattr(partition_latency, "_FUZZY_SCAN", 24 if it % 2 else 0)
        try:
            want = brute_force(costs, k, **kw)
        except PlanError:
            with pytest.raises(PlanError):
                balance(costs, k, **kw)
            errors += 1
            continue
        got = balance(costs, k, **kw)
        ctx = (it, list(costs), k, kw, got, want)
        assert got.bottleneck == want.bottleneck, ctx
        assert got.latency == want.latency, ctx
        bott, lat, stage_t, link_t = recompute(costs, k, kw, got)
        assert bott == got.bottleneck and lat == got.latency, ctx
        assert list(got.stage_times) == stage_t and list(got.link_times) == link_t, ctx
        assert recompute(costs, k, kw, want)[:2] == (want.bottleneck, want.latency)
    assert errors < CASES // 5


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.floats(0, 1e3, allow_nan=False, width=32), min_size=1, max_size=9),
    k=st.integers(1, 4),
    links=st.lists(st.floats(0, 1e3, allow_nan=False, width=32), min_size=8, max_size=8),
    speeds=st.lists(st.sampled_from([0.25, 0.5, 1.0, 3.0, 7.5]), min_size=4, max_size=4),
    mode=st.sampled_from(["stage", "merged"]),
    allow_empty=st.booleans(),
)
def test_hypothesis_matches_brute_force(costs, k, links, speeds, mode, allow_empty):
    """A hypothesis sweep on top of the seeded bulk: shrinks to a small failing chain."""
    m = len(costs)
    kw = dict(speeds=speeds[:k], link_costs=links[: m - 1], link_mode=mode, allow_empty=allow_empty)
    try:
        want = brute_force(costs, k, **kw)
    except PlanError:
        with pytest.raises(PlanError):
            balance(costs, k, **kw)
        return
    got = balance(costs, k, **kw)
    assert (got.bottleneck, got.latency) == (want.bottleneck, want.latency)


def test_brute_force_matches_plain_enumeration():
    rng = np.random.default_rng(7)
    for _ in range(60):
        m, k = int(rng.integers(1, 7)), int(rng.integers(1, 4))
        costs = rng.integers(0, 5, m).astype(float)
        links = rng.integers(0, 3, max(m - 1, 0)).astype(float)
        for mode in ("stage", "merged"):
            kw = dict(link_costs=links, link_mode=mode)
            best = None
            for cuts in itertools.combinations_with_replacement(range(m + 1), k - 1):
                bounds = (0, *cuts, m)
                stages = tuple(zip(bounds, bounds[1:]))
                fake = Split(stages, 0.0, 0.0, (), (), (), (), mode)
                b, lat, _, _ = recompute(costs, k, kw, fake)
                if best is None or (b, lat) < best:
                    best = (b, lat)
            got = brute_force(costs, k, **kw)
            assert (got.bottleneck, got.latency) == best


@pytest.mark.parametrize("variant", VARIANTS[::3], ids=_ids)
def test_larger_cases_match_brute_force(variant):
    """m up to 40 (up to ~200,000 splits): wider search bands, more bisection steps."""
    rng = np.random.default_rng(11)
    for _ in range(4):
        m = int(rng.integers(25, 41))
        k = 4 if variant["allow_empty"] else 5
        costs = np.where(rng.random(m) < 0.3, 0.0, rng.random(m) * 5)
        kw = dict(link_costs=rng.random(m - 1) * 4, link_mode=variant["mode"],
                  allow_empty=variant["allow_empty"])
        if variant["hetero"]:
            kw["speeds"] = rng.uniform(0.5, 2.0, k)
        if variant["mem"]:
            kw["memory"] = rng.integers(1, 100, m)
            kw["capacity"] = int(kw["memory"].sum() * 0.45)
        got, want = balance(costs, k, **kw), brute_force(costs, k, **kw)
        assert (got.bottleneck, got.latency) == (want.bottleneck, want.latency)


def test_big_instance_is_consistent():
    rng = np.random.default_rng(3)
    m, k = 3000, 24
    costs = rng.random(m) * 10
    links = rng.random(m - 1) * 3
    for mode in ("stage", "merged"):
        for ae in (True, False):
            kw = dict(link_costs=links, link_mode=mode, allow_empty=ae, speeds=rng.uniform(0.5, 2, k))
            s = balance(costs, k, **kw)
            bott, lat, _, _ = recompute(costs, k, kw, s)
            assert (bott, lat) == (s.bottleneck, s.latency)
            assert s.bottleneck <= costs.sum() / 0.5
            if not ae:
                assert all(b > a for a, b in s.stages)


# -- edge cases ---------------------------------------------------------------------------------

def test_single_board_takes_everything():
    s = balance([1.0, 2.0, 3.0], 1, speeds=[2.0], link_costs=[5.0, 5.0])
    assert s.stages == ((0, 3),)
    assert s.bottleneck == 3.0 and s.latency == 3.0 and s.link_times == () and s.cuts == ()


def test_more_boards_than_layers():
    s = balance([4.0, 1.0, 2.0], 5)
    assert s.bottleneck == 4.0
    assert len(s.stages) == 5 and sum(b - a for a, b in s.stages) == 3
    with pytest.raises(PlanError, match="allow_empty=False needs k <= number of layers"):
        balance([4.0, 1.0, 2.0], 5, allow_empty=False)


def test_zero_costs():
    s = balance([0.0] * 6, 3)
    assert s.bottleneck == 0.0 and s.latency == 0.0
    s = balance([0.0] * 6, 3, allow_empty=False, link_costs=[0.0, 1.0, 0.0, 2.0, 0.0])
    assert s.bottleneck == 0.0 and all(b > a for a, b in s.stages)


def test_expensive_links_keep_everything_on_one_board():
    s = balance([1.0, 1.0, 1.0, 1.0], 3, link_costs=[100.0] * 3)
    assert s.bottleneck == 4.0 and s.latency == 4.0
    assert sum(1 for a, b in s.stages if b > a) == 1
    s = balance([1.0, 1.0, 1.0, 1.0], 3, link_costs=[100.0] * 3, link_mode="merged")
    assert s.bottleneck == 4.0 and s.link_times == ()


def test_cut_is_paid_once_across_empty_boards():
    # board 1 is slow; with empty boards allowed it is skipped and the one cut costs once
    s = balance([5.0, 5.0], 3, speeds=[1.0, 0.01, 1.0], link_costs=[2.0], link_mode="merged")
    assert s.stages == ((0, 1), (1, 1), (1, 2))
    assert s.stage_times == (7.0, 0.0, 7.0) and s.link_times == (2.0,) and s.latency == 12.0


def test_latency_breaks_ties():
    # bottleneck 4 either way; cutting after layer 0 costs 3, after layer 1 costs 1
    s = balance([2.0, 2.0, 4.0], 2, link_costs=[3.0, 1.0])
    assert s.stages == ((0, 2), (2, 3)) and s.bottleneck == 4.0 and s.latency == 9.0


def test_heterogeneous_speeds_follow_board_order():
    s = balance([6.0, 6.0, 6.0, 6.0], 2, speeds=[3.0, 1.0])
    assert s.stages == ((0, 3), (3, 4)) and s.bottleneck == 6.0
    assert s.compute_times == (6.0, 6.0)


def test_memory_caps_shape_the_split():
    s = balance([1.0, 1.0, 1.0, 10.0], 2, memory=[5, 5, 5, 1], capacity=[10, 10])
    assert s.stages == ((0, 2), (2, 4))
    assert s.bottleneck == 11.0


def test_link_costs_of_length_m_ignore_the_last():
    a = balance([1.0, 2.0, 3.0], 2, link_costs=[1.0, 2.0])
    b = balance([1.0, 2.0, 3.0], 2, link_costs=[1.0, 2.0, 99.0])
    assert a == b


def test_split_is_frozen():
    s = balance([1.0, 2.0], 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.bottleneck = 0.0


# -- infeasible and malformed input -----------------------------------------------------------

def test_layer_bigger_than_any_board():
    with pytest.raises(PlanError, match=r"layer 2 needs 3\.2 MB of weights, more than any board's capacity \(2 MB\)"):
        balance([1.0, 1.0, 1.0], 3, memory=[1e6, 1e6, 3.2e6], capacity=2e6)


def test_memory_total_too_big():
    with pytest.raises(PlanError, match="need 30 bytes of weights in all, more than the 2 boards hold together"):
        balance([1.0, 1.0, 1.0], 2, memory=[10, 10, 10], capacity=14)


def test_memory_fits_only_in_another_board_order():
    with pytest.raises(PlanError, match="in chain order fits every board's memory"):
        balance([1.0, 1.0, 1.0], 2, memory=[1, 1, 9], capacity=[10, 2])
    with pytest.raises(PlanError):
        brute_force([1.0, 1.0, 1.0], 2, memory=[1, 1, 9], capacity=[10, 2])


def test_memory_without_empty_boards():
    with pytest.raises(PlanError, match="with every board non-empty"):
        balance([1.0, 1.0, 1.0], 3, memory=[2, 2, 2], capacity=[4, 1, 4], allow_empty=False)
    s = balance([1.0, 1.0, 1.0], 3, memory=[2, 2, 2], capacity=[4, 1, 4])
    assert s.bottleneck == 2.0 and s.stages[1][0] == s.stages[1][1]


@pytest.mark.parametrize("args, kwargs, pattern", [
    (([1.0, -1.0], 2), {}, r"costs\[1\] is -1\.0; layer costs must be finite and >= 0"),
    (([1.0, float("nan")], 2), {}, r"costs\[1\] is nan"),
    (([], 2), {}, "costs is empty"),
    (([[1.0, 2.0]], 2), {}, "costs must be a 1-D sequence"),
    (("abc", 2), {}, "costs must be a sequence of numbers"),
    (([1.0], 0), {}, "k must be a positive integer"),
    (([1.0], 2.0), {}, "k must be a positive integer"),
    (([1.0, 2.0], 2), dict(speeds=[1.0]), r"speeds has 1 entries; expected 2"),
    (([1.0, 2.0], 2), dict(speeds=[1.0, 0.0]), r"speeds\[1\] is 0\.0; board speeds must be finite and > 0"),
    (([1.0, 2.0], 2), dict(link_costs=[1.0, 2.0, 3.0]), "link_costs has 3 entries; expected 1"),
    (([1.0, 2.0], 2), dict(link_costs=[-1.0]), r"link_costs\[0\] is -1\.0"),
    (([1.0, 2.0], 2), dict(link_mode="overlap"), "link_mode 'overlap' is not known"),
    (([1.0, 2.0], 2), dict(memory=[1, 2]), "memory was given without capacity"),
    (([1.0, 2.0], 2), dict(capacity=5), "capacity was given without memory"),
    (([1.0, 2.0], 2), dict(memory=[1], capacity=5), "memory has 1 entries; expected 2"),
    (([1.0, 2.0], 2), dict(memory=[1, 2], capacity=[5]), "capacity has 1 entries; expected 2"),
    (([1.0, 2.0], 2), dict(memory=[1, 2], capacity=-5), r"capacity\[0\] is -5"),
    (([1.0, 2.0], 2), dict(allow_empty="no"), "allow_empty must be True or False"),
])
def test_malformed_input(args, kwargs, pattern):
    with pytest.raises(PlanError, match=pattern):
        balance(*args, **kwargs)
    with pytest.raises(PlanError, match=pattern):
        brute_force(*args, **kwargs)


def test_brute_force_refuses_huge_enumerations():
    with pytest.raises(PlanError, match="brute_force would enumerate"):
        brute_force(np.ones(200), 8)


# -- the range-minimum structures ------------------------------------------------------------------

def test_sparse_min_matches_naive():
    rng = np.random.default_rng(5)
    for n in (1, 2, 7, 64, 300):
        vals = rng.permutation(n).astype(np.int64)
        L = rng.integers(0, n, 200)
        R = np.minimum(L + 1 + rng.integers(0, n, 200), n)
        got = SparseMin(vals, int((R - L).max())).query(L, R)
        assert got.tolist() == [int(vals[a:b].min()) for a, b in zip(L, R)]


def test_threshold_range_min_matches_naive():
    rng = np.random.default_rng(6)
    for n in (1, 2, 5, 33, 257):
        kr = rng.permutation(n)
        vals = rng.permutation(n).astype(np.int64)
        vals[rng.random(n) < 0.2] = n
        L = rng.integers(0, n + 1, 300)
        R = np.minimum(L + rng.integers(0, n + 1, 300), n)
        T = rng.integers(0, n + 1, 300)
        got = ThresholdRangeMin(kr, max(1, int((R - L).max()))).query(vals, L, R, T)
        want = [min([int(vals[p]) for p in range(a, b) if kr[p] < t], default=n) for a, b, t in zip(L, R, T)]
        assert got.tolist() == want
