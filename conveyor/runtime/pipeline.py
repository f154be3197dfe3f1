"""`conveyor.Pipeline`: run a Plan on long-lived stages, many requests in flight.

    with conveyor.Pipeline(plan, graph, executor="local") as p:
        fut = p.submit(x)                 # concurrent.futures.Future -> {output name: array}
        for y in p.map(xs): ...           # results in order
        p.stats()

Executors (`local`: one OS process per stage over shared-memory channels; `ray`: one Ray
actor per stage) implement the small `Executor` protocol below; the Pipeline validates
requests, keeps the futures, and measures.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

import numpy as np

from conveyor.errors import ModelError, RuntimeFault
from conveyor.plan import Plan
from conveyor.runtime.metrics import Metrics
from conveyor.runtime.stages import StageSpec, build_stages

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """What an executor provides. `start` brings every stage up (weights loaded) and
    arranges for `deliver(request_id, bundle_or_exception)` to be called exactly once per
    submitted request, from any thread; `send` never blocks for long (back-pressure is
    the Pipeline's `max_in_flight`)."""

    def start(self, specs: list[StageSpec], deliver: Callable[[int, Any], None], paced: bool) -> None: ...
    def send(self, request_id: int, bundle: dict[str, np.ndarray]) -> None: ...
    def stage_stats(self) -> list[dict]: ...
    def close(self) -> None: ...


def make_executor(name: str, **options) -> Executor:
    if name == "local":
        from conveyor.runtime.local import LocalExecutor

        return LocalExecutor(**options)
    if name == "ray":
        from conveyor.runtime.ray_executor import RayExecutor

        return RayExecutor(**options)
    raise RuntimeFault(f"executor '{name}'; accepted: {', '.join(EXECUTORS)}")


class Pipeline:
    def __init__(self, plan: Plan, graph, executor: str = "local", *, paced: bool = False,
                 backends: Mapping[str, str] | None = None, max_in_flight: int | None = None,
                 **executor_options):
        self.plan = plan
        self.graph = graph
        self.specs = build_stages(plan, graph, backends)
        self.paced = paced
        self.max_in_flight = max_in_flight or max(4, 2 * len(self.specs))
        self.metrics = Metrics()
        self._ids = itertools.count()
        self._pending: dict[int, tuple[Future, float]] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.max_in_flight)
        self._closed = False
        self._outputs = graph.output_names
        self._executor = make_executor(executor, **executor_options)
        self.executor_name = executor
        self._executor.start(self.specs, self._deliver, paced)

    # ---- context ---------------------------------------------------------------------
    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.close()
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(RuntimeFault("the pipeline was closed before this request completed"))

    # ---- requests --------------------------------------------------------------------
    def submit(self, x) -> Future:
        """Queue one request (an array for a single-input model, or a dict by input name)."""
        if self._closed:
            raise RuntimeFault("the pipeline is closed")
        fut: Future = Future()
        try:
            bundle = self._bundle(x)
        except ModelError as e:
            self.metrics.record(0.0, ok=False)
            fut.set_exception(e)  # a bad request fails alone
            return fut
        self._slots.acquire()
        rid = next(self._ids)
        with self._lock:
            self._pending[rid] = (fut, time.perf_counter())
        try:
            self._executor.send(rid, bundle)
        except Exception as e:
            self._deliver(rid, e if isinstance(e, RuntimeFault) else RuntimeFault(f"send failed: {e}"))
        return fut

    def map(self, inputs: Iterable) -> Iterator[dict[str, np.ndarray]]:
        """Results in input order; keeps up to `max_in_flight` requests in the pipeline."""
        window: deque[Future] = deque()
        for x in inputs:
            window.append(self.submit(x))
            while len(window) >= self.max_in_flight:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def __call__(self, x) -> dict[str, np.ndarray]:
        return self.submit(x).result()

    def stats(self) -> dict:
        out = self.metrics.summary()
        out["executor"] = self.executor_name
        out["paced"] = self.paced
        out["in_flight"] = len(self._pending)
        out["stages"] = self._executor.stage_stats()
        out["predicted_interval_s"] = self.plan.interval_s
        out["predicted_latency_s"] = self.plan.latency_s
        return out

    # ---- internals -------------------------------------------------------------------
    def _bundle(self, x) -> dict[str, np.ndarray]:
        if not isinstance(x, Mapping):
            if len(self.graph.inputs) != 1:
                raise ModelError(f"model '{self.graph.name}' has inputs {list(self.graph.input_names)}; pass a dict")
            x = {self.graph.input_names[0]: x}
        bundle = {}
        for t in self.graph.inputs:
            if t.name not in x:
                raise ModelError(f"request lacks input '{t.name}' (expected {t.dtype}[{'x'.join(map(str, t.shape))}])")
            a = np.asarray(x[t.name])
            if tuple(a.shape) != t.shape or a.dtype != t.dtype:
                raise ModelError(f"input '{t.name}': expected {t.dtype}{list(t.shape)}, got {a.dtype}{list(a.shape)}")
            bundle[t.name] = np.ascontiguousarray(a)
        extra = set(x) - set(self.graph.input_names)
        if extra:
            raise ModelError(f"request has unknown inputs {sorted(extra)}; model inputs: {list(self.graph.input_names)}")
        return bundle

    def _deliver(self, rid: int, result) -> None:
        with self._lock:
            entry = self._pending.pop(rid, None)
        if entry is None:
            return  # already delivered (a replay after a restart): exactly once
        fut, t0 = entry
        self._slots.release()
        if isinstance(result, BaseException):
            self.metrics.record(time.perf_counter() - t0, ok=False)
            fut.set_exception(result)
        else:
            self.metrics.record(time.perf_counter() - t0)
            fut.set_result({name: result[name] for name in self._outputs})
