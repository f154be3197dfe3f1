"""The facts a chain planner needs about a graph on a cluster, computed once.

Layers are the graph's nodes in topological order; a cut after position i sends every
tensor produced at or before i and read after i (skip connections included).
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.cost.fpga import (LayerOption, Resources, board_budget, dataflow_options, overlay_layer_seconds,
                               overlay_tile_bytes, spills, weight_memory)
from conveyor.cost.host import roofline_seconds
from conveyor.cost.measured import override
from conveyor.cost.work import LayerWork, layer_work
from conveyor.errors import PlanError
from conveyor.hardware.cluster import Cluster


@dataclass(frozen=True)
class Cut:
    position: int              # the cut falls after layer `position`
    tensors: tuple[str, ...]
    bytes: int


@dataclass(frozen=True)
class ChainProblem:
    layer_names: tuple[str, ...]
    works: tuple[LayerWork, ...]
    devices: tuple[str, ...]                                  # devices in chain order
    clocks: tuple[float, ...]
    budgets: tuple[Resources, ...]
    options: tuple[tuple[tuple[LayerOption, ...], ...], ...]  # [board][layer] -> options, slowest first
    cuts: tuple[Cut, ...]                                     # cuts[i]: after layer i (i < m-1)
    link_seconds: tuple[tuple[float, ...], ...]               # [board j][i]: cut i sent from j to j+1
    link_names: tuple[str, ...]                               # [board j]: link j -> j+1
    archs: tuple[str, ...] = ()                               # per device: dataflow | overlay | host
    replicable: bool = False                                  # a switch: identical devices may replicate a stage
    signatures: tuple[str, ...] = ()                          # per device: what makes two devices identical
    specs: tuple = ()                                         # per device: its Board or Host
    links: tuple = ()                                         # [device j]: the Link j -> j+1 (None for the last)
    #: [board][layer] -> options with the weights streamed from off-chip memory, or None for a
    #: device that cannot (no DDR/HBM, or a host); a board streams all its layers' weights or none
    stream_options: tuple = ()
    stream_memory: tuple = ()                                 # per device: "dram" | "hbm" | None
    stream_Bps: tuple = ()                                    # per device: that memory's bandwidth (dataflow: shared)
    stream_bytes: tuple = ()                                  # per device: that memory's capacity
    stream_reserve: tuple = ()                                # per device: on-chip bytes a streaming overlay's shared tiles take
    #: [board][layer] -> options with weights streamed and activation buffers too large for their
    #: staging tiles spilled to the same memory (cost.fpga.spill_traffic), or None where no layer
    #: would spill (or the board cannot stream); a board spills all such buffers or none
    spill_options: tuple = ()

    def __post_init__(self):
        if not self.archs:
            object.__setattr__(self, "archs", tuple("dataflow" for _ in self.devices))

    @property
    def m(self) -> int:
        return len(self.layer_names)

    @property
    def k(self) -> int:
        return len(self.devices)


def crossing_cuts(graph, works: list[LayerWork]) -> list[Cut]:
    """Bytes and tensors crossing each cut position, at each tensor's producer's bit width."""
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    bits = {w.node: w.act_bits for w in works}
    m = len(graph.nodes)
    last_read: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            if t and not graph.is_weight(t):
                last_read[t] = i
    for t in graph.output_names:
        last_read[t] = m  # graph outputs leave from the last stage
    produced_at = {t: index[n.name] for n in graph.nodes for t in n.outputs if t}
    for t in graph.input_names:
        produced_at[t] = -1
    cuts = []
    for pos in range(m - 1):
        crossing = [t for t, p in produced_at.items() if p <= pos < last_read.get(t, -2)]
        nbytes = 0
        for t in crossing:
            producer = graph.producer(t)
            b = bits[producer.name] if producer is not None else 32
            nbytes += -(-graph.tensors[t].size * b // 8)
        cuts.append(Cut(pos, tuple(crossing), nbytes))
    return cuts


ARCHS = ("dataflow", "overlay")
#: Sequential devices express seconds as integer ticks of this "clock" (1 ps).
TICKS_PER_S = 1e12
_UNBOUNDED = 10**15


def chain_problem(graph, cluster: Cluster, precision=None, *, arch: str = "dataflow",
                  archs: dict[str, str] | None = None, profiles: dict | None = None,
                  order: tuple[str, ...] | None = None, offchip: bool = True, measured=None) -> ChainProblem:
    """The chain of `graph`'s layers over `cluster`'s devices in their listed order.

    FPGA boards run `arch` ("dataflow" engines, or one "overlay" engine) unless `archs`
    names another for a device; CPUs and GPUs run layers in turn at their roofline time,
    or at the measured times of a `profiles[device]` Profile. `offchip=False` keeps every
    weight on chip (no streaming from DDR/HBM). `measured` (cost.measured.MeasuredCosts): the
    synthesized figures of the (part, layer, parallelism) it holds replace the model's."""
    archs = dict(archs or {})
    for name, a in archs.items():
        cluster.device(name)
        if a not in ARCHS:
            raise PlanError(f"archs['{name}'] = '{a}'; accepted: {', '.join(ARCHS)}")
    if arch not in ARCHS:
        raise PlanError(f"arch '{arch}'; accepted: {', '.join(ARCHS)}")
    devices = list(cluster.devices) if order is None else [cluster.device(n) for n in order]
    works = layer_work(graph, precision)
    cuts = crossing_cuts(graph, works)
    spilling = [spills(w) for w in works]
    kinds, options, clocks, budgets = [], [], [], []
    streamed, memories, reserve, spilled = [], [], [], []
    # identical boards share one options table (built once; the planner keys its tables on it)
    tables: dict[tuple[str, bool], tuple] = {}

    def table(board, stream: bool, spill: bool = False) -> tuple:
        key = (repr(board), stream, spill)
        if key not in tables:
            tables[key] = tuple(override(tuple(dataflow_options(w, board, streamed=stream, spill=spill)), measured,
                                         board.part.name, w.node, stream) for w in works)
        return tables[key]

    def spill_table(board):
        if not any(spilling):
            return None
        key = (repr(board), True, True)
        if key not in tables:   # the layers that do not spill keep their streamed options
            streamed_table = table(board, True)
            tables[key] = tuple(override(tuple(dataflow_options(w, board, streamed=True, spill=True)), measured,
                                         board.part.name, w.node, True) if sp else same
                                for w, sp, same in zip(works, spilling, streamed_table))
        return tables[key]

    for d in devices:
        mem = weight_memory(d.board) if d.kind == "fpga" and offchip else None
        memories.append(mem)
        reserve.append(0)
        if d.kind == "fpga":
            a = archs.get(d.name, arch)
            if a == "dataflow":
                kinds.append("dataflow")
                options.append(table(d.board, False))
                streamed.append(None if mem is None else table(d.board, True))
                spilled.append(None if mem is None else spill_table(d.board))
                clocks.append(d.board.clock_hz)
                budgets.append(board_budget(d.board))
                continue
            seconds = [overlay_layer_seconds(w, d.board, weights_on_chip=True) for w in works]
            kinds.append("overlay")
            memory = int(d.board.part.onchip_bits // 8)
            # one engine runs the layers in turn: its double-buffered tiles are shared by them all
            reserve[-1] = max((overlay_tile_bytes(w, d.board) for w in works), default=0)
            streamed.append(None if mem is None else tuple(
                (_sequential_option(overlay_layer_seconds(w, d.board, weights_on_chip=False, bandwidth_Bps=mem[1]),
                                    0, w.weight_bytes),)
                for w in works))
        else:
            streamed.append(None)
            kinds.append("host")
            seconds = _host_seconds(graph, works, d, (profiles or {}).get(d.name))
            memory = int(d.host.mem_bytes)
        spilled.append(None)   # sequential devices: overlay_layer_seconds already counts spilled activations
        options.append(tuple((_sequential_option(t, w.weight_bytes),) for t, w in zip(seconds, works)))
        clocks.append(TICKS_PER_S)
        budgets.append(Resources(_UNBOUNDED, memory, _UNBOUNDED, _UNBOUNDED))
    link_seconds, link_names, links = [], [], []
    for j, d in enumerate(devices):
        if j + 1 < len(devices):
            link = cluster.link_between(d.name, devices[j + 1].name)
            links.append(link)
            link_names.append(link.name)
            link_seconds.append(tuple(link.transfer_time_s(c.bytes) for c in cuts))
        else:
            links.append(None)
            link_names.append("")
            link_seconds.append(tuple(float("inf") for _ in cuts))
    return ChainProblem(
        layer_names=tuple(n.name for n in graph.nodes),
        works=tuple(works),
        devices=tuple(d.name for d in devices),
        clocks=tuple(clocks),
        budgets=tuple(budgets),
        options=tuple(options),
        cuts=tuple(cuts),
        link_seconds=tuple(link_seconds),
        link_names=tuple(link_names),
        archs=tuple(kinds),
        replicable=cluster.topology == "switch",
        signatures=tuple(f"{k}:{d.spec!r}" for k, d in zip(kinds, devices)),
        specs=tuple(d.spec for d in devices),
        links=tuple(links),
        stream_options=tuple(streamed),
        stream_memory=tuple(m[0] if m else None for m in memories),
        stream_Bps=tuple(m[1] if m else 0.0 for m in memories),
        stream_bytes=tuple(m[2] if m else 0 for m in memories),
        stream_reserve=tuple(reserve),
        spill_options=tuple(spilled) if any(o is not None for o in spilled) else (),
    )


def _sequential_option(seconds: float, weight_bytes: int, offchip_bytes: int = 0) -> LayerOption:
    ticks = max(0, round(seconds * TICKS_PER_S))
    return LayerOption(1, ticks, ticks, Resources(0, int(weight_bytes), 0, 0), offchip_bytes=int(offchip_bytes))


def _host_seconds(graph, works, device, profile) -> list[float]:
    if profile is None:
        return [roofline_seconds(w, device.host) for w in works]
    if profile.fingerprint != graph.fingerprint():
        raise PlanError(f"the profile for '{device.name}' was measured on another model "
                        f"(fingerprint {profile.fingerprint[:12]}, this model {graph.fingerprint()[:12]})")
    return [profile.layer_seconds.get(w.node, 0.0) for w in works]
