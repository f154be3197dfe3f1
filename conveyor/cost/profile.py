"""Measured per-layer times on this machine: `conveyor profile MODEL`.

The graph is exported to ONNX and run by onnxruntime with its profiler on and graph
optimizations off (so that every node keeps its name and runs alone); each layer's
time is the median over the runs of its kernel time. The planner can use a profile
in place of the roofline for the CPU device it was measured on.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np

from conveyor.errors import PlanError

PROFILE_VERSION = 1


@dataclass(frozen=True)
class Profile:
    model: str
    fingerprint: str
    machine: str
    runs: int
    threads: int
    layer_seconds: Mapping[str, float] = field(default_factory=dict)
    version: int = PROFILE_VERSION

    @property
    def total_seconds(self) -> float:
        return sum(self.layer_seconds.values())

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(asdict(self), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        from conveyor.fileio import read_document

        path, data = read_document(path, "profile", PlanError)
        if not isinstance(data, dict) or data.get("version") != PROFILE_VERSION:
            raise PlanError(f"{path}: not a conveyor profile of version {PROFILE_VERSION} (run `conveyor profile` again)")
        missing = {"model", "fingerprint", "machine", "runs", "threads", "layer_seconds"} - set(data)
        if missing:
            raise PlanError(f"{path}: profile lacks fields {sorted(missing)}")
        return cls(**data)


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()} ({cpu}, {os.cpu_count()} cores)"


def profile_graph(graph, runs: int = 20, warmup: int = 3, threads: int = 1, seed: int = 0) -> Profile:
    """Time each layer of `graph` with onnxruntime on this machine (median of `runs`)."""
    import onnxruntime as ort

    from conveyor.frontends.export import to_onnx

    model = to_onnx(graph)
    rng = np.random.default_rng(seed)
    feeds = {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in graph.inputs}
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        for _ in range(warmup):
            ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "conveyor")
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            sess.run(None, feeds)
        trace_path = sess.end_profiling()
        with open(trace_path) as f:
            events = json.load(f)
    per_node: dict[str, list[float]] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per_node.setdefault(ev["name"][: -len("_kernel_time")], []).append(ev["dur"] * 1e-6)
    layer_seconds = {}
    for node in graph.nodes:
        samples = per_node.get(node.name, [])[warmup:]
        if node.op_type == "Dense":  # exported as MatMul (same name) + Add (name__bias)
            bias = per_node.get(f"{node.name}__bias", [])[warmup:]
            samples = [a + b for a, b in zip(samples, bias)]
        layer_seconds[node.name] = statistics.median(samples) if samples else 0.0
    return Profile(graph.name, graph.fingerprint(), machine_name(), runs, threads, layer_seconds)
