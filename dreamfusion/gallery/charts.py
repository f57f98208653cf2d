"""Line charts as inline SVG: a page of curves that needs no plotting library and no script."""
from __future__ import annotations

import html
import math
from typing import Sequence

COLOURS = ("#4a7fb5", "#c0504d", "#6a9a3a", "#8064a2", "#d08a2c")


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Centred moving average (SDS losses are noise around a trend)."""
    if window <= 1:
        return list(values)
    half, out = window // 2, []
    for i in range(len(values)):
        part = values[max(0, i - half): i + half + 1]
        out.append(sum(part) / len(part))
    return out


def _thin(xs: list[float], ys: list[float], most: int) -> tuple[list[float], list[float]]:
    step = max(1, math.ceil(len(xs) / most))
    return xs[::step], ys[::step]


def line_chart(title: str, series: dict[str, tuple[list[float], list[float]]], width: int = 420, height: int = 180,
               smooth_window: int = 1, log_y: bool = False) -> str:
    """An SVG chart of named (x, y) series, with the raw values faint under their moving average."""
    finite = {k: [(x, y) for x, y in zip(*v) if math.isfinite(y) and (y > 0 or not log_y)] for k, v in series.items()}
    finite = {k: v for k, v in finite.items() if v}
    if not finite:
        return f'<div class="chart empty">{html.escape(title)}: nothing recorded</div>'
    fy = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    xs = [x for v in finite.values() for x, _ in v]
    ys = [fy(y) for v in finite.values() for _, y in v]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 46, 8, 20, 22
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: top + (1 - (fy(y) - y0) / (y1 - y0)) * (height - top - bottom)  # noqa: E731
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<text x="{left}" y="13" class="title">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" class="frame"/>']
    for value, label in ((y0, "min"), (y1, "max")):
        shown = 10 ** value if log_y else value
        parts.append(f'<text x="{left - 4}" y="{sy(shown) + 4:.1f}" class="tick" text-anchor="end">{shown:.3g}</text>')
    parts.append(f'<text x="{left}" y="{height - 6}" class="tick">{x0:g}</text>')
    parts.append(f'<text x="{width - right}" y="{height - 6}" class="tick" text-anchor="end">{x1:g}</text>')
    for i, (name, points) in enumerate(finite.items()):
        colour = COLOURS[i % len(COLOURS)]
        px, py = _thin([x for x, _ in points], [y for _, y in points], 600)
        lines = [(py, 0.25)] if smooth_window > 1 else []
        lines.append((smooth(py, max(1, smooth_window // max(1, math.ceil(len(points) / 600)))), 1.0))
        for values, opacity in lines:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(px, values) if not log_y or y > 0)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.3" opacity="{opacity}"/>')
        parts.append(f'<text x="{width - right - 4}" y="{top + 14 + 13 * i}" class="legend" text-anchor="end" '
                     f'fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
