"""Benchmark of the exact chain partition (conveyor.partition.balance).  A script, not a test:

    python benchmarks/partition.py [--repeat 3] [--instances 1000]

1. Speed: m = 10,000 layers onto k = 64 boards, every variant (stage / merged links, equal /
   heterogeneous speeds, empty boards allowed / forbidden, memory caps off / on), median
   wall time of --repeat runs and its ratio to the 1 s target.  Random instances, plus two
   harder shapes (one layer holding 30% of the work; 99.9% zero-cost layers), which leave
   the search wide bands.  Wall time and CPU time (process_time) are both printed: on a
   shared machine the wall time includes waiting for a core.
2. Quality of the usual heuristics on --instances random chains, as the ratio of their
   bottleneck to the optimum.  The heuristics are re-implemented here from their published
   algorithms (labelled), not imported:
   - DeepSpeed ``partition_uniform``: equal layer counts (runtime/utils.py);
   - DeepSpeed ``partition_balanced`` (the binary-search version: ``_rb_partition_balanced``
     bisects the heaviest-part bound with an absolute eps = 1e-3, ``_lprobe`` fills parts
     greedily by prefix sums); fed layer costs ("by cost") or parameter counts ("by params",
     DeepSpeed's ``partition_method="parameters"``);
   - torchgpipe ``balance_by_time`` -> ``balance_cost`` -> ``blockpartition.solve``
     (Barany et al., "Block partitions of sequences": move one element at a time from a
     block next to the lightest block until max <= min + 1 on costs normalised to [0, 1]).
   All of them assume equal boards and free links; they are scored first in that model,
   then in the full model (heterogeneous speeds and link costs, stage links).
"""

from __future__ import annotations

import argparse
import bisect
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from conveyor.partition import balance  # noqa: E402
from conveyor.planner.partition_model import Chain  # noqa: E402

TARGET_S = 1.0


# -- 1. speed ------------------------------------------------------------------------------------

