"""Vitis HLS / Vivado HLS synthesis reports (`csynth.xml`) read back, and set beside the plan's
modeled figures for each board of a compiled pipeline (`conveyor report DIR`).

A csynth.xml's top-level `PerformanceEstimates/SummaryOfOverallLatency` gives the latency
(best / average / worst case, clock cycles) and the initiation interval (Interval-min/max);
`SummaryOfTimingAnalysis/EstimatedClockPeriod` the clock the tool expects to meet (ns);
`AreaEstimates/Resources` the DSP (`DSP` since Vitis HLS 2020.2, `DSP48E` in Vivado HLS),
BRAM_18K, LUT, FF and URAM counts; `UserAssignments` the part and the target clock.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conveyor.errors import CodegenError

#: csynth.xml resource tags -> the plan's resource keys (conveyor/plan.py StagePlan.resources)
RESOURCES = {"DSP": "dsp", "DSP48E": "dsp", "BRAM_18K": "bram18k", "LUT": "lut", "FF": "ff", "URAM": "uram"}


@dataclass(frozen=True)
class SynthReport:
    path: str
    version: str | None
    top: str | None
    part: str | None
    target_clock_ns: float | None
    estimated_clock_ns: float | None
    latency_cycles: dict = field(default_factory=dict)    # best / average / worst: int or None ('undef')
    interval_cycles: dict = field(default_factory=dict)   # min / max
    resources: dict = field(default_factory=dict)         # plan keys (dsp, bram18k, lut, ff, uram) -> used
    available: dict = field(default_factory=dict)         # the same keys -> the part's

    @property
    def achieved_clock_hz(self) -> float | None:
        return 1e9 / self.estimated_clock_ns if self.estimated_clock_ns else None

    def as_dict(self) -> dict:
        return {**asdict(self), "achieved_clock_hz": self.achieved_clock_hz}


def _number(text: str | None, where: str, path) -> float | None:
    if text is None:
        return None
    text = text.strip()
    if text in ("", "undef", "-"):
        return None
    try:
        return float(text)
    except ValueError:
        raise CodegenError(f"{path}: {where} is {text!r}, not a number (or 'undef')") from None


def read_csynth(path) -> SynthReport:
    """Read one csynth.xml (Vivado HLS 2019-2020 or Vitis HLS 2020.2+ layout)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise CodegenError(f"{path}: not a readable csynth.xml ({exc})") from None
    perf = root.find("PerformanceEstimates")
    if perf is None:
        raise CodegenError(f"{path}: no <PerformanceEstimates> at the top level; a Vitis HLS csynth.xml "
                           "(solution/syn/report/csynth.xml) is expected")

    def num(elem, tag, where):
        v = _number(elem.findtext(tag) if elem is not None else None, where, path)
        return v

    lat = perf.find("SummaryOfOverallLatency")
    latency = {k: (None if (v := num(lat, f"{k.capitalize()}-caseLatency", f"{k}-case latency")) is None else int(v))
               for k in ("best", "average", "worst")}
    interval = {k: (None if (v := num(lat, f"Interval-{k}", f"interval {k}")) is None else int(v))
                for k in ("min", "max")}
    area = root.find("AreaEstimates")
    used, avail = {}, {}
    for tag, key in RESOURCES.items():
        v = num(area.find("Resources") if area is not None else None, tag, f"resource {tag}")
        if v is not None:
            used[key] = int(v)
        a = num(area.find("AvailableResources") if area is not None else None, tag, f"available {tag}")
        if a is not None:
            avail[key] = int(a)
    ua = root.find("UserAssignments")
    return SynthReport(
        path=str(path), version=root.findtext("ReportVersion/Version"),
        top=ua.findtext("TopModelName") if ua is not None else None,
        part=ua.findtext("Part") if ua is not None else None,
        target_clock_ns=num(ua, "TargetClockPeriod", "target clock period"),
        estimated_clock_ns=num(perf.find("SummaryOfTimingAnalysis"), "EstimatedClockPeriod", "estimated clock period"),
        latency_cycles=latency, interval_cycles=interval, resources=used, available=avail)


def find_report(board_dir: Path, top: str) -> Path | None:
    """The board's csynth.xml: build_prj.tcl's `<top>_prj/solution1/syn/report/csynth.xml`, else
    any `syn/report/csynth.xml` below the board folder."""
    first = board_dir / f"{top}_prj" / "solution1" / "syn" / "report" / "csynth.xml"
    if first.is_file():
        return first
    found = sorted(board_dir.glob("**/syn/report/csynth.xml"))
    return found[0] if found else None


def compare_board(board: dict, rep: SynthReport) -> list[dict]:
    """Rows (quantity, synthesized, modeled, ratio synthesized / modeled) for one board."""
    modeled = board.get("modeled", {})
    period_s = (rep.target_clock_ns or 1e9 / board["clock_hz"]) * 1e-9
    rows = []

    def row(name, measured, model, unit):
        ratio = measured / model if measured is not None and model else None
        rows.append({"quantity": name, "synthesized": measured, "modeled": model, "ratio": ratio, "unit": unit})

    worst = rep.latency_cycles.get("worst")
    ii = rep.interval_cycles.get("max")
    row("latency", worst * period_s if worst is not None else None, modeled.get("latency_s"), "s")
    row("interval", ii * period_s if ii is not None else None, modeled.get("interval_s"), "s")
    for key in ("dsp", "bram18k", "lut", "ff"):
        row(key, rep.resources.get(key), modeled.get("resources", {}).get(key), "")
    row("clock", rep.achieved_clock_hz, board.get("clock_hz"), "Hz")
    return rows
