"""Measured per-layer figures (from synthesis reports) in place of the cost model's.

A `MeasuredCosts` table maps (part, layer, parallelism, weights) to what Vitis HLS reported for
that layer's engine on that part: worst-case latency and interval (cycles of the board's clock)
and DSP / BRAM18K / LUT / FF. `conveyor plan --measured DIR` builds one from a compiled,
synthesized pipeline (conveyor/codegen/measured.py); the planner's options tables then carry
the measured figures for those (part, layer, parallelism) and the model's for every other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from conveyor.cost.fpga import LayerOption, Resources, pareto_options


@dataclass(frozen=True)
class Measured:
    latency_cycles: int | None       # None ('undef' in the report): the model's figure stays
    interval_cycles: int | None
    resources: dict                  # dsp / bram18k / lut / ff -> used (a missing key: the model's)
    source: str                      # where it was read: report file and module


@dataclass
class MeasuredCosts:
    #: (part, layer, parallelism, weights: "on_chip" | "streamed") -> Measured
    table: dict = field(default_factory=dict)
    #: layers of the synthesized boards that had no module in their report
    unmatched: list = field(default_factory=list)

    def get(self, part: str, layer: str, p: int, streamed: bool) -> Measured | None:
        return self.table.get((part, layer, p, "streamed" if streamed else "on_chip"))

    def layers(self) -> set[str]:
        return {k[1] for k in self.table}


def override(options: tuple[LayerOption, ...], measured: MeasuredCosts | None, part: str, layer: str,
             streamed: bool) -> tuple[LayerOption, ...]:
    """`options` (one layer on one part, slowest first) with the measured figures put in for each
    parallelism that was synthesized; the list is then made a front again (cost.fpga.pareto_options:
    distinct intervals, resources monotone), as the planner's exactness needs."""
    if measured is None:
        return options
    got = False
    out = []
    for o in options:
        m = measured.get(part, layer, o.parallelism, streamed)
        if m is None:
            out.append(o)
            continue
        got = True
        r = o.resources
        res = Resources(*(int(m.resources.get(k, getattr(r, k))) for k in ("dsp", "bram18k", "lut", "ff")))
        interval = o.interval_cycles if m.interval_cycles is None else m.interval_cycles
        latency = o.latency_cycles if m.latency_cycles is None else m.latency_cycles
        out.append(replace(o, interval_cycles=interval, latency_cycles=max(latency, 0), resources=res,
                           measured=m.source))
    return tuple(pareto_options(out)) if got else options
