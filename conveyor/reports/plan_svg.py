"""The drawings of the plan report, as inline SVG: the pipeline (boards and the links between
them, with each link's structure and the tensors crossing it), each board's resources against
its budget, and each plan's stage times.

Every label is placed from an estimate of its width that errs wide (CHAR_W pixels a
character), and every drawing is as wide as its widest label: nothing runs off the edge
and no two labels share a place (tests/test_reports_browser.py measures them in Chromium)."""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

from conveyor.units import eng, plural, seconds, span

FONT = 12
CHAR_W = 0.68 * FONT   # wider than DejaVu Sans' digits (0.636 em): estimates err wide
LINE = 16
LIMIT = 0.9            # a resource used to this fraction of its budget is "at its limit"
BLUE, RED, GREY, TRACK = "#1f77b4", "#d62728", "#888", "#e8e8e8"

RESOURCES = (("dsp", "DSP"), ("bram18k", "BRAM18K"), ("uram", "URAM"), ("lut", "LUT"), ("ff", "FF"),
             ("onchip_bytes", "on-chip memory"), ("memory_bytes", "memory"))


def text_width(text: str, size: float = FONT) -> float:
    return len(text) * CHAR_W * size / FONT


def _text(x, y, s, *, anchor="start", weight=None, fill=None, size=None, cls=None) -> str:
    attrs = [f'x="{x:.1f}"', f'y="{y:.1f}"']
    if anchor != "start":
        attrs.append(f'text-anchor="{anchor}"')
    if weight:
        attrs.append(f'font-weight="{weight}"')
    if fill:
        attrs.append(f'fill="{fill}"')
    if size:
        attrs.append(f'font-size="{size}"')
    if cls:
        attrs.append(f'class="{cls}"')
    return f"<text {' '.join(attrs)}>{escape(s)}</text>"


def _svg(width: float, height: float, body: Sequence[str], cls: str) -> str:
    w, h = int(width + 0.999), int(height + 0.999)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="{FONT}">'
            f'<rect width="{w}" height="{h}" fill="white"/>' + "".join(body) + "</svg>")


def _board_of(plan, device: str) -> str:
    for d in plan.cluster.get("devices", ()):
        if d.get("name") == device:
            return d.get("board") or d.get("host") or ""
    return ""


def pipeline_svg(plan) -> str:
    """Boards top to bottom; between two boards the link: its name, its structure (its own
    pipeline stage, or merged into the sender's stage), its time and bytes, and the tensors
    that cross it. The bottleneck is drawn red."""
    bottleneck = plan.bottleneck()
    pad, box_lines = 10, 3
    blocks = []  # (kind, lines, red)
    for i, s in enumerate(plan.stages):
        board = _board_of(plan, s.device)
        reps = f", {1 + len(s.replicas)} replicas ({', '.join((s.device,) + tuple(s.replicas))})" if s.replicas else ""
        lines = [f"{s.device}{f' ({board})' if board else ''}: {s.arch}{reps}",
                 f"{span(s.layers)}" + ("" if len(s.layers) > 1 else " (1 layer)"),
                 f"stage time {seconds(s.stage_time_s)}, latency {seconds(s.latency_s)}"]
        blocks.append(("board", lines, s.device == bottleneck))
        link = s.link_out
        if link is not None:
            mode = "its own pipeline stage" if link.mode == "stage" else "merged into the sender's stage"
            lines = [f"{link.link}: {mode}", f"{seconds(link.seconds)} and {eng(link.bytes, 'B')} per item",
                     f"crossing: {plural(len(link.tensors), 'tensor')}"] + [f"  {t}" for t in link.tensors]
            blocks.append(("link", lines, bottleneck == f"link {link.src}->{link.dst}"))
    arrow_x = 40
    box_w = max(text_width(l) for kind, lines, _ in blocks if kind == "board" for l in lines) + 2 * pad
    link_w = max([arrow_x + 14 + text_width(l) for kind, lines, _ in blocks if kind == "link" for l in lines] + [0])
    width = max(box_w, link_w) + 2 * pad
    y, body = pad, []
    for kind, lines, red in blocks:
        if kind == "board":
            h = box_lines * LINE + pad
            body.append(f'<rect class="board" x="{pad}" y="{y:.1f}" width="{box_w:.1f}" height="{h}" rx="4" '
                        f'fill="#f4f8fc" stroke="{RED if red else BLUE}" stroke-width="{2 if red else 1}"/>')
            for j, line in enumerate(lines):
                body.append(_text(2 * pad, y + pad / 2 + LINE * (j + 1) - 3, line, weight="bold" if j == 0 else None,
                                  fill=RED if red and j == 2 else None, cls="board-label"))
            y += h
        else:
            h = LINE * len(lines) + pad
            color = RED if red else "#555"
            body.append(f'<line class="link" x1="{pad + arrow_x}" y1="{y:.1f}" x2="{pad + arrow_x}" '
                        f'y2="{y + h - 6:.1f}" stroke="{color}" stroke-width="2"'
                        + (' stroke-dasharray="5 3"' if "merged" in lines[0] else "") + "/>"
                        f'<path d="M{pad + arrow_x - 5},{y + h - 8:.1f} l5,8 l5,-8 z" fill="{color}"/>')
            for j, line in enumerate(lines):
                body.append(_text(pad + arrow_x + 14, y + pad / 2 + LINE * (j + 1) - 4, line,
                                  fill=GREY if j >= 3 else None, cls="link-label"))
            y += h
    return _svg(width, y + pad, body, "pipeline")


