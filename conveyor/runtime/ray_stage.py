"""The Ray actor behind one pipeline stage: a `StageWorker` (weights resident) that takes
`(request id, bundle)` items and returns `(request id, bundle or _Failed)`.

Kept apart from `ray_executor` so that worker processes unpickle a small module; it does
not import ray at module level (the executor wraps the class with `ray.remote`).
"""

from __future__ import annotations

import os
import time

import numpy as np

from conveyor.runtime.stages import StageSpec
from conveyor.runtime.worker import StageWorker


class _Failed:
    """A request that failed in some stage: later stages pass it on untouched, the
    executor delivers it as a RuntimeFault. (Not an exception: the request failing must
    not look like a task failure to Ray, which would retry it or tear the graph down.)"""

    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message

    def __reduce__(self):
        return _Failed, (self.message,)


class StageActor:
    """One stage, resident on the node that holds its device."""

    def __init__(self, spec: StageSpec, paced: bool, copy_inputs: bool = True, time_scale: float = 1.0):
        import ray

        self.spec = spec
        self.copy_inputs = copy_inputs
        self.worker = StageWorker(spec, paced, time_scale)
        self.pid = os.getpid()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.started = time.time()

    def ready(self) -> dict:
        return {"pid": self.pid, "node_id": self.node_id}

    def stats(self) -> dict:
        w = self.worker
        return {"items": w.items, "busy_s": w.busy_s, "overruns": w.overruns, "pid": self.pid,
                "node_id": self.node_id}

    # compiled-graph path: one argument, the (rid, payload) item
    def process(self, item):
        rid, payload = item
        return rid, self._step(payload)

    # plain-call path: Ray resolves `payload` (an ObjectRef of the previous stage's result)
    def call(self, rid: int, item):
        _, payload = item
        return rid, self._step(payload)

    def _step(self, payload):
        if isinstance(payload, _Failed):
            return payload
        try:
            if self.copy_inputs:
                # a compiled-graph channel hands us zero-copy views of its buffer; copy them
                # so no reference outlives this call (a held buffer stalls the channel)
                payload = {k: np.array(v, copy=True) for k, v in payload.items()}
            return self.worker.process(payload)
        except Exception as e:  # this request fails alone
            return _Failed(f"stage {self.spec.index} on '{self.spec.device}' ({self.spec.backend}): "
                           f"{type(e).__name__}: {e}")


class EchoActor:
    """A stage that does nothing but pass its bundle on: what `measure_hop_overhead` times."""

    def __init__(self, copy_inputs: bool = True):
        self.copy_inputs = copy_inputs

    def ready(self) -> bool:
        return True

    def process(self, item):
        rid, payload = item
        if self.copy_inputs:
            payload = {k: np.array(v, copy=True) for k, v in payload.items()}
        return rid, payload

    def call(self, rid: int, item):
        return self.process(item)
