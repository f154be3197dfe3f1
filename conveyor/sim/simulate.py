"""`simulate(plan, ...)`: a plan under load, as the paced runtime runs it (docs/simulate.md)."""

from __future__ import annotations

import numpy as np

from conveyor.errors import ConveyorError
from conveyor.plan import Plan
from conveyor.sim import recurrence
from conveyor.sim.arrivals import arrival_times
from conveyor.sim.model import Server, servers
from conveyor.sim.result import SimResult, StageResult

QUEUE_SAMPLES = 200


def simulate(plan: Plan, rate: float | None = None, closed: int | None = None, requests: int = 10_000,
             arrivals="constant", seed: int | None = None, fifo_depth: int | None = None,
             ingress_s: float = 0.0, egress_s: float = 0.0, engine: str = "auto") -> SimResult:
    """Simulate `plan` with requests arriving open loop (`rate` requests/s, `arrivals`
    "constant" | "poisson" | an array or CSV file of times) or closed loop (`closed` requests
    in flight, each completion admitting the next). `fifo_depth`: items a stage may have
    inside it and in the FIFO after it before it stalls (None: unbounded, as the runtime's
    queues). `engine`: "recurrence" (vectorised, open loop), "events" (simpy), "auto"."""
    if rate is not None and closed is not None:
        raise ConveyorError("say how requests arrive: a rate (requests/s) or closed=N in flight, not both")
    if closed is not None and closed < 1:
        raise ConveyorError(f"closed must be >= 1 requests in flight, got {closed}")
    if fifo_depth is not None and fifo_depth < 1:
        raise ConveyorError(f"fifo_depth must be >= 1 items, got {fifo_depth}")
    if engine not in ("auto", "recurrence", "events"):
        raise ConveyorError(f"engine {engine!r}: expected auto, recurrence or events")
    path = servers(plan, ingress_s, egress_s)
    times = None if closed is not None else arrival_times(arrivals, rate, requests, seed)
    if closed is None and engine != "events":
        arrive, start = recurrence.starts(path, times, fifo_depth)
        used = "recurrence"
    else:
        if engine == "recurrence":
            raise ConveyorError("the recurrence covers open-loop arrivals only; use engine='events' for closed=N")
        from conveyor.sim import events  # simpy: the `sim` extra

        arrive, start, _ = events.run(path, times, closed, requests, fifo_depth)
        used = "events"
    return _result(plan, path, arrive, start, used, fifo_depth)


def _result(plan: Plan, path: tuple[Server, ...], arrive: np.ndarray, start: np.ndarray, engine: str,
            fifo_depth) -> SimResult:
    from conveyor.sim.energy import power_model

    done = start[-1] + path[-1].latency_s
    latency = done - arrive[0]
    first, last = float(arrive[0].min()), float(done.max())
    span = last - first
    n = done.size
    out_span = float(done.max() - done.min())
    throughput = (n - 1) / out_span if n > 1 and out_span > 0 else 0.0
    grid = np.linspace(first, last, QUEUE_SAMPLES)
    tol = 1e-9 * max(1.0, abs(last))  # the running-max scan rounds at ~1e-16 x the clock
    rows, depths = [], []
    for j, s in enumerate(path):
        a, st = arrive[j], start[j]
        own = np.empty_like(st)  # when the replica alone would have let item k start
        for r in range(s.replicas):
            prev = st[r::s.replicas]
            free = np.concatenate(([-np.inf], prev[:-1] + s.interval_s))
            own[r::s.replicas] = np.maximum(a[r::s.replicas], free)
        # arrivals and starts are in item order at every server (module recurrence), so sorted
        q = np.searchsorted(a, grid, side="right") - np.searchsorted(st, grid, side="right")
        depths.append(tuple(int(x) for x in q))
        rows.append(StageResult(
            name=s.name, stage=s.stage, kind=s.kind, replicas=s.replicas, interval_s=s.interval_s,
            latency_s=s.latency_s,
            utilisation=float(min(1.0, n * s.interval_s / (s.replicas * span))) if span > 0 else 0.0,
            wait_s=_sum_above(st - a, tol), stall_s=_sum_above(st - own, tol),
            queue_max=int(q.max()), queue_mean=float(q.mean())))
    power = power_model(plan, rows)
    avg = sum(power.values()) if power else None
    energy = avg * span / n if avg is not None and n else None
    return SimResult(
        requests=n, span_s=span, throughput_per_s=throughput,
        latency_p50_s=float(np.percentile(latency, 50)), latency_p99_s=float(np.percentile(latency, 99)),
        latency_p999_s=float(np.percentile(latency, 99.9)), latency_mean_s=float(latency.mean()),
        energy_per_inference_j=energy, inferences_per_j=(1.0 / energy) if energy else None,
        average_power_w=avg, power_w=power, stages=tuple(rows),
        queue_times_s=tuple(float(t) for t in grid), queue_depths=tuple(depths), engine=engine,
        notes=("modeled: times from the plan's cost model, power from conveyor/hardware/power.yaml",)
        + ((f"FIFOs of depth {fifo_depth}",) if fifo_depth else ("unbounded FIFOs (as the runtime's queues)",)),
    )


def _sum_above(x: np.ndarray, tol: float) -> float:
    return float(np.sum(x[x > tol]))
