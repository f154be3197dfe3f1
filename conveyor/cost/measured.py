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
    parallelism that was synthesized. The layer's other parallelisms are *calibrated*: the model's
    figures times measured / modeled of the nearest synthesized one (per quantity: interval,
    latency, each resource), marked as such, so that a measured engine slower than modeled does not
    leave its unmeasured neighbours looking better than they are. The list is then made a front
    again (cost.fpga.pareto_options: distinct intervals, resources monotone), as the planner's
    exactness needs."""
    if measured is None:
        return options
    got = {o.parallelism: m for o in options if (m := measured.get(part, layer, o.parallelism, streamed)) is not None}
    if not got:
        return options
    keys = ("dsp", "bram18k", "lut", "ff")
    ratios = {}
    for o in options:
        if o.parallelism in got:
            m = got[o.parallelism]
            # a ratio where both figures are positive (a measured 0, e.g. no DSP because the tool chose
            # LUT multipliers, says nothing about another parallelism's count)
            ratios[o.parallelism] = {k: (mv / ov) if mv and ov else None for k, mv, ov in (
                ("interval", m.interval_cycles, o.interval_cycles), ("latency", m.latency_cycles, o.latency_cycles),
                *((k, m.resources.get(k), getattr(o.resources, k)) for k in keys))}
    out = []
    for o in options:
        m = got.get(o.parallelism)
        if m is not None:
            r = o.resources
            res = Resources(*(int(m.resources.get(k, getattr(r, k))) for k in keys))
            interval = o.interval_cycles if m.interval_cycles is None else m.interval_cycles
            latency = o.latency_cycles if m.latency_cycles is None else m.latency_cycles
            out.append(replace(o, interval_cycles=interval, latency_cycles=max(latency, 0), resources=res,
                               measured=m.source))
            continue
        near = min(ratios, key=lambda q: (abs(q - o.parallelism), q))
        r = ratios[near]

        def scaled(v, f):
            return v if f is None else max(0, round(v * f))

        out.append(replace(
            o, interval_cycles=max(1, scaled(o.interval_cycles, r["interval"])) if o.interval_cycles else 0,
            latency_cycles=scaled(o.latency_cycles, r["latency"]),
            resources=Resources(*(scaled(getattr(o.resources, k), r[k]) for k in keys)),
            measured=f"calibrated: the model x measured/modeled of parallelism {near} ({got[near].source})"))
    return tuple(pareto_options(out))
