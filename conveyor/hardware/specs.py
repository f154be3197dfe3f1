"""The catalog records: FPGA parts, boards, hosts (CPU/GPU) and links.

All figures are datasheet figures (modeled), not measurements; each YAML entry
names its source.  Units are in the field names.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

BRAM18K_BITS = 18 * 1024
M20K_BITS = 20 * 1024
URAM_BITS = 288 * 1024


@dataclass(frozen=True)
class FpgaPart:
    """One FPGA device.  `clock_hz` is a typical achieved HLS kernel clock, not the fabric maximum.

    `dsp_modes` lists what one DSP slice/block computes per cycle as (a_bits, b_bits, count):
    a DSP48E1 is ((25, 18, 1),); a Stratix 10 variable-precision block is ((27, 27, 1), (18, 19, 2)).
    Intel parts keep their native `m20k` count; `bram18k` is then an 18 Kb equivalent by capacity.
    """

    name: str
    vendor: str
    family: str
    dsp: int
    dsp_mult_width: tuple[int, int]
    dsp_modes: tuple[tuple[int, int, int], ...]
    bram18k: int
    uram: int
    m20k: int
    lut: int
    ff: int
    clock_hz: float
    description: str = ""
    source: str = ""

    @property
    def onchip_bits(self) -> int:
        """Block RAM capacity in bits (native blocks: M20K on Intel, BRAM18K on Xilinx) plus URAM."""
        blocks = self.m20k * M20K_BITS if self.m20k else self.bram18k * BRAM18K_BITS
        return blocks + self.uram * URAM_BITS

    def mults_per_dsp(self, a_bits: int, b_bits: int) -> int:
        """How many a_bits x b_bits signed multiplies one DSP does per cycle (0: needs more than one DSP)."""
        best = 0
        for wa, wb, count in self.dsp_modes:
            if (a_bits <= wa and b_bits <= wb) or (a_bits <= wb and b_bits <= wa):
                best = max(best, count)
        return best


@dataclass(frozen=True)
class Board:
    """An FPGA board or card: a part plus off-chip memory, host interface and power.

    `power_w` is the datasheet power figure where one is given (for Alveo cards the maximum
    total power), else None.  `cpu` names the embedded processor host (Zynq PS), if any.
    `network_links` are the catalog links the board's connectors can carry.
    """

    name: str
    part: FpgaPart
    dram_bytes: int
    dram_bandwidth_Bps: float
    hbm_bytes: int
    hbm_bandwidth_Bps: float
    clock_hz: float
    host_interface: str
    power_w: float | None = None
    cpu: str | None = None
    network_links: tuple[str, ...] = ()
    description: str = ""
    source: str = ""

    kind = "fpga"

    @property
    def offchip_bytes(self) -> int:
        return self.dram_bytes + self.hbm_bytes

    @property
    def offchip_bandwidth_Bps(self) -> float:
        """Peak off-chip bandwidth: DRAM and HBM together (they are separate controllers)."""
        return self.dram_bandwidth_Bps + self.hbm_bandwidth_Bps


@dataclass(frozen=True)
class Host:
    """A CPU or GPU that can run a stage.  `peak_flops` is peak float32 FLOP/s (an FMA counts 2)."""

    name: str
    kind: str  # "cpu" | "gpu"
    peak_flops: float
    mem_bandwidth_Bps: float
    mem_bytes: int
    tdp_w: float | None = None
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class Link:
    """A point-to-point (or one switch hop) connection type.

    `bandwidth_Bps` is the effective payload rate per direction:
    lanes x line_rate_bps x encoding efficiency (e.g. 64b/66b) x protocol efficiency / 8.
    `latency_s` is the one-way latency of one hop. `switched`: frames cross a switch that
    routes them by destination (generated code puts the receiving board in TDEST).
    """

    name: str
    medium: str
    lanes: int
    line_rate_bps: float
    encoding: str
    protocol_efficiency: float
    bandwidth_Bps: float
    latency_s: float
    description: str = ""
    source: str = ""
    switched: bool = False

    @property
    def encoding_efficiency(self) -> float:
        return encoding_efficiency(self.encoding)

    def transfer_time_s(self, nbytes: int | float) -> float:
        """One-hop time to move `nbytes`: latency plus serialization at the payload rate."""
        return self.latency_s + nbytes / self.bandwidth_Bps


def encoding_efficiency(encoding: str) -> float:
    """'64b/66b' -> 64/66; 'none' -> 1.0.  Raises ValueError on anything else."""
    if encoding == "none":
        return 1.0
    data, _, line = encoding.partition("/")
    if not (data.endswith("b") and line.endswith("b")):
        raise ValueError(encoding)
    d, n = int(data[:-1]), int(line[:-1])
    if not 0 < d <= n:
        raise ValueError(encoding)
    return d / n


def spec_entry(spec: Any) -> dict[str, Any]:
    """A spec as its catalog YAML entry (no name; part by name; tuples as lists; None and "" dropped)."""
    out: dict[str, Any] = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        if f.name == "name" or value is None or value == "":
            continue
        if isinstance(value, FpgaPart):
            value = value.name
        elif isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        out[f.name] = value
    return out
