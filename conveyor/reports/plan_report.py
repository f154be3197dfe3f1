"""The plan report: one static HTML page with the stage table and a chart of stage times
against the bottleneck, for conveyor's plan and the baselines."""

from __future__ import annotations

from html import escape

from conveyor.plan import Plan
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


def engine_rows(plan: Plan, graph=None) -> tuple[list[str], list[list[str]]]:
    """Per layer: its stage, parallelism (and, given the graph, the reuse factor hls4ml would
    use: ceil(MACs / parallelism)), interval, and where its weights live when the plan says so
    (columns only for what some stage carries)."""
    import math

    macs = {}
    if graph is not None:
        from conveyor.graph import layer_counters

        macs = {r.node: r.macs for r in layer_counters(graph)}
    weights = any(getattr(s, "weights_in", None) for s in plan.stages)
    bandwidth = any(getattr(s, "weight_bandwidth_Bps", None) for s in plan.stages)
    spilled = any(v not in (None, "on_chip") for s in plan.stages for v in (getattr(s, "activations_in", None) or {}).values())
    head = ["layer", "stage", "parallelism"] + (["reuse factor"] if macs else []) + ["interval"] + (
        ["weights in"] if weights else []) + (["weight bandwidth"] if bandwidth else []) + (
        ["activations in"] if spilled else [])
    rows = []
    for s in plan.stages:
        for layer in s.layers:
            p = s.parallelism.get(layer)
            t = s.layer_interval_s.get(layer)
            row = [layer, s.device, "-" if p is None else f"{p:,}"]
            if macs:  # an FPGA engine's reuse factor; a host stage has none
                m = macs.get(layer, 0)
                host = s.device_kind in ("cpu", "gpu")
                row.append("-" if p is None or not m or host else f"{max(1, math.ceil(m / max(p, 1))):,}")
            row.append("-" if t is None else seconds(t))
            if weights:
                where = _per_layer(s, "weights_in", layer)
                row.append("host memory" if s.device_kind in ("cpu", "gpu") else str(where or "-"))
            if bandwidth:
                bw = _per_layer(s, "weight_bandwidth_Bps", layer)
                row.append("-" if not bw else eng(float(bw), "B/s"))
            if spilled:   # where the activation buffer lives, and the bandwidth its spill takes
                where = _per_layer(s, "activations_in", layer) or "-"
                bw = _per_layer(s, "activation_bandwidth_Bps", layer)
                row.append(str(where) + (f" {eng(float(bw), 'B/s')}" if bw else ""))
            rows.append(row)
    return head, rows


def crossing(tensors, shown: int = 4) -> str:
    """The tensors a cut sends (skip connections included: each crosses every link up to its reader)."""
    names = ", ".join(tensors[:shown]) + (f" +{len(tensors) - shown} more" if len(tensors) > shown else "")
    return f"{plural(len(tensors), 'tensor')}: {names}"


