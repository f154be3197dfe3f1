"""The plan report: one static HTML page with the stage table and a chart of stage times
against the bottleneck, for conveyor's plan and the baselines."""

from __future__ import annotations

from html import escape

from conveyor.plan import Plan
from conveyor.reports.svg import stage_bars
from conveyor.units import eng, plural, seconds


def stage_rows(plan: Plan) -> list[tuple[str, float]]:
    """(label, seconds) of every pipeline stage of a plan, link stages included."""
    rows = []
    for s in plan.stages:
        rows.append((f"{s.device} ({plural(len(s.layers), 'layer')})", s.stage_time_s))
        if s.link_out is not None and s.link_out.mode == "stage":
            rows.append((f"link {s.link_out.src}->{s.link_out.dst}", s.link_out.seconds))
    return rows


def _per_layer(stage, field: str, layer: str):
    """A per-layer field the planner may add (`weights_in`, `weight_bandwidth_Bps`): a mapping
    layer -> value, or one value for the whole stage; None where the plan has none."""
    value = getattr(stage, field, None)
    if isinstance(value, dict) or hasattr(value, "get"):
        return value.get(layer)
    return value


def engine_rows(plan: Plan) -> tuple[list[str], list[list[str]]]:
    """Per layer: its stage, parallelism (reuse factor), interval, and where its weights live
    when the plan says so (columns only for what some stage carries)."""
    weights = any(getattr(s, "weights_in", None) for s in plan.stages)
    bandwidth = any(getattr(s, "weight_bandwidth_Bps", None) for s in plan.stages)
    head = ["layer", "stage", "parallelism", "interval"] + (["weights in"] if weights else []) + (
        ["weight bandwidth"] if bandwidth else [])
    rows = []
    for s in plan.stages:
        for layer in s.layers:
            p = s.parallelism.get(layer)
            t = s.layer_interval_s.get(layer)
            row = [layer, s.device, "-" if p is None else f"{p:,}", "-" if t is None else seconds(t)]
            if weights:
                row.append(str(_per_layer(s, "weights_in", layer) or "-"))
            if bandwidth:
                bw = _per_layer(s, "weight_bandwidth_Bps", layer)
                row.append("-" if not bw else eng(float(bw), "B/s"))
            rows.append(row)
    return head, rows


def crossing(tensors, shown: int = 4) -> str:
    """The tensors a cut sends (skip connections included: each crosses every link up to its reader)."""
    names = ", ".join(tensors[:shown]) + (f" +{len(tensors) - shown} more" if len(tensors) > shown else "")
    return f"{plural(len(tensors), 'tensor')}: {names}"


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
                                               f"{s.link_out.seconds * 1e6:.1f} us; {crossing(s.link_out.tensors)}")
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
    ehead, erows = engine_rows(plan)
    engines = ("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in ehead) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in erows))
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
<h2>Layer engines</h2><table class="engines">{engines}</table>
<h2>Against the baselines</h2><table><tr><th>method</th><th>items/s</th><th>latency (ms)</th></tr>{"".join(comp)}</table>
<ul>{notes}</ul>
</body></html>
"""
