"""Simulator speed: 1,000,000 requests through a 16-stage plan (target: under 2 s), with the
vectorised recurrence, unbounded and with FIFOs of depth 64; and the simpy event engine on
a smaller run for the ratio between the two. Prints times and ratios to the target.

    PYTHONPATH=$PWD python benchmarks/simulate.py
"""

from __future__ import annotations

import dataclasses
import time

from conveyor.plan import LinkPlan, Plan, StagePlan
from conveyor.sim import simulate

TARGET_S = 2.0
N = 1_000_000


def sixteen_stages() -> Plan:
    stages = []
    for i in range(16):  # uneven stages, every other link its own pipeline stage, one replicated stage
        t = 1e-3 * (0.5 + 0.4 * ((i * 7) % 5) / 4)
        link = None if i == 15 else LinkPlan(f"d{i}", f"d{i + 1}", "srio-10g", ("x",), 100_000, 9e-5,
                                             "stage" if i % 2 else "merged")
        stages.append(StagePlan(device=f"d{i}", device_kind="fpga", arch="dataflow", layers=(f"l{i}",),
                                stage_time_s=t, latency_s=3 * t, link_out=link,
                                replicas=("r",) if i == 5 else ()))
    return Plan(model="bench", fingerprint="-", cluster={}, precision={}, objective="throughput",
                stages=tuple(stages), interval_s=max(s.stage_time_s for s in stages), latency_s=0.0)


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def main() -> None:
    plan = sixteen_stages()
    rate = 0.95 / plan.interval_s
    for label, kw in (("recurrence, unbounded FIFOs", {}), ("recurrence, FIFO depth 64", {"fifo_depth": 64})):
        s, r = timed(lambda: simulate(plan, rate=rate, requests=N, arrivals="poisson", seed=0, **kw))
        print(f"{label:<32} {N:,} requests x {len(r.stages)} servers: {s:.2f} s "
              f"(target {TARGET_S} s; target/time = {TARGET_S / s:.2f}, >= 1 meets it)   p99 {r.latency_p99_s * 1e3:.2f} ms")
    n_ev = 20_000
    s_ev, _ = timed(lambda: simulate(plan, rate=rate, requests=n_ev, arrivals="poisson", seed=0, engine="events"))
    s_rc, _ = timed(lambda: simulate(plan, rate=rate, requests=n_ev, arrivals="poisson", seed=0))
    print(f"events (simpy) vs recurrence on {n_ev:,} requests: {s_ev:.2f} s vs {s_rc:.3f} s "
          f"({s_ev / s_rc:.0f}x); events at 1M would take ~{s_ev * N / n_ev:.0f} s")


if __name__ == "__main__":
    main()