def _table(head, rows, cls: str) -> str:
    """An HTML table; a column whose cells are all numbers (or '-') is right-aligned, text left."""
    numeric = [all(str(r[i])[:1].isdigit() or str(r[i]) in ("-", "") for r in rows) for i in range(len(head))]
    td = lambda i, c: f'<td class="{"num" if numeric[i] else "txt"}">{escape(str(c))}</td>'  # noqa: E731
    return (f'<table class="{cls}"><tr>' + "".join(
        f'<th class="{"num" if numeric[i] else "txt"}">{escape(h)}</th>' for i, h in enumerate(head)) + "</tr>" + "".join(
        "<tr>" + "".join(td(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows) + "</table>")


CSS = """body{font-family:sans-serif;margin:20px 24px;color:#222}
h1{font-size:22px;margin:0 0 6px} h2{font-size:17px;margin:22px 0 8px} h3{font-size:14px;margin:6px 0}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 10px;background:#fff;max-width:100%;overflow-x:auto}
.card.best{border-color:#1f77b4}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ccc;padding:3px 8px}
.num{text-align:right} .txt{text-align:left} th{background:#f3f3f3}
.row > .grow{flex:1 1 560px;min-width:0}
.notes{color:#555;font-size:13px} .refused{max-width:420px}"""


def render(plan: Plan, baselines: dict[str, Plan | str], graph=None, sim_link: str | None = None) -> str:
    """The page; `sim_link`: a simulation report of this plan to link to (a relative URL)."""
    from conveyor.reports.plan_svg import pipeline_svg, resource_svg, stage_chart
    from conveyor.units import rate, span

    plans = [("conveyor", plan)] + [(n, b) for n, b in baselines.items() if isinstance(b, Plan)]
    vmax = max([v for _, p in plans for _, v in stage_rows(p)] + [plan.interval_s])
    charts = []
    for name, b in [("conveyor", plan)] + list(baselines.items()):
        if isinstance(b, Plan):
            head = f"{name}: {rate(b.throughput)} items/s, latency {seconds(b.latency_s)}"
            svg = stage_chart(stage_rows(b), vmax, plan.interval_s)
        else:
            head, svg = f"{name}: does not fit", f'<p class="notes refused">{escape(b.removeprefix("does not fit: "))}</p>'
        charts.append(f'<div class="card{" best" if name == "conveyor" else ""}"><h3>{escape(head)}</h3>{svg}</div>')
    boards = []
    for s in plan.stages:
        from conveyor.reports.plan_svg import _board_of

        board = _board_of(plan, s.device)
        title = f"{s.device}{f' ({board})' if board else ''}, {s.arch}"
        boards.append(f'<div class="card board-card">{resource_svg(s, title)}</div>')
    stage_head = ["stage", "layers", "stage time", "compute", "DSP", "BRAM18K", "LUT", "FF", "link out",
                  "power (datasheet)"]
    stage_body = []
    for s in plan.stages:
        util = {r: (f"{s.resources[r]:,} / {s.budget[r]:,}" if r in s.resources and r in s.budget else "-")
                for r in ("dsp", "bram18k", "lut", "ff")}
        link = "-" if s.link_out is None else (
            f"{s.link_out.link} ({'own stage' if s.link_out.mode == 'stage' else 'merged'}), "
            f"{eng(s.link_out.bytes, 'B')}, {seconds(s.link_out.seconds)}; {crossing(s.link_out.tensors)}")
        stage_body.append([s.device + (f" x{1 + len(s.replicas)}" if s.replicas else ""),
                           span(s.layers), seconds(s.stage_time_s), seconds(s.compute_interval_s), util["dsp"],
                           util["bram18k"], util["lut"], util["ff"], link,
                           "-" if s.power_w is None else f"{s.power_w:g} W"])
    comp = [["conveyor", rate(plan.throughput), seconds(plan.latency_s), "1.00x", ""]]
    for name, b in baselines.items():
        if isinstance(b, Plan):
            comp.append([name, rate(b.throughput), seconds(b.latency_s), f"{b.throughput / plan.throughput:.2f}x", ""])
        else:
            comp.append([name, "-", "-", "-", b])
    ehead, erows = engine_rows(plan, graph)
    notes = "".join(f"<li>{escape(n)}</li>" for n in plan.notes)
    sim = (f'<p>Under load (simulated): <a class="sim-report" href="{escape(sim_link)}">{escape(sim_link)}</a> '
           "(timeline, utilisation, latency against offered load)</p>") if sim_link else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>conveyor plan: {escape(plan.model)}</title><style>{CSS}</style></head><body>
<h1>{escape(plan.model)} on {escape(str(plan.cluster.get("name", "cluster")))}</h1>
<p>Predicted <b>{rate(plan.throughput)} items/s</b> (interval {seconds(plan.interval_s)}, bottleneck
{escape(plan.bottleneck())}), latency {seconds(plan.latency_s)} at batch 1; precision
{escape(str(plan.precision.get("default")))}; objective {escape(plan.objective)}; {plural(len(plan.stages), "stage")}.
Everything here is modeled.</p>
{sim}<div class="row">
<div class="card best"><h2>Pipeline</h2>{pipeline_svg(plan)}</div>
<div class="grow"><h2>Stage times, conveyor and the baselines</h2><div class="row charts">{"".join(charts)}</div></div>
</div>
<h2>Board resources against their budgets</h2>
<p class="notes">Red: at {90}% of the budget or more. Budgets: {escape("; ".join(n for n in plan.notes if "budget" in n) or "the planner's")}.</p>
<div class="row boards">{"".join(boards)}</div>
<h2>Stages</h2>{_table(stage_head, stage_body, "stages")}
<h2>Layer engines</h2>{_table(ehead, erows, "engines")}
<h2>Against the baselines</h2>{_table(["method", "items/s", "latency", "vs conveyor", "why not"], comp, "baselines")}
<ul class="notes">{notes}</ul>
</body></html>
"""
