"""Prometheus metrics of one server (its own registry: no global state): requests and
failures by reason, latency, in-flight, and the pipeline's per-stage counters read at scrape."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# batch-1 latencies of sub-ms to seconds (emulated stages are slow; real boards are fast)
BUCKETS_S = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServeMetrics:
    def __init__(self, model: str, pipeline_stats):
        """`pipeline_stats()`: the Pipeline's stats() or None while it loads."""
        self.registry = CollectorRegistry()
        self.requests = Counter("conveyor_requests", "Inference requests answered, by HTTP status",
                                ["model", "code"], registry=self.registry)
        self.failures = Counter("conveyor_request_failures", "Inference requests that failed, by reason",
                                ["model", "reason"], registry=self.registry)
        self.latency = Histogram("conveyor_request_latency_seconds", "Inference request latency (admitted to answered)",
                                 ["model"], buckets=BUCKETS_S, registry=self.registry)
        self.in_flight = Gauge("conveyor_requests_in_flight", "Inference requests admitted and not yet answered",
                               ["model"], registry=self.registry)
        self.model = model
        self._stats = pipeline_stats
        self._since = time.perf_counter()
        self.registry.register(self)

    def failed(self, reason: str) -> None:
        self.failures.labels(self.model, reason).inc()

    def collect(self):
        """Per-stage gauges straight from the pipeline (prometheus custom collector)."""
        stats = self._stats()
        busy = GaugeMetricFamily("conveyor_stage_busy_fraction", "Fraction of wall time the stage computed, "
                                 "since the server started", labels=["model", "stage", "device"])
        queue = GaugeMetricFamily("conveyor_stage_queue_depth", "Items waiting in the stage's input channels",
                                  labels=["model", "stage", "device"])
        restarts = CounterMetricFamily("conveyor_stage_restarts", "Times the stage's process was restarted",
                                       labels=["model", "stage", "device"])
        ready = GaugeMetricFamily("conveyor_stage_ready", "1 when the stage is loaded and serving",
                                  labels=["model", "stage", "device"])
        wall = max(time.perf_counter() - self._since, 1e-9)
        for s in (stats or {}).get("stages", []):
            labels = [self.model, str(s.get("index")), str(s.get("device"))]
            busy.add_metric(labels, (s.get("busy_s") or 0.0) / wall / max(1, len(s.get("replicas", [0]))))
            queue.add_metric(labels, s.get("queue_depth") or 0)
            restarts.add_metric(labels, s.get("restarts") or 0)
            ready.add_metric(labels, 1.0 if s.get("ready", s.get("alive")) else 0.0)
        return [busy, queue, restarts, ready]

    def describe(self):
        return []  # collected lazily: the pipeline may not exist yet

    def text(self) -> bytes:
        return generate_latest(self.registry)
