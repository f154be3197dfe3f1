"""What a simulation returns: frozen, with units in the names; `to_dict` for --json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class StageResult:
    name: str
    stage: int                # plan stage index (-1: host ingress/egress)
    kind: str                 # compute | link | host
    replicas: int
    interval_s: float         # per replica
    latency_s: float
    utilisation: float        # share of the span its initiation slots were taken (all replicas)
    wait_s: float             # summed over items: arrival to start (queueing + back-pressure)
    stall_s: float            # summed over items: held back only by a full FIFO downstream
    queue_max: int            # most items waiting to start
    queue_mean: float


@dataclass(frozen=True)
class SimResult:
    """Predicted metrics of a plan under load — modeled, not measured."""

    requests: int
    span_s: float             # first arrival to last completion
    throughput_per_s: float   # (completed - 1) / (last - first completion), as the runtime measures it
    latency_p50_s: float
    latency_p99_s: float
    latency_p999_s: float
    latency_mean_s: float
    energy_per_inference_j: float | None
    inferences_per_j: float | None
    average_power_w: float | None
    power_w: dict = field(default_factory=dict)      # per device: modeled average power
    stages: tuple[StageResult, ...] = ()
    queue_times_s: tuple[float, ...] = ()            # sample times of queue_depths
    queue_depths: tuple[tuple[int, ...], ...] = ()   # per server: items waiting at each sample time
    engine: str = "recurrence"                       # recurrence | events
    modeled: bool = True
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)
