"""The plan report: one static HTML page with the stage table and a chart of stage times
against the bottleneck, for conveyor's plan and the baselines."""

from __future__ import annotations

from html import escape

from conveyor.plan import Plan
from conveyor.reports.svg import stage_bars
from conveyor.units import plural


def stage_rows(plan: Plan) -> list[tuple[str, float]]:
    """(label, seconds) of every pipeline stage of a plan, link stages included."""
    rows = []
    for s in plan.stages:
        rows.append((f"{s.device} ({plural(len(s.layers), 'layer')})", s.stage_time_s))
        if s.link_out is not None and s.link_out.mode == "stage":
            rows.append((f"link {s.link_out.src}->{s.link_out.dst}", s.link_out.seconds))
    return rows


def render(plan: Plan, baselines: dict[str, Plan | str]) -> str:
    groups = [(f"conveyor ({plan.throughput:.1f}/s)", stage_rows(plan))]
    for name, b in baselines.items():
        groups.append((f"{name} ({b.throughput:.1f}/s)" if isinstance(b, Plan) else name,
                       stage_rows(b) if isinstance(b, Plan) else []))
    chart = stage_bars(groups, title=f"{plan.model}: stage times (red: each plan's bottleneck)",
                       reference=plan.interval_s)
    head = "".join(f"<th>{h}</th>" for h in ("stage", "layers", "stage time", "compute", "DSP", "BRAM18K", "LUT",
                                             "link out", "power (datasheet)"))
    body = []
    for s in plan.stages:
        # host stages carry no FPGA resources and overlay stages only BRAM: "-" where a board has none
        util = {r: (f"{s.resources[r]:,} / {s.budget[r]:,}" if r in s.resources and r in s.budget else "-")
                for r in ("dsp", "bram18k", "lut")}
        link = "-" if s.link_out is None else (f"{s.link_out.link} {s.link_out.mode}, {s.link_out.bytes:,} B, "
                                               f"{s.link_out.seconds * 1e6:.1f} us")
        power = "-" if s.power_w is None else f"{s.power_w:g} W"
        body.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in (
            s.device, f"{s.layers[0]} .. {s.layers[-1]} ({len(s.layers)})", f"{s.stage_time_s * 1e3:.3f} ms",
            f"{s.compute_interval_s * 1e3:.3f} ms", util["dsp"], util["bram18k"], util["lut"], link, power)) + "</tr>")
    comp = [f"<tr><td>conveyor</td><td>{plan.throughput:.2f}</td><td>{plan.latency_s * 1e3:.2f}</td></tr>"]
    for name, b in baselines.items():
        if isinstance(b, Plan):
            comp.append(f"<tr><td>{escape(name)}</td><td>{b.throughput:.2f}</td><td>{b.latency_s * 1e3:.2f}</td></tr>")
        else:
            comp.append(f"<tr><td>{escape(name)}</td><td colspan=2>{escape(b)}</td></tr>")
    notes = "".join(f"<li>{escape(n)}</li>" for n in plan.notes)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>conveyor plan: {escape(plan.model)}</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1100px}} table{{border-collapse:collapse;margin:12px 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}}</style>
</head><body>
<h1>{escape(plan.model)} on {escape(str(plan.cluster.get("name", "cluster")))}</h1>
<p>Predicted <b>{plan.throughput:.2f} items/s</b> (interval {plan.interval_s * 1e3:.3f} ms, bottleneck {escape(plan.bottleneck())}),
latency {plan.latency_s * 1e3:.2f} ms at batch 1; precision {escape(str(plan.precision.get("default")))}; objective {escape(plan.objective)}.</p>
{chart}
<h2>Stages</h2><table><tr>{head}</tr>{"".join(body)}</table>
<h2>Against the baselines</h2><table><tr><th>method</th><th>items/s</th><th>latency (ms)</th></tr>{"".join(comp)}</table>
<ul>{notes}</ul>
</body></html>
"""
