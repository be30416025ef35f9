"""The maths of the page's SVG charts: axis ticks, scales, the palette and legends."""

from __future__ import annotations

import math

from .text import duration, esc

PALETTE = ["#2563eb", "#16a34a", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4f46e5", "#65a30d", "#0d9488",
            "#c2410c", "#7c3aed", "#be123c"]


def _nice_step(span: float, target: int = 6) -> float:
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    step = _nice_step(hi - lo, target)
    first = (lo // step) * step
    out, v = [], first
    while v <= hi + step * 1e-9:
        if v >= lo - step * 1e-9:
            out.append(round(v, 10))
        v += step
    return out


def time_axis(span: float, x0: float, width: float, y: float, height: float) -> str:
    out = []
    for t in ticks(0, span or 1):
        x = x0 + (t / (span or 1)) * width
        if height:
            out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{y - height:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{y + 14:.1f}" text-anchor="middle">{esc(duration(t) if t else "0")}'
                   "</text>")
    return "".join(out)


def legend(items: list[tuple[str, str]]) -> str:
    return '<p class="legend">' + "".join(
        f'<span><i class="{esc(cls)}"></i>{esc(text)}</span>' for cls, text in items) + "</p>"


def data_scale(peak: float) -> float:
    """A y range just above the data that ends on a labelled tick."""
    top = max(peak * 1.1, 10)
    step = _nice_step(top, 5)
    return math.ceil(top / step) * step
