"""The Plan: the central artifact. Everything after planning reads only a Plan (and the
Graph it names by fingerprint).

A Plan records which device runs which layers, each layer's parallelism, every link
between stages and how it enters the pipeline, the resources each board uses and has,
and the predicted interval, latency and power — all *modeled* (docs/cost-model.md).
It is saved as versioned JSON; `Plan.load` checks the version and the fields.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from conveyor.errors import PlanError

PLAN_VERSION = 1


@dataclass(frozen=True)
class LinkPlan:
    """Data crossing from one stage to the next."""

    src: str                 # device names
    dst: str
    link: str                # catalog link name
    tensors: tuple[str, ...]  # tensor names crossing the cut (skip connections included)
    bytes: int
    seconds: float           # one item: hop latency + bytes / bandwidth
    mode: str                # "stage": its own pipeline stage (double-buffered); "merged": inside the sender's stage
    buffer_bram18k: int = 0  # the double buffer a "stage" link needs on the sending board


@dataclass(frozen=True)
class StagePlan:
    device: str
    device_kind: str          # fpga | cpu | gpu
    arch: str                 # dataflow | overlay | host
    layers: tuple[str, ...]   # node names, in topological order
    parallelism: Mapping[str, int] = field(default_factory=dict)
    layer_interval_s: Mapping[str, float] = field(default_factory=dict)
    compute_interval_s: float = 0.0   # the stage's own interval (slowest layer engine / sum for overlay)
    stage_time_s: float = 0.0         # what the pipeline sees: compute (+ merged links)
    latency_s: float = 0.0
    resources: Mapping[str, int] = field(default_factory=dict)
    budget: Mapping[str, int] = field(default_factory=dict)
    power_w: float | None = None
    link_out: LinkPlan | None = None
    #: further devices running the same layers (each takes every n-th item, round robin);
    #: `stage_time_s` is then the stage's effective time, its compute time / replicas
    replicas: tuple[str, ...] = ()
    #: True: the stage is one layer split by output channel over device + replicas (each holds
    #: 1/n of its weights; resources are per device); False: replicas each run every n-th item
    split: bool = False
    #: per layer: where its weights live ("on_chip" pinned; "dram" | "hbm" streamed each item
    #: through double-buffered on-chip tiles) and the memory bandwidth that streaming takes
    weights_in: Mapping[str, str] = field(default_factory=dict)
    weight_bandwidth_Bps: Mapping[str, float] = field(default_factory=dict)
    #: per layer: where its activation buffer lives ("on_chip"; "dram" | "hbm": spilled, written
    #: and read back through on-chip staging tiles) and the memory bandwidth that traffic takes
    activations_in: Mapping[str, str] = field(default_factory=dict)
    activation_bandwidth_Bps: Mapping[str, float] = field(default_factory=dict)
    #: per layer whose figures are synthesis results (plan --measured): the report and module read
    measured: Mapping[str, str] = field(default_factory=dict)


#: the StagePlan maps keyed by layer: with_node_names renames every one of them
PER_LAYER_FIELDS = ("parallelism", "layer_interval_s", "weights_in", "weight_bandwidth_Bps",
                    "activations_in", "activation_bandwidth_Bps", "measured")


@dataclass(frozen=True)
class Plan:
    model: str
    fingerprint: str
    cluster: Mapping[str, Any]
    precision: Mapping[str, Any]
    objective: str
    stages: tuple[StagePlan, ...]
    interval_s: float          # predicted pipeline interval: the bottleneck stage (or link stage)
    latency_s: float           # predicted end-to-end latency of one item at batch 1
    method: str = "conveyor"   # which planner (or baseline) made it
    notes: tuple[str, ...] = ()
    version: int = PLAN_VERSION

    @property
    def throughput(self) -> float:
        """Items per second in steady state."""
        return 1.0 / self.interval_s if self.interval_s > 0 else float("inf")

    @property
    def power_w(self) -> float | None:
        known = [s.power_w for s in self.stages if s.power_w is not None]
        return sum(known) if known else None

    def bottleneck(self) -> str:
        """Name of the stage or link that sets the interval."""
        best, name = -1.0, ""
        for s in self.stages:
            if s.stage_time_s > best:
                best, name = s.stage_time_s, s.device
            if s.link_out is not None and s.link_out.mode == "stage" and s.link_out.seconds > best:
                best, name = s.link_out.seconds, f"link {s.link_out.src}->{s.link_out.dst}"
        return name

    # ---- files -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> "Plan":
        if not isinstance(data, dict):
            raise PlanError(f"{source}: a plan is a JSON object")
        if "version" not in data and isinstance(data.get("plan"), dict) and "baselines" in data:
            data = data["plan"]  # `conveyor plan --json` output: {plan, baselines}; the next command reads its plan
        if data.get("version") != PLAN_VERSION:
            raise PlanError(f"{source}: plan version {data.get('version')!r}; this conveyor reads version {PLAN_VERSION}")
        try:
            stages = tuple(_stage(s) for s in data["stages"])
            return cls(
                model=data["model"], fingerprint=data["fingerprint"], cluster=data["cluster"],
                precision=data["precision"], objective=data["objective"], stages=stages,
                interval_s=float(data["interval_s"]), latency_s=float(data["latency_s"]),
                method=data.get("method", "conveyor"), notes=tuple(data.get("notes", ())), version=PLAN_VERSION,
            )
        except KeyError as e:
            raise PlanError(f"{source}: plan lacks field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise PlanError(f"{source}: malformed plan ({e})") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        from conveyor.fileio import read_document

        path, data = read_document(path, "plan", PlanError)
        plan = cls.from_dict(data, source=path)
        validate(plan, source=str(path))
        return plan

    def check_graph(self, graph, source: str = "plan") -> None:
        """Raise PlanError unless the stages cover `graph`'s nodes once each, in an order
        the graph allows (a hand-edited plan with swapped stages would die in a worker).
        Stages may name layers by layer name (`fc1`) as well as node name."""
        validate_against_graph(self.with_node_names(graph), graph, source)

    def with_node_names(self, graph) -> "Plan":
        """This plan with every layer name (`fc1`, conveyor.graph.names) in its stages'
        `layers` and per-layer maps replaced by the node name it stands for; names that are
        neither stay as they are (validation then names them)."""
        from dataclasses import replace

        from conveyor.graph.names import resolve

        def node(name):
            return resolve(graph, name) or name

        stages = tuple(replace(
            st, layers=tuple(node(n) for n in st.layers),
            **{f: {node(k): v for k, v in getattr(st, f).items()}
               for f in PER_LAYER_FIELDS})
            for st in self.stages)
        return self if stages == self.stages else replace(self, stages=stages)


def _stage(d: Mapping[str, Any]) -> StagePlan:
    d = dict(d)
    link = d.pop("link_out", None)
    return StagePlan(
        **{**d, "layers": tuple(d["layers"]), "replicas": tuple(d.get("replicas", ()))},
        link_out=None if link is None else LinkPlan(**{**link, "tensors": tuple(link["tensors"])}),
    )


def validate(plan: Plan, source: str = "plan") -> None:
    """The checks a hand-edited plan must pass before anything runs it: each message names
    the stage and field at fault and what is accepted."""
    devices = plan.cluster.get("devices") if isinstance(plan.cluster, Mapping) else None
    known = {d.get("name") for d in devices if isinstance(d, Mapping)} if isinstance(devices, list) else None
    if not plan.stages:
        raise PlanError(f"{source}: stages is empty; a plan needs at least one stage")
    if not (plan.interval_s >= 0):
        raise PlanError(f"{source}: interval_s {plan.interval_s!r}; accepted: a time >= 0 s")
    if not (plan.latency_s >= 0):
        raise PlanError(f"{source}: latency_s {plan.latency_s!r}; accepted: a time >= 0 s")
    for i, s in enumerate(plan.stages):
        where = f"{source}: stages[{i}]"
        for dev in (s.device, *s.replicas):
            if known is not None and dev not in known:
                raise PlanError(f"{where}.device {dev!r} is not in the plan's cluster; accepted: {', '.join(sorted(known))}")
        if s.device_kind not in ("fpga", "cpu", "gpu"):
            raise PlanError(f"{where}.device_kind {s.device_kind!r}; accepted: fpga, cpu, gpu")
        if not s.layers:
            raise PlanError(f"{where}.layers is empty; a stage runs at least one layer")
        for name, p in s.parallelism.items():
            if not isinstance(p, int) or p < 1:
                raise PlanError(f"{where}.parallelism[{name!r}] {p!r}; accepted: an integer >= 1")
        for name, t in s.layer_interval_s.items():
            if not (isinstance(t, (int, float)) and t >= 0):
                raise PlanError(f"{where}.layer_interval_s[{name!r}] {t!r}; accepted: a time >= 0 s")
        for f in ("compute_interval_s", "stage_time_s", "latency_s"):
            v = getattr(s, f)
            if not (isinstance(v, (int, float)) and v >= 0):
                raise PlanError(f"{where}.{f} {v!r}; accepted: a time >= 0 s")


def validate_against_graph(plan: Plan, graph, source: str = "plan") -> None:
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    seen: dict[str, int] = {}
    for i, s in enumerate(plan.stages):
        for layer in s.layers:
            if layer not in order:
                raise PlanError(f"{source}: stages[{i}].layers names {layer!r}, which graph {graph.name} lacks")
            if layer in seen:
                raise PlanError(f"{source}: layer {layer!r} is in stages[{seen[layer]}] and stages[{i}]; each layer runs once")
            seen[layer] = i
    missing = [n for n in order if n not in seen]
    if missing:
        raise PlanError(f"{source}: no stage runs {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} of {graph.name}")
    producer = {t: n.name for n in graph.nodes for t in n.outputs if t}   # '': an omitted optional output
    for n in graph.nodes:
        for t in n.inputs:
            src = producer.get(t)
            if src is not None and seen[src] > seen[n.name]:
                raise PlanError(f"{source}: stages[{seen[n.name]}] runs {n.name!r} before stages[{seen[src]}] "
                                f"computes its input {t!r}; stages must follow the graph's order")
