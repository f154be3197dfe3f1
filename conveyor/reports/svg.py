"""A small inline-SVG chart writer (line and bar charts) for static reports.

Hand-written on purpose: the charts conveyor draws are simple, and a plotting library
would be a heavy dependency for the core package.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Sequence

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
HIGHLIGHT = "#d62728"  # marks the bar that matters (a plan's bottleneck)


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    dashed: bool = False


def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / n
    mag = 10 ** int(f"{step:e}".split("e")[1])
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= step), default=step)
    if integer:
        step = max(1, round(step))
    start = (lo // step) * step
    out, v = [], start
    while v <= hi + 1e-12:
        if v >= lo - 1e-12:
            out.append(round(v, 10))
        v += step
    return out


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
               width: int = 640, height: int = 400, y_range: tuple[float, float] | None = None) -> str:
    """An SVG document with one polyline (and markers) per series."""
    left, right, top, bottom = 64, 150, 40, 48
    xs = [x for s in series for x in s.xs]
    ys = [y for s in series for y in s.ys]
    x0, x1 = min(xs), max(xs)
    y0, y1 = y_range or (min(ys), max(ys))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pw, ph = width - left - right, height - top - bottom
    sx = lambda x: left + (x - x0) / (x1 - x0) * pw  # noqa: E731
    sy = lambda y: top + (1 - (y - y0) / (y1 - y0)) * ph  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
    ]
    for t in _ticks(x0, x1, integer=all(float(x).is_integer() for x in xs)):
        parts.append(f'<line x1="{sx(t):.1f}" y1="{top + ph}" x2="{sx(t):.1f}" y2="{top + ph + 4}" stroke="black"/>'
                     f'<text x="{sx(t):.1f}" y="{top + ph + 17}" text-anchor="middle">{t:g}</text>')
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{left - 4}" y1="{sy(t):.1f}" x2="{left + pw}" y2="{sy(t):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 7}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(s.xs, s.ys))
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        if not s.dashed:
            parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>' for x, y in zip(s.xs, s.ys))
        ly = top + 14 + 18 * i
        parts.append(f'<line x1="{left + pw + 12}" y1="{ly - 4}" x2="{left + pw + 32}" y2="{ly - 4}" stroke="{color}" '
                     f'stroke-width="2"{dash}/><text x="{left + pw + 38}" y="{ly}">{escape(s.label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def stage_bars(groups: Sequence[tuple[str, Sequence[tuple[str, float]]]], *, title: str, unit: str = "ms",
               scale: float = 1e3, reference: float | None = None, width: int = 760) -> str:
    """Horizontal bars, one group per plan: each stage's (label, seconds); a dashed line at
    `reference` seconds (the best plan's bottleneck). Groups with no bars are shown as notes."""
    bar_h, gap, left, right, top = 16, 14, 190, 90, 44
    rows = sum(max(1, len(bars)) + 1 for _, bars in groups) * bar_h + gap * len(groups)
    height = top + rows + 40
    vmax = max([v for _, bars in groups for _, v in bars] + [reference or 0.0]) or 1.0
    pw = width - left - right
    sx = lambda v: left + v / vmax * pw  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    y = top
    colors = [c for c in PALETTE if c != HIGHLIGHT]
    for gi, (name, bars) in enumerate(groups):
        color = colors[gi % len(colors)]
        parts.append(f'<text x="10" y="{y + 12}" font-weight="bold">{escape(name)}</text>')
        y += bar_h
        if not bars:
            parts.append(f'<text x="{left}" y="{y + 12}" fill="#888">does not fit the boards</text>')
            y += bar_h + gap
            continue
        worst = max(v for _, v in bars)
        for label, v in bars:
            fill = color if v < worst else HIGHLIGHT
            parts.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" fill="#444">{escape(label)}</text>'
                         f'<rect x="{left}" y="{y + 2}" width="{max(sx(v) - left, 1):.1f}" height="{bar_h - 4}" fill="{fill}"/>'
                         f'<text x="{sx(v) + 4:.1f}" y="{y + 12}">{v * scale:.3g} {unit}</text>')
            y += bar_h
        y += gap
    if reference:
        parts.append(f'<line x1="{sx(reference):.1f}" y1="{top - 6}" x2="{sx(reference):.1f}" y2="{y}" stroke="black" '
                     f'stroke-dasharray="5 4"/><text x="{sx(reference) + 4:.1f}" y="{top - 10}">best bottleneck '
                     f'{reference * scale:.3g} {unit}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
