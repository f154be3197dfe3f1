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

import heapq
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
from conveyor.runtime.worker import FINAL_WAIT_S, RELEASE_KEY, fine_timer_slack, wait_until

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """What an executor provides. `start` brings every stage up (weights loaded) and
    arranges for `deliver(request_id, bundle_or_exception)` to be called exactly once per
    submitted request, from any thread; `send` never blocks for long (back-pressure is
    the Pipeline's `max_in_flight`); `send(..., block=False)` returns False at once where it
    would wait (the request is then not in flight). `paced`: each stage runs a
    `StageWorker(spec, paced, time_scale)`, and bundles carry their release time
    (`conveyor.runtime.worker`)."""

    def start(self, specs: list[StageSpec], deliver: Callable[[int, Any], None], paced: bool,
              time_scale: float = 1.0) -> None: ...
    def send(self, request_id: int, bundle: dict[str, np.ndarray], block: bool = True) -> bool: ...
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
    """Runs `plan` for `graph` (see the module docstring).

    `paced=True` times every emulated FPGA stage as the plan models it (conveyor.runtime.worker)
    so that measured throughput and latency can be held against the plan's prediction;
    `time_scale` stretches every modeled time (20: a slow-motion run, for when this machine
    emulates a stage slower than the modeled board computes it). Predictions in `stats()` are
    scaled alike."""

    def __init__(self, plan: Plan, graph, executor: str = "local", *, paced: bool = False,
                 time_scale: float = 1.0, backends: Mapping[str, str] | None = None,
                 max_in_flight: int | None = None, **executor_options):
        if not time_scale > 0:
            raise RuntimeFault(f"time_scale must be > 0, got {time_scale}")
        self.plan = plan
        self.graph = graph
        self.specs = build_stages(plan, graph, backends)
        self.paced = paced
        self.time_scale = float(time_scale)
        self.max_in_flight = max_in_flight or max(4, 2 * len(self.specs))
        self.metrics = Metrics()
        self._ids = itertools.count()
        self._pending: dict[int, tuple[Future, float]] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.max_in_flight)
        self._closed = False
        self._outputs = graph.output_names
        self._held: list[tuple[float, int, Any]] = []  # paced results waiting for their release time
        self._held_cond = threading.Condition(self._lock)
        self._releaser: threading.Thread | None = None
        if paced:
            self._releaser = threading.Thread(target=self._release_held, name="conveyor-pipeline-release", daemon=True)
            self._releaser.start()
        self.executor = make_executor(executor, **executor_options)
        self.executor_name = executor
        try:
            self.executor.start(self.specs, self._deliver, paced, self.time_scale)
        except BaseException:
            self._stop_releaser()
            raise

    # ---- context ---------------------------------------------------------------------
    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.executor.close()
        self._stop_releaser()
        with self._lock:
            pending, self._pending = self._pending, {}
            self._held = []
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(RuntimeFault("the pipeline was closed before this request completed"))

    # ---- requests --------------------------------------------------------------------
    def submit(self, x) -> Future:
        """Queue one request (an array for a single-input model, or a dict by input name);
        waits while `max_in_flight` requests are in the pipeline."""
        fut = self._submit(x, block=True)
        assert fut is not None
        return fut

    def try_submit(self, x) -> Future | None:
        """`submit` without waiting: None (nothing queued) where `submit` would wait for room
        in the pipeline. An event loop calls this on its own thread and hands only the
        requests that must wait to a thread (conveyor serve does)."""
        return self._submit(x, block=False)

    def _submit(self, x, block: bool) -> Future | None:
        if self._closed:
            raise RuntimeFault("the pipeline is closed")
        fut: Future = Future()
        try:
            bundle = self._bundle(x)
        except ModelError as e:
            self.metrics.record(0.0, ok=False)
            fut.set_exception(e)  # a bad request fails alone
            return fut
        if not self._slots.acquire(blocking=block):
            return None
        rid = next(self._ids)
        with self._lock:
            self._pending[rid] = (fut, time.perf_counter())
        try:
            sent = self.executor.send(rid, bundle, block=block)
        except Exception as e:
            self._deliver(rid, e if isinstance(e, RuntimeFault) else RuntimeFault(f"send failed: {e}"))
            return fut
        if sent is False:  # no room without waiting: not in flight, take it back
            with self._lock:
                self._pending.pop(rid, None)
            self._slots.release()
            return None
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

    def reset_metrics(self) -> None:
        """Start measuring afresh (e.g. after a warm-up); per-stage counters keep counting."""
        self.metrics = Metrics()

    def stats(self) -> dict:
        out = self.metrics.summary()
        out["executor"] = self.executor_name
        out["paced"] = self.paced
        out["in_flight"] = len(self._pending)
        out["time_scale"] = self.time_scale
        out["stages"] = self.executor.stage_stats()
        out["predicted_interval_s"] = self.plan.interval_s * self.time_scale
        out["predicted_latency_s"] = self.plan.latency_s * self.time_scale
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
        if self.paced:
            bundle[RELEASE_KEY] = np.array(time.time(), np.float64)  # it may start now
        return bundle

    def _deliver(self, rid: int, result) -> None:
        if self.paced and not isinstance(result, BaseException) and RELEASE_KEY in result:
            release = float(result[RELEASE_KEY])
            if release > time.time():
                with self._held_cond:  # the modeled pipeline has not released it yet
                    if rid in self._pending:
                        heapq.heappush(self._held, (release, rid, result))
                        self._held_cond.notify()
                return
        self._complete(rid, result)

    def _release_held(self) -> None:
        fine_timer_slack()  # its condition waits wake closer to the release times too
        while True:
            with self._held_cond:
                while not self._held and not self._closed:
                    self._held_cond.wait()
                if self._closed:
                    return
                release, rid, result = self._held[0]
                ahead = release - time.time()
                if ahead > FINAL_WAIT_S:  # an earlier one may arrive meanwhile: wait on the condition
                    self._held_cond.wait(ahead - FINAL_WAIT_S)
                    continue
                heapq.heappop(self._held)
            wait_until(release)  # the last FINAL_WAIT_S at most, the GIL released
            self._complete(rid, result)

    def _stop_releaser(self) -> None:
        if self._releaser is not None:
            with self._held_cond:
                self._closed = True
                self._held_cond.notify_all()
            self._releaser.join(5.0)

    def _complete(self, rid: int, result) -> None:
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
