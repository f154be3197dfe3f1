"""From a Plan and its Graph to the stages a runtime runs: each stage's sub-graph, its
backend, its precision, the formats of the values it receives, which values it passes on
(skip connections travel along the chain until their last reader), and its modeled time."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from conveyor.errors import PlanError
from conveyor.plan import Plan

#: Which backend runs a stage on each kind of device (no FPGA is attached: emulate it).
DEFAULT_BACKEND = {"fpga": "emulator", "cpu": "cpu", "gpu": "gpu"}


@dataclass(frozen=True)
class StageSpec:
    index: int
    device: str
    backend: str
    graph: Any                          # the stage's sub-graph (conveyor Graph)
    precision: Mapping | None           # the plan's precision config, restricted to the stage's nodes
    input_formats: Mapping[str, Any]    # tensor -> number format its producer gave it
    needs: tuple[str, ...]              # tensors this stage reads from the incoming bundle
    forwards: tuple[str, ...]           # tensors it passes on: its outputs and earlier values read later
    #: how the plan times the stage, as servers in series, each (interval s, latency s): the
    #: stage's compute (a dataflow stage's latency exceeds its interval: items overlap inside
    #: it), then its outgoing link when that is a pipeline stage of its own. Paced mode
    #: releases each result when this model says (`conveyor.runtime.worker.Pacer`).
    timing: tuple[tuple[float, float], ...] = ()
    device_kind: str = "cpu"            # fpga | cpu | gpu (the plan's; placement uses it)
    #: further devices the plan runs this stage on, each taking every n-th item (`timing` is
    #: then the effective timing of all n together; `replica_specs` gives each its own)
    replicas: tuple[str, ...] = ()
    #: the plan's per-layer parallelism (the `csim` backend writes it into the HLS code)
    parallelism: Mapping[str, int] = field(default_factory=dict)


def build_stages(plan: Plan, graph, backends: Mapping[str, str] | None = None) -> list[StageSpec]:
    """The runtime stages of `plan` for `graph` (which must be the graph the plan was made for)."""
    if plan.fingerprint != graph.fingerprint():
        raise PlanError(f"the plan was made for model '{plan.model}' (fingerprint {plan.fingerprint[:12]}); "
                        f"graph '{graph.name}' has fingerprint {graph.fingerprint()[:12]}")
    plan = plan.with_node_names(graph)  # a hand-written plan may name layers (fc1) instead of nodes
    plan.check_graph(graph)  # a hand-edited plan (stages swapped, a layer dropped) fails here, not in a worker
    from conveyor.graph.quantized import tensor_formats
    from conveyor.graph.names import resolve_config

    config = resolve_config(graph, plan.precision)  # its nodes: may name layers (fc1)
    formats = tensor_formats(graph, config)
    backends = dict(backends or {})
    order = [n.name for n in graph.nodes]
    position = {name: i for i, name in enumerate(order)}
    stage_of = {}
    for i, st in enumerate(plan.stages):
        for n in st.layers:
            stage_of[n] = i
    if set(stage_of) != set(order):
        missing = sorted(set(order) - set(stage_of))
        raise PlanError(f"plan for '{plan.model}' does not place nodes {missing[:5]}")
    last_reader: dict[str, int] = {}
    for n in graph.nodes:
        for t in n.inputs:
            if t and not graph.is_weight(t):
                last_reader[t] = max(last_reader.get(t, -1), stage_of[n.name])
    for t in graph.output_names:
        last_reader[t] = len(plan.stages)  # outputs travel to the end
    specs = []
    available = set(graph.input_names)
    for i, st in enumerate(plan.stages):
        nodes = sorted(st.layers, key=position.__getitem__)
        sub = graph.subgraph(nodes, name=f"{graph.name}[stage {i}]")
        produced = {o for n in nodes for o in graph.node(n).outputs if o}
        available |= produced
        forwards = tuple(sorted(t for t in available if last_reader.get(t, -1) > i))
        kind = st.device_kind
        backend = backends.get(st.device, DEFAULT_BACKEND.get(kind, "cpu"))
        specs.append(StageSpec(
            index=i, device=st.device, backend=backend, graph=sub,
            precision=config.restricted({n for n in nodes}, {graph.node(n).op_type for n in nodes}).to_dict()
            if backend in ("emulator", "csim") else None,
            input_formats={t.name: formats.get(t.name) for t in sub.inputs},
            needs=tuple(t.name for t in sub.inputs),
            forwards=forwards,
            timing=stage_timing(st),
            device_kind=kind,
            replicas=tuple(st.replicas),
            parallelism=dict(st.parallelism),
        ))
        available = set(forwards)
    return specs


def stage_timing(st) -> tuple[tuple[float, float], ...]:
    """The servers (interval s, latency s) a plan stage is timed as: its compute, holding the
    outgoing link's time when the link is merged into the stage, then the link when it is a
    pipeline stage of its own. Their latencies add up to the plan's latency."""
    link = st.link_out
    merged = link.seconds if link is not None and link.mode != "stage" else 0.0
    servers = [(float(st.stage_time_s), float(max(st.latency_s, 0.0)) + merged)]
    if link is not None and link.mode == "stage":
        servers.append((float(link.seconds), float(link.seconds)))
    return tuple(servers)


def replica_specs(spec: StageSpec) -> list[StageSpec]:
    """One spec per device running `spec`'s stage: itself when the stage is not replicated;
    else one per device, each timed as one of n replicas (each takes every n-th item, so its
    compute interval is n times the stage's effective one; its latency is unchanged)."""
    n = 1 + len(spec.replicas)
    if n == 1:
        return [spec]
    timing = spec.timing
    if timing:
        (interval, latency), *rest = timing
        timing = ((interval * n, latency), *rest)
    return [replace(spec, device=device, timing=timing, replicas=())
            for device in (spec.device,) + tuple(spec.replicas)]


def route(request_id: int, n: int) -> int:
    """Which of a stage's n replicas takes a request: every n-th request, by id — the same
    choice at every producer, so a replayed request takes the same path."""
    return request_id % n
