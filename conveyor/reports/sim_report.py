"""`conveyor simulate --report sim.html`: a static page with inline SVG — a Gantt chart of
the first requests through the servers, utilisation per server, and p50/p99 latency against
offered load (a Poisson rate sweep: the knee). All modeled."""

from __future__ import annotations

import os
from html import escape

import numpy as np

from conveyor.reports.svg import PALETTE, Series, line_chart, stage_bars
from conveyor.units import eng, rate, seconds

GANTT_ITEMS = 12
SWEEP = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.05, 1.2)  # x the plan's capacity


def gantt(plan, width: int = 760) -> str:
    """First requests, arriving at the plan's capacity, through every server: one bar per
    (server, request) from its start to its hand-on (start + latency)."""
    from conveyor.sim.model import servers
    from conveyor.sim.recurrence import starts

    path = servers(plan)
    _, start = starts(path, np.arange(GANTT_ITEMS) * plan.interval_s)
    end = start + np.array([s.latency_s for s in path])[:, None]
    left, top, row = 170, 40, 18
    t1 = float(end.max()) or 1.0
    sx = lambda t: left + t / t1 * (width - left - 20)  # noqa: E731
    height = top + row * len(path) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="10" y="22" font-size="15" font-weight="bold">First {GANTT_ITEMS} requests at capacity (modeled)</text>']
    for j, s in enumerate(path):
        y = top + j * row
        parts.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(s.name)}</text>')
        for k in range(GANTT_ITEMS):
            x0, x1 = sx(start[j, k]), sx(end[j, k])
            parts.append(f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0, 1):.1f}" height="{row - 5}" '
                         f'fill="{PALETTE[k % len(PALETTE)]}" fill-opacity="0.55"><title>request {k}: '
                         f'{seconds(start[j, k])} - {seconds(end[j, k])}</title></rect>')
    parts.append(f'<text x="{left}" y="{height - 12}">0 s</text>'
                 f'<text x="{width - 20}" y="{height - 12}" text-anchor="end">{seconds(t1)}</text></svg>')
    return "".join(parts)


def relative_link(target: str, page: str) -> str:
    """`target`'s path as a link from an HTML file at `page` (both as given on the command line)."""
    return os.path.relpath(os.path.abspath(target), os.path.dirname(os.path.abspath(page))).replace(os.sep, "/")


def knee(sweep, capacity: float) -> str:
    """Where queueing sets in: the first offered load whose p99 is twice the lightest load's."""
    base = sweep[0][1].latency_p99_s
    for f, r in sweep:
        if r.latency_p99_s > 2 * base:
            return (f"knee: p99 passes twice its light-load value ({seconds(base)}) at {rate(f * capacity)} "
                    f"requests/s offered ({f:.0%} of the plan's capacity, {rate(capacity)}/s)")
    return f"no knee up to {SWEEP[-1]:.0%} of the plan's capacity ({rate(capacity)}/s)"


def write_report(path: str, plan, result, plan_report: str | None = None) -> None:
    """The page at `path`; `plan_report`: the plan report to link back to."""
    from conveyor.sim import simulate

    capacity = 1.0 / plan.interval_s
    sweep = [(f, simulate(plan, rate=f * capacity, requests=5000, arrivals="poisson", seed=0)) for f in SWEEP]
    chart = line_chart([Series("p50", [f * capacity for f, _ in sweep], [r.latency_p50_s * 1e3 for _, r in sweep]),
                       Series("p99", [f * capacity for f, _ in sweep], [r.latency_p99_s * 1e3 for _, r in sweep])],
                      title="Latency against offered load (Poisson, modeled)", x_label="offered requests/s",
                      y_label="latency ms")
    util = stage_bars([("utilisation", [(s.name, s.utilisation) for s in result.stages])],
                      title="Utilisation per server (this run)", unit="%", scale=100)
    summary = (f"throughput {rate(result.throughput_per_s)}/s; latency p50 {seconds(result.latency_p50_s)}, "
               f"p99 {seconds(result.latency_p99_s)}, p99.9 {seconds(result.latency_p999_s)}")
    if result.average_power_w is not None:
        summary += (f"; power {eng(result.average_power_w, 'W')}, {eng(result.energy_per_inference_j, 'J')}/inference, "
                    f"{result.inferences_per_j:.4g} inferences/J")
    notes = "".join(f"<li>{escape(n)}</li>" for n in result.notes)
    back = (f"<p>Plan report: <a class='plan-report' href='{escape(relative_link(plan_report, path))}'>"
            f"{escape(os.path.basename(plan_report))}</a></p>") if plan_report else ""
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>simulation: {escape(plan.model)}</title></head>"
            f"<body style='font-family:sans-serif'><h1>{escape(plan.model)} under load ({escape(plan.method)})</h1>"
            f"<p><b>Modeled</b>: times from the plan's cost model, power from conveyor/hardware/power.yaml "
            f"(docs/simulate.md).</p>{back}<p>{escape(summary)}</p><h2>Timeline</h2>{gantt(plan)}"
            f"<h2>Utilisation</h2>{util}<h2>Latency against load</h2>{chart}<p class='knee'>{escape(knee(sweep, capacity))}</p>"
            f"<ul class='notes'>{notes}</ul></body></html>")
    with open(path, "w") as f:
        f.write(html)
