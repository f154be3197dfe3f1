"""Benchmark of the distributed runtime (conveyor.runtime).  A script, not a test:

    python benchmarks/runtime.py [--executors local,ray] [--hop-requests 500] [--items 120]

1. Per-hop overhead of each executor, side by side, at 1 KB and 1 MB: one request at a time
   through 3 pass-through stages (4 hops: the driver's send and receive count), p50 and p99
   of the round trip divided by the hops.  local = one process per stage over shared-memory
   channels (`conveyor.runtime.local_bench`); ray compiled = Ray Compiled Graph channels,
   ray plain = chained actor calls (`ray_executor.measure_hop_overhead`), one Ray node.
2. The plan of record, AlexNet's conv layers on 4 Zynq-7035 boards over SRIO
   (docs/reports/alexnet-conv-zynq7035x4.plan.json), run paced on each executor: every
   emulated FPGA stage is timed as the plan models it (interval and latency,
   `conveyor.runtime.worker.Pacer`), computing the real bit-accurate emulation meanwhile.
   - throughput: --items requests streamed through (`Pipeline.map`), measured rate over the
     plan's predicted rate (target >= 0.95);
   - latency: --latency-items requests at batch 1, one at a time (what the plan's latency
     predicts), measured p50/p99 over the predicted latency.
   This machine emulates a stage 7-11x slower than the modeled board computes it, so the
   run is in slow motion: every modeled time is stretched by a time scale chosen from a
   calibration pass (each stage's emulation at most half its stretched interval, all stages
   together at most half the cores).  The ratios compare like with like (prediction
   stretched by the same factor); the runtime's own overhead is also printed in absolute
   milliseconds, which the stretch does not shrink.  When an executor's stages could not
   keep up with the stretched times ("overruns": Ray's compiled-graph stages each spin a
   core while they wait, which on 2 cores slows the emulation beside them), its run is
   repeated at a larger scale; every attempt is printed.

What is measured: wall time on this machine.  What is modeled: every board and link time
(the plan).  Nothing here runs on an FPGA.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

PLAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "reports",
                    "alexnet-conv-zynq7035x4.plan.json")
THROUGHPUT_TARGET = 0.95
from conveyor.runtime.calibrate import SCALES, calibrated_time_scale  # noqa: E402


# -- 1. per-hop overhead ---------------------------------------------------------------------------

def hop_rows(executors, sizes, requests: int, stages: int) -> list[dict]:
    from conveyor.runtime import local_bench

    rows = []
    if "local" in executors:
        for size in sizes:
            r = local_bench.measure(stages, size, requests, warmup=max(20, requests // 10))
            rows.append({"executor": "local", "bytes": size, "hops": r["hops"],
                         "p50": r["hop_p50_s"], "p99": r["hop_p99_s"]})
    if "ray" in executors:
        from conveyor.runtime.ray_executor import measure_hop_overhead

        for r in measure_hop_overhead(tuple(sizes), hops=stages, requests=requests, warmup=max(20, requests // 10)):
            rows.append({"executor": f"ray {r['mode']}", "bytes": r["payload_bytes"], "hops": r["hops"] + 1,
                         "p50": r["per_hop_p50_s"], "p99": r["per_hop_p99_s"]})
    return rows


def print_hops(rows, sizes) -> None:
    print("\n1. Per-hop overhead, one request at a time (ms per hop; ratio to local at the same size)")
    print(f"   {'executor':<14}" + "".join(f"{_size(s) + ' p50':>12}{_size(s) + ' p99':>12}{'x local':>9}" for s in sizes))
    base = {r["bytes"]: r for r in rows if r["executor"] == "local"}
    for name in dict.fromkeys(r["executor"] for r in rows):
        line = f"   {name:<14}"
        for s in sizes:
            r = next((r for r in rows if r["executor"] == name and r["bytes"] == s), None)
            if r is None:
                line += f"{'-':>12}{'-':>12}{'-':>9}"
                continue
            ratio = r["p50"] / base[s]["p50"] if s in base else float("nan")
            line += f"{r['p50'] * 1e3:>12.3f}{r['p99'] * 1e3:>12.3f}{ratio:>8.1f}x"
        print(line)


def _size(n: int) -> str:
    return f"{n >> 20} MB" if n >= 1 << 20 else f"{n >> 10} KB"


# -- 2. the paced plan -------------------------------------------------------------------------

def calibrate(plan, graph, x) -> tuple[list[float], float]:
    """Each stage's emulation time on this machine (median of 3, after one warm run), and the
    time scale that keeps pacing honest."""
    from conveyor.runtime.stages import build_stages
    from conveyor.runtime.worker import StageWorker

    bundle = {graph.input_names[0]: x}
    compute = []
    for spec in build_stages(plan, graph):
        w = StageWorker(spec)
        out = w.process(bundle)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = w.process(bundle)
            times.append(time.perf_counter() - t0)
        w.close()
        compute.append(statistics.median(times))
        bundle = out
    return compute, calibrated_time_scale(compute, plan)


def paced_run(plan, graph, x, executor: str, scale: float, items: int, latency_items: int) -> dict:
    from conveyor.runtime import Pipeline

    with Pipeline(plan, graph, executor=executor, paced=True, time_scale=scale) as p:
        list(p.map([x] * 8))  # warm: first calls load lazily, Ray compiles its graph
        p.reset_metrics()
        reference = None
        for out in p.map([x] * items):
            reference = out if reference is None else reference
        stream = p.stats()
        p.reset_metrics()
        for _ in range(latency_items):
            p(x)
        single = p.stats()
    exact = graph.run({graph.input_names[0]: x}, precision=plan.precision)
    bit_exact = all(np.array_equal(reference[k], exact[k]) for k in graph.output_names)
    return {"executor": executor, "scale": scale, "stream": stream, "single": single, "bit_exact": bit_exact,
            "overruns": sum(int(s.get("overruns") or 0) for s in stream["stages"])}


def paced_runs(plan, graph, x, executor: str, scale: float, items: int, latency_items: int,
               attempts: int = 3) -> list[dict]:
    """Paced runs at `scale`, then at larger scales while the stages overran the modeled times."""
    runs = []
    for _ in range(attempts):
        runs.append(paced_run(plan, graph, x, executor, scale, items, latency_items))
        if runs[-1]["overruns"] <= max(2, 0.02 * items * len(plan.stages)):
            break
        scale = next((s for s in SCALES if s >= 2.5 * scale), 2.5 * scale)
    return runs


def print_paced(plan, compute, scale, runs) -> None:
    print(f"\n2. Paced plan: {plan.model} on {len(plan.stages)} boards ({plan.method}), "
          f"modeled interval {plan.interval_s * 1e3:.3f} ms, latency {plan.latency_s * 1e3:.3f} ms")
    print("   emulation per stage on this machine vs modeled stage time: " + ", ".join(
        f"{c * 1e3:.1f}/{s.stage_time_s * 1e3:.3f} ms" for c, s in zip(compute, plan.stages)))
    print(f"   calibrated time scale {scale:g} (slow motion): predicted interval {plan.interval_s * scale * 1e3:.2f} ms "
          f"({1 / (plan.interval_s * scale):.2f}/s), latency {plan.latency_s * scale * 1e3:.2f} ms")
    print(f"   {'executor':<9}{'scale':>6}{'items':>6}{'measured/s':>11}{'predicted/s':>12}{'ratio':>7}{'target':>8}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'pred ms':>9}{'p50 ratio':>10}{'p99 ratio':>10}{'p99 over':>10}"
          f"{'overruns':>9}{'bit-exact':>10}")
    for r in runs:
        st, si = r["stream"], r["single"]
        pred_thr = 1 / st["predicted_interval_s"]
        thr = st["throughput_per_s"]
        pred_lat = si["predicted_latency_s"]
        ratio = thr / pred_thr
        print(f"   {r['executor']:<9}{r['scale']:>6g}{st['completed']:>6}{thr:>11.2f}{pred_thr:>12.2f}{ratio:>7.3f}"
              f"{'ok' if ratio >= THROUGHPUT_TARGET else 'MISSED':>8}"
              f"{si['latency_p50_s'] * 1e3:>9.2f}{si['latency_p99_s'] * 1e3:>9.2f}{pred_lat * 1e3:>9.2f}"
              f"{si['latency_p50_s'] / pred_lat:>10.3f}{si['latency_p99_s'] / pred_lat:>10.3f}"
              f"{(si['latency_p99_s'] - pred_lat) * 1e3:>8.2f}ms{r['overruns']:>9}{str(r['bit_exact']):>10}")
    print("   p99 over: the runtime's own overhead at batch 1 (measured p99 - predicted), absolute.")
    print("   overruns: paced items whose emulation took longer than the stretched interval (0: pacing held).")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--executors", default="local,ray", help="comma list of local, ray")
    ap.add_argument("--hop-requests", type=int, default=500)
    ap.add_argument("--hop-stages", type=int, default=3)
    ap.add_argument("--items", type=int, default=120, help="requests streamed through the paced plan")
    ap.add_argument("--latency-items", type=int, default=40, help="requests at batch 1 through the paced plan")
    ap.add_argument("--time-scale", type=float, default=None, help="override the calibrated time scale")
    args = ap.parse_args(argv)
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    unknown = set(executors) - {"local", "ray"}
    if unknown:
        ap.error(f"unknown executors {sorted(unknown)}; accepted: local, ray")

    if "ray" in executors:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray is not installed (pip install 'conveyor[ray]'): measuring the local executor only")
            executors.remove("ray")
    if not executors:
        return 1

    import conveyor
    from conveyor.plan import Plan

    print(f"runtime benchmark - {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    sizes = (1024, 1 << 20)
    print_hops(hop_rows(executors, sizes, args.hop_requests, args.hop_stages), sizes)

    plan = Plan.load(PLAN)
    graph = conveyor.zoo.build(plan.model)
    x = np.random.default_rng(0).standard_normal(graph.inputs[0].shape).astype(np.float32)
    compute, scale = calibrate(plan, graph, x)
    scale = args.time_scale or scale
    runs = [r for e in executors for r in paced_runs(plan, graph, x, e, scale, args.items, args.latency_items)]
    print_paced(plan, compute, scale, runs)
    last = {r["executor"]: r for r in runs}
    missed = [e for e, r in last.items()
              if r["stream"]["throughput_per_s"] * r["stream"]["predicted_interval_s"] < THROUGHPUT_TARGET]
    if missed:
        print(f"\nthroughput target {THROUGHPUT_TARGET} missed on: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
