"""Per-layer figures read back from a synthesized pipeline, for `conveyor plan --measured DIR`.

DIR is what `conveyor compile` wrote (DIR/manifest.json, DIR/<device>/) after `vitis_hls -f
build_prj.tcl` ran in each board folder. Every layer of a board is its own HLS function,
`layer<i>_<name>` (board.layer_function; the manifest's `modules` maps layer -> function), so
the report lists one module per layer:
- Vitis HLS 2020.2+: `csynth.xml` itself, under `ModuleInformation/Module` (Name, latency,
  `PipelineInitiationInterval` such as "4 ~ 7", resources), as in
  tests/data/csynth/vitis2021_find_smallest_channel_csynth.xml;
- Vivado HLS: one `<module>_csynth.xml` per module beside `csynth.xml` in `syn/report/`
  (hls4ml's Vivado projects: `dense_large_csynth.xml`, `relu_csynth.xml`, ...), each laid out
  like the top report (read_csynth).
A layer's figures key on (the board's part, the layer, the plan's parallelism for it, where its
weights lived), so a re-plan uses them exactly where the same engine would be built again.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from conveyor.codegen.synth_report import RESOURCES, find_report, read_csynth
from conveyor.cost.measured import Measured, MeasuredCosts
from conveyor.errors import CodegenError


def _cycles(text: str | None, where: str) -> int | None:
    """'12', '4 ~ 7' (the larger), 'undef' / '' (None)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split("~")]
    if any(p in ("", "undef", "-") for p in parts):
        return None
    try:
        return int(max(float(p) for p in parts))
    except ValueError:
        raise CodegenError(f"{where} is {text!r}, not a cycle count (or 'A ~ B', 'undef')") from None


def read_modules(report_dir) -> dict[str, Measured]:
    """module name -> Measured, from a `syn/report/` folder (both layouts, see the module doc)."""
    report_dir = Path(report_dir)
    top = report_dir / "csynth.xml"
    out: dict[str, Measured] = {}
    if top.is_file():
        try:
            root = ET.parse(top).getroot()
        except ET.ParseError as exc:
            raise CodegenError(f"{top}: not a readable csynth.xml ({exc})") from None
        for mod in root.findall("ModuleInformation/Module"):
            name = mod.findtext("Name")
            if not name:
                continue
            where = f"{top}: module {name}"
            lat = mod.find("PerformanceEstimates/SummaryOfOverallLatency")
            worst = _cycles(lat.findtext("Worst-caseLatency") if lat is not None else None, f"{where} latency")
            ii = None
            if lat is not None:
                ii = _cycles(lat.findtext("Interval-max"), f"{where} interval") if lat.find("Interval-max") is not None \
                    else _cycles(lat.findtext("PipelineInitiationInterval"), f"{where} initiation interval")
            res = {}
            for tag, key in RESOURCES.items():
                v = mod.findtext(f"AreaEstimates/Resources/{tag}")
                if key != "uram" and v is not None and _cycles(v, f"{where} {tag}") is not None:
                    res[key] = _cycles(v, f"{where} {tag}")
            out[name] = Measured(worst, ii, res, f"{top} module {name}")
    for f in sorted(report_dir.glob("*_csynth.xml")):
        rep = read_csynth(f)
        name = rep.top or f.name[: -len("_csynth.xml")]
        if name in out:
            continue
        res = {k: v for k, v in rep.resources.items() if k != "uram"}
        out[name] = Measured(rep.latency_cycles.get("worst"), rep.interval_cycles.get("max"), res, f"{f} module {name}")
    return out


def measured_costs(compiled_dir) -> MeasuredCosts:
    """The measured figures of every layer of every synthesized board under `compiled_dir`
    (`conveyor compile`'s output). Boards without a report are skipped; a board whose report
    has none of its layers' modules counts its layers as unmatched."""
    d = Path(compiled_dir)
    mpath = d / "manifest.json"
    if not mpath.is_file():
        raise CodegenError(f"--measured {d}: no manifest.json; expected the folder `conveyor compile -o` wrote, "
                           "with each board's Vitis HLS report under <device>/<top>_prj/solution1/syn/report/")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise CodegenError(f"{mpath}: not JSON ({exc})") from None
    costs = MeasuredCosts()
    reports = 0
    for board in manifest.get("boards", []):
        if board.get("replica_of"):
            continue   # the same code as its stage's first device
        rep = find_report(d / board["device"], board["top"])
        if rep is None:
            continue
        reports += 1
        read_csynth(rep)   # the top report must be readable too (a clear error otherwise)
        mods = read_modules(rep.parent)
        par = board.get("modeled", {}).get("parallelism", {})
        weights = board.get("weights_in", {})
        for layer, fn in board.get("modules", {}).items():
            m = mods.get(fn) or next((v for k, v in mods.items() if re.fullmatch(rf"{re.escape(fn)}(_\d+)?", k)), None)
            if m is None:
                costs.unmatched.append(f"{board['device']}:{layer}")
                continue
            where = "streamed" if weights.get(layer, "on_chip") != "on_chip" else "on_chip"
            costs.table[(board["part"], layer, int(par.get(layer, 1)), where)] = m
    if not reports:
        raise CodegenError(f"--measured {d}: no board has a synthesis report (csynth.xml under "
                           "<device>/<top>_prj/solution1/syn/report/); run `conveyor compile --synth` with Vitis HLS first")
    return costs