def resource_svg(stage, title: str) -> str:
    """A board's resources as bars against its budget (the budget is the full track); red where
    the use is at or past LIMIT of the budget."""
    rows = [(label, stage.resources[key], stage.budget[key]) for key, label in RESOURCES
            if key in stage.resources and key in stage.budget]
    label_w = max([text_width(lbl) for lbl, _, _ in rows] + [0]) + 12
    track = 220

    def value(key_label, used, budget):
        pct = math.floor(100 * used / max(budget, 1))  # rounded down: "90%" is at the limit, 89.6 % is not
        if key_label in ("memory", "on-chip memory"):
            return f"{eng(used, 'B')} / {eng(budget, 'B')} ({pct}%)"
        return f"{used:,} / {budget:,} ({pct}%)"

    value_w = max([text_width(value(*r)) for r in rows] + [0])
    width = max(label_w + track + 10 + value_w, text_width(title, FONT + 1)) + 20
    body = [_text(10, 18, title, weight="bold", cls="resource-title")]
    y = 30
    if not rows:
        body.append(_text(10, y + 12, "no resources modeled for this device", fill=GREY, cls="resource-label"))
        y += LINE
    for lbl, used, budget in rows:
        frac = used / max(budget, 1)
        fill = RED if frac >= LIMIT else BLUE
        body.append(_text(10, y + 12, lbl, cls="resource-label"))
        body.append(f'<rect x="{10 + label_w:.1f}" y="{y + 2}" width="{track}" height="{LINE - 4}" fill="{TRACK}"/>'
                    f'<rect class="use{" at-limit" if frac >= LIMIT else ""}" x="{10 + label_w:.1f}" y="{y + 2}" '
                    f'width="{track * min(frac, 1.0):.1f}" height="{LINE - 4}" fill="{fill}"/>')
        body.append(_text(10 + label_w + track + 8, y + 12, value(lbl, used, budget),
                          fill=RED if frac >= LIMIT else None, cls="resource-value"))
        y += LINE + 2
    return _svg(width, y + 8, body, "resources")


def stage_chart(rows: Sequence[tuple[str, float]], vmax: float, reference: float | None,
                note: str | None = None) -> str:
    """One plan's stage times as bars on a shared scale `vmax` (seconds); its slowest stage red;
    a dashed line at `reference` (the best plan's bottleneck), named in a legend under the bars."""
    label_w = max([text_width(lbl) for lbl, _ in rows] + [text_width("stage")]) + 12
    plot_w = 260
    value_w = max([text_width(seconds(v)) for _, v in rows] + [0]) + 12
    legend = f"dashed: conveyor's bottleneck, {seconds(reference)}" if reference else ""
    width = max(label_w + plot_w + value_w, text_width(legend), text_width(note or "")) + 20
    sx = lambda v: 10 + label_w + plot_w * v / (vmax or 1.0)  # noqa: E731
    body, y = [], 8
    if not rows:
        body.append(_text(10, y + 12, note or "no stages", fill=GREY, cls="chart-note"))
        return _svg(width, y + LINE + 10, body, "stages")
    worst = max(v for _, v in rows)
    for lbl, v in rows:
        body.append(_text(10 + label_w - 6, y + 12, lbl, anchor="end", fill="#444", cls="bar-label"))
        body.append(f'<rect class="bar" x="{10 + label_w:.1f}" y="{y + 2}" width="{max(sx(v) - 10 - label_w, 1):.1f}" '
                    f'height="{LINE - 4}" fill="{RED if v >= worst else BLUE}"/>')
        x = sx(v) + 4
        if reference and x - 4 <= sx(reference) + 2 and sx(reference) - 2 <= x + text_width(seconds(v)):
            x = sx(reference) + 4  # the value would sit on the dashed line: past it instead
        body.append(_text(x, y + 12, seconds(v), cls="bar-value"))
        y += LINE
    if reference:
        body.append(f'<line x1="{sx(reference):.1f}" y1="4" x2="{sx(reference):.1f}" y2="{y + 2}" stroke="black" '
                    f'stroke-dasharray="5 4"/>')
        body.append(_text(10, y + 16, legend, fill="#444", cls="chart-legend"))
        y += LINE + 4
    if note:
        body.append(_text(10, y + 16, note, fill=GREY, cls="chart-note"))
        y += LINE + 4
    return _svg(width, y + 8, body, "stages")
