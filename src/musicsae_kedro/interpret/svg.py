"""Tiny inline SVG charts for the report (no external assets, no JavaScript)."""

from __future__ import annotations

import html

import numpy as np


def _num(value: float) -> str:
    return f"{value:.1f}"


def line_chart(
    x: np.ndarray,
    y: np.ndarray,
    width: int = 260,
    height: int = 60,
    title: str = "",
    x_label: str = "",
) -> str:
    """A polyline of ``y`` over ``x`` with a baseline; ``title`` becomes a tooltip."""
    pad = 4
    inner_w, inner_h = width - 2 * pad, height - 2 * pad - (10 if x_label else 0)
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
    ]
    if title:
        parts.append(f"<title>{html.escape(title)}</title>")
    base_y = pad + inner_h
    parts.append(
        f'<line x1="{pad}" y1="{base_y}" x2="{pad + inner_w}" y2="{base_y}" class="axis"/>'
    )
    if x.size:
        x0, x1 = float(x.min()), float(x.max())
        y1 = float(max(y.max(), 0.0)) if y.size else 0.0
        sx = inner_w / (x1 - x0) if x1 > x0 else 0.0
        sy = inner_h / y1 if y1 > 0 else 0.0
        points = " ".join(
            f"{_num(pad + (xi - x0) * sx)},{_num(base_y - max(yi, 0.0) * sy)}"
            for xi, yi in zip(x.tolist(), y.tolist())
        )
        parts.append(f'<polyline points="{points}" class="line"/>')
    if x_label:
        parts.append(f'<text x="{pad}" y="{height - 2}" class="tick">{html.escape(x_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    values: np.ndarray,
    bins: int,
    width: int = 420,
    height: int = 140,
    x_label: str = "",
) -> str:
    """Bars of a histogram of ``values`` with the range and the tallest count labelled."""
    pad, label_h = 6, 14
    inner_w, inner_h = width - 2 * pad, height - 2 * pad - 2 * label_h
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
    ]
    base_y = pad + label_h + inner_h
    if values.size:
        counts, edges = np.histogram(values, bins=bins)
        top = max(int(counts.max()), 1)
        bar_w = inner_w / bins
        for i, count in enumerate(counts.tolist()):
            h = inner_h * count / top
            parts.append(
                f'<rect x="{_num(pad + i * bar_w)}" y="{_num(base_y - h)}" '
                f'width="{_num(max(bar_w - 1, 0.5))}" height="{_num(h)}" class="bar">'
                f"<title>{count} in [{edges[i]:.2f}, {edges[i + 1]:.2f})</title></rect>"
            )
        parts.append(
            f'<text x="{pad}" y="{pad + 10}" class="tick">max {top}</text>'
            f'<text x="{pad}" y="{height - 4}" class="tick">{edges[0]:.2f}</text>'
            f'<text x="{width - pad}" y="{height - 4}" class="tick" text-anchor="end">'
            f"{edges[-1]:.2f}</text>"
        )
    parts.append(
        f'<line x1="{pad}" y1="{base_y}" x2="{pad + inner_w}" y2="{base_y}" class="axis"/>'
    )
    if x_label:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height - 4}" class="tick" text-anchor="middle">'
            f"{html.escape(x_label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
