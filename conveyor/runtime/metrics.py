"""Runtime metrics: per-request latency percentiles, throughput, per-stage busy time and
queue depth, kept by the Pipeline and its executor."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np


#: per-process counters that add up over a stage's replicas
SUMMED = ("items", "busy_s", "overruns", "queue_depth", "restarts")


def combine_replicas(rows: list[dict]) -> dict:
    """One plan stage's stats row from its processes' rows (one per replica): the first
    one's identity, the counters summed (None when one replica's is unknown), alive when
    all are; a replicated stage lists its replicas' rows under "replicas"."""
    stage = dict(rows[0])
    if len(rows) > 1:
        for f in SUMMED:
            if f in stage:
                values = [r.get(f) for r in rows]
                stage[f] = None if None in values else sum(values)
        stage["alive"] = all(r.get("alive") for r in rows)
        if "ready" in stage:
            stage["ready"] = all(r.get("ready") for r in rows)
        stage["replicas"] = rows
    return stage


@dataclass
class Metrics:
    started: float = field(default_factory=time.perf_counter)
    latencies_s: list[float] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    first_done: float | None = None
    last_done: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, latency_s: float, ok: bool = True) -> None:
        now = time.perf_counter()
        with self.lock:
            if ok:
                self.latencies_s.append(latency_s)
                self.completed += 1
            else:
                self.failed += 1
            self.first_done = self.first_done or now
            self.last_done = now

    def summary(self) -> dict:
        with self.lock:
            lat = np.asarray(self.latencies_s)
            # steady state: the rate at which results come out once the pipeline is full
            span = (self.last_done - self.first_done) if self.first_done is not None else 0.0
            return {
                "completed": self.completed,
                "failed": self.failed,
                "throughput_per_s": (self.completed - 1) / span if span > 0 and self.completed > 1 else 0.0,
                "latency_p50_s": float(np.percentile(lat, 50)) if lat.size else None,
                "latency_p99_s": float(np.percentile(lat, 99)) if lat.size else None,
                "latency_mean_s": float(lat.mean()) if lat.size else None,
            }
