"""Simulator speed: 1,000,000 requests through a 16-stage plan (target: under 2 s), with the
vectorised recurrence, unbounded and with FIFOs of depth 64; and the simpy event engine on
a smaller run for the ratio between the two. Prints times and ratios to the target: the
best of REPEATS runs, wall clock and this process's CPU time (the development machine is
shared, so wall time carries other jobs' load; CPU time mostly does not).

    PYTHONPATH=$PWD python benchmarks/simulate.py
"""

from __future__ import annotations

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


REPEATS = 3


def timed(fn, repeats: int = 1):
    """(best wall s, best CPU s, result) over `repeats` runs."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        r = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu), r


def main() -> None:
    plan = sixteen_stages()
    rate = 0.95 / plan.interval_s
    cases = (("unbounded FIFOs, 95% load", rate, {}),
             ("FIFO depth 64, 95% load", rate, {"fifo_depth": 64}),
             ("FIFO depth 64, 105% load", 1.05 / plan.interval_s, {"fifo_depth": 64}))  # FIFOs fill: stalls
    for label, r_in, kw in cases:
        s, c, r = timed(lambda: simulate(plan, rate=r_in, requests=N, arrivals="poisson", seed=0, **kw), REPEATS)
        stall = sum(st.stall_s for st in r.stages)
        print(f"{label:<26} {N:,} requests x {len(r.stages)} servers: {s:.2f} s wall, {c:.2f} s CPU "
              f"(target {TARGET_S} s; target/time = {TARGET_S / s:.2f} wall, {TARGET_S / c:.2f} CPU; >= 1 meets it)"
              f"   p99 {r.latency_p99_s * 1e3:.2f} ms, back-pressure stall {stall:.3g} s")
    n_ev = 20_000
    s_ev, _, _ = timed(lambda: simulate(plan, rate=rate, requests=n_ev, arrivals="poisson", seed=0, engine="events"))
    s_rc, _, _ = timed(lambda: simulate(plan, rate=rate, requests=n_ev, arrivals="poisson", seed=0), REPEATS)
    print(f"events (simpy) vs recurrence on {n_ev:,} requests: {s_ev:.2f} s vs {s_rc:.3f} s "
          f"({s_ev / s_rc:.0f}x); events at 1M would take ~{s_ev * N / n_ev:.0f} s")


if __name__ == "__main__":
    main()