def make_instance(rng, m, k, shape):
    if shape == "random":
        costs = rng.random(m) * 10
    elif shape == "spike":
        costs = rng.random(m) * 10
        costs[m // 2] = costs.sum() * 0.3
    elif shape == "zero-runs":
        costs = np.zeros(m)
        costs[:: m // 10] = 1.0
    else:
        raise ValueError(shape)
    return dict(
        costs=costs,
        links=rng.random(m - 1) * 5,
        speeds=rng.uniform(0.5, 2.0, k),
        memory=rng.integers(1_000, 100_000, m),
    )


def speed_table(repeat: int):
    m, k = 10_000, 64
    rng = np.random.default_rng(2024)
    print(f"\n== speed: m = {m:,} layers, k = {k} boards (median of {repeat} runs; target {TARGET_S:.0f} s) ==")
    worst = worst_cpu = 0.0
    for shape in ("random", "spike", "zero-runs"):
        inst = make_instance(rng, m, k, shape)
        cap = int(inst["memory"].sum() / k * 1.5)
        print(f"\n-- instance: {shape} --")
        print(f"{'links':7} {'speeds':7} {'empty':6} {'memory':7} {'wall (s)':>9} {'/target':>8} "
              f"{'cpu (s)':>8}  {'bottleneck':>12} {'latency':>12}")
        for mode in ("stage", "merged"):
            for het in (False, True):
                for ae in (True, False):
                    for mem in (False, True):
                        kw = dict(link_costs=inst["links"], link_mode=mode, allow_empty=ae)
                        if het:
                            kw["speeds"] = inst["speeds"]
                        if mem:
                            kw.update(memory=inst["memory"], capacity=cap)
                        times, cpus = [], []
                        for _ in range(repeat):
                            t0, c0 = time.perf_counter(), time.process_time()
                            s = balance(inst["costs"], k, **kw)
                            times.append(time.perf_counter() - t0)
                            cpus.append(time.process_time() - c0)
                        t, c = statistics.median(times), statistics.median(cpus)
                        worst = max(worst, t)
                        worst_cpu = max(worst_cpu, c)
                        print(f"{mode:7} {'hetero' if het else 'equal':7} {'yes' if ae else 'no':6} "
                              f"{'cap' if mem else '-':7} {t:9.3f} {t / TARGET_S:8.2f} {c:8.3f}  "
                              f"{s.bottleneck:12.6g} {s.latency:12.6g}")
    print(f"\nslowest variant: {worst:.3f} s wall = {worst / TARGET_S:.2f} x the {TARGET_S:.0f} s target "
          f"({worst_cpu:.3f} s of CPU time; wall exceeds CPU when other processes share the cores)")


# -- 2. heuristics (re-implemented from their published algorithms) ----------------------------------

def ds_partition_uniform(n, parts):
    """DeepSpeed partition_uniform (runtime/utils.py): equal layer counts, remainder last."""
    if n <= parts:
        return [min(p, n) for p in range(parts + 1)]
    chunk = n // parts
    bounds = [min(chunk * p, n) for p in range(parts)]
    return bounds + [n]


def _ds_lprobe(prefix, parts, limit):
    """DeepSpeed _lprobe: fill each part up to prefix target (bisect on the inclusive prefix)."""
    n = len(prefix)
    bounds = [0] + [n] * parts
    target = limit
    chunk = n // parts
    step = chunk
    for p in range(1, parts):
        while step < n and prefix[step] < target:
            step += chunk
        bounds[p] = bisect.bisect_left(prefix, target, lo=step - chunk, hi=min(step, n))
        if bounds[p] == n:
            return bounds, prefix[-1] - prefix[bounds[p - 1]] < limit
        target = prefix[bounds[p] - 1] + limit
    return bounds, target >= prefix[-1]


def ds_partition_balanced(weights, parts, eps=1e-3):
    """DeepSpeed partition_balanced, binary-search version (_rb_partition_balanced + _lprobe)."""
    n = len(weights)
    if n <= parts:
        return ds_partition_uniform(n, parts)
    prefix = list(np.cumsum(np.asarray(weights, dtype=float)))
    lower, upper = prefix[-1] / parts, prefix[-1]
    while upper > lower + eps:
        mid = lower + (upper - lower) / 2
        _, ok = _ds_lprobe(prefix, parts, mid)
        if ok:
            upper = mid
        else:
            lower = mid + eps
    bounds, ok = _ds_lprobe(prefix, parts, upper)
    assert ok
    return bounds


def gpipe_blockpartition(seq, parts):
    """torchgpipe blockpartition.solve (Barany et al.), returning boundaries."""
    n = len(seq)
    lo, hi = min(seq), max(seq) - min(seq)
    norm = [0.0] * n if hi == 0 else [(x - lo) / hi for x in seq]
    splits = [n // parts * (x + 1) for x in range(parts - 1)] + [n]

    def size(i):
        return sum(norm[(splits[i - 1] if i > 0 else 0): splits[i]])

    while True:
        max_size, p = max((size(i), i) for i in range(parts))
        while True:
            min_size, q = min((size(i), i) for i in range(parts))
            if max_size <= min_size + 1:
                return [0] + splits
            if p < q:
                h = q - 1
                splits[h] -= 1
            else:
                h = q + 1
                splits[q] += 1
            if p == h:
                break


def heuristics_table(instances: int):
    rng = np.random.default_rng(7)
    names = ["DeepSpeed uniform (layer count)", "DeepSpeed balanced by cost (eps 1e-3)",
             "DeepSpeed balanced by params", "torchgpipe balance_by_time (blockpartition)"]
    plain = {n: [] for n in names}
    full = {n: [] for n in names}
    t_opt = 0.0
    for _ in range(instances):
        m = int(rng.integers(20, 201))
        k = int(rng.integers(2, min(16, m) + 1))
        costs = rng.lognormal(0.0, 1.0, m) * 10
        params = np.maximum(1, (costs * rng.lognormal(0.0, 1.0, m) * 1000).astype(np.int64))
        links = rng.random(m - 1) * float(np.median(costs))
        speeds = rng.uniform(0.5, 2.0, k)
        splits = {
            names[0]: ds_partition_uniform(m, k),
            names[1]: ds_partition_balanced(costs, k),
            names[2]: ds_partition_balanced(params, k),
            names[3]: gpipe_blockpartition(list(costs), k),
        }
        t0 = time.perf_counter()
        opt_plain = balance(costs, k).bottleneck
        opt_full = balance(costs, k, speeds=speeds, link_costs=links).bottleneck
        t_opt += time.perf_counter() - t0
        ch_plain = Chain(costs, k)
        ch_full = Chain(costs, k, speeds=speeds, link_costs=links)
        for name, bounds in splits.items():
            plain[name].append(ch_plain.evaluate(bounds).bottleneck / opt_plain)
            full[name].append(ch_full.evaluate(bounds).bottleneck / opt_full)
    print(f"\n== heuristics vs the optimum: {instances} random chains (m in 20..200, k in 2..16, "
          f"lognormal costs) ==")
    print("ratio = heuristic bottleneck / optimal bottleneck (1.00 = optimal)")
    for label, table in (("equal boards, free links (the heuristics' own model)", plain),
                         ("heterogeneous speeds 0.5-2x, link costs up to the median layer cost (stage links)", full)):
        print(f"\n-- {label} --")
        print(f"{'heuristic':46} {'max':>7} {'mean':>7} {'p95':>7} {'optimal':>8}")
        for name in names:
            r = np.asarray(table[name])
            print(f"{name:46} {r.max():7.3f} {r.mean():7.3f} {np.percentile(r, 95):7.3f} "
                  f"{np.mean(r <= 1.0 + 1e-12) * 100:7.1f}%")
    print(f"\n(exact planner: {t_opt / instances * 1e3:.2f} ms per instance for both models together)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--instances", type=int, default=1000)
    args = ap.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"load average {load:.2f} at start")
    speed_table(args.repeat)
    heuristics_table(args.instances)


if __name__ == "__main__":
    main()
