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
        start = recurrence.start_times(path, times, fifo_depth)
        arrive = _Arrivals(path, times, start)
        used = "recurrence"
    else:
        if engine == "recurrence":
            raise ConveyorError("the recurrence covers open-loop arrivals only; use engine='events' for closed=N")
        from conveyor.sim import events  # simpy: the `sim` extra

        arrive, start, _ = events.run(path, times, closed, requests, fifo_depth)
        used = "events"
    return _result(plan, path, arrive, start, used, fifo_depth)


class _Arrivals:
    """arrive[j] for the recurrence's result, computed row by row from the start times
    (start at j-1 + its latency: the sum the recurrence used), never all held at once."""

    def __init__(self, path, arrivals, start):
        self.path, self.arrivals, self.start = path, arrivals, start
        self._buf = np.empty(arrivals.size)

    def __getitem__(self, j: int) -> np.ndarray:
        return recurrence.arrive_row(self.path, self.arrivals, self.start, j, out=self._buf)


def _result(plan: Plan, path: tuple[Server, ...], arrive, start: np.ndarray, engine: str,
            fifo_depth) -> SimResult:
    from conveyor.sim.energy import power_model

    first_arrival = arrive[0]
    first = float(first_arrival.min())
    done = start[-1] + path[-1].latency_s
    latency = done - first_arrival
    last = float(done.max())
    span = last - first
    n = done.size
    out_span = float(done.max() - done.min())
    throughput = (n - 1) / out_span if n > 1 and out_span > 0 else 0.0
    grid = np.linspace(first, last, QUEUE_SAMPLES)
    tol = 1e-9 * max(1.0, abs(last))  # the running-max scan rounds at ~1e-16 x the clock
    rows, depths = [], []
    own, diff = np.empty(n), np.empty(n)
    mask = np.empty(n, dtype=bool)
    for j, s in enumerate(path):
        a, st = arrive[j], start[j]
        # when the replica alone would have let item k start: its previous item + interval
        r = min(s.replicas, n)
        own[:r] = -np.inf
        np.add(st[:n - r], s.interval_s, out=own[r:])
        np.maximum(a, own, out=own)
        # arrivals and starts are in item order at every server (module recurrence), so sorted
        q = np.searchsorted(a, grid, side="right") - np.searchsorted(st, grid, side="right")
        depths.append(tuple(int(x) for x in q))
        rows.append(StageResult(
            name=s.name, stage=s.stage, kind=s.kind, replicas=s.replicas, interval_s=s.interval_s,
            latency_s=s.latency_s,
            utilisation=float(min(1.0, n * s.interval_s / (s.replicas * span))) if span > 0 else 0.0,
            wait_s=_sum_above(np.subtract(st, a, out=diff), tol, mask),
            stall_s=_sum_above(np.subtract(st, own, out=diff), tol, mask),
            queue_max=int(q.max()), queue_mean=float(q.mean())))
    power = power_model(plan, rows)
    avg = sum(power.values()) if power else None
    energy = avg * span / n if avg is not None and n else None
    p50, p99, p999 = (float(x) for x in np.percentile(latency, [50, 99, 99.9]))
    return SimResult(
        requests=n, span_s=span, throughput_per_s=throughput,
        latency_p50_s=p50, latency_p99_s=p99, latency_p999_s=p999, latency_mean_s=float(latency.mean()),
        energy_per_inference_j=energy, inferences_per_j=(1.0 / energy) if energy else None,
        average_power_w=avg, power_w=power, stages=tuple(rows),
        queue_times_s=tuple(float(t) for t in grid), queue_depths=tuple(depths), engine=engine,
        notes=("modeled: times from the plan's cost model, power from conveyor/hardware/power.yaml",)
        + ((f"FIFOs of depth {fifo_depth}",) if fifo_depth else ("unbounded FIFOs (as the runtime's queues)",))
        + _assumed_note(plan),
    )


def _assumed_note(plan: Plan) -> tuple[str, ...]:
    from conveyor.sim.energy import assumed_figures

    used = assumed_figures(plan)
    return (f"assumed power figures (no published source; docs/simulate.md): {', '.join(used)}",) if used else ()


def _sum_above(x: np.ndarray, tol: float, mask: np.ndarray | None = None) -> float:
    mask = np.greater(x, tol, out=mask)
    return float(np.sum(x[mask]))
