"""Inline SVG line charts over training checkpoints, with a movable mark at the current step.

Checkpoints are spaced equally along x (runs save them log-spaced), labelled with their steps.
The chart carries ``data-steps`` and ``data-xs`` (each step's x) so the page's script can move the
mark (``<line class="mark">``) to the slider's step; without the script the mark stays where it
was drawn.

>>> svg = line_chart([0, 10, 100], [("loss", [2.0, 1.0, None], "a")], mark=1)
>>> "<polyline" in svg and 'data-steps="0,10,100"' in svg and "class='mark'" in svg
True
"""

from __future__ import annotations

import html
import math
from typing import Sequence

W, H, LEFT, RIGHT, TOP, BOTTOM = 520, 176, 52, 12, 18, 30


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def line_chart(steps: Sequence[int], series: Sequence[tuple[str, Sequence[float | None], str]], *,
               mark: int | None = None, title: str = "", hlines: Sequence[tuple[float, str]] = (),
               points: Sequence[tuple[int, float, str, str]] = (), vlines: Sequence[tuple[int, str, str]] = (),
               bands: Sequence[tuple[Sequence[float | None], Sequence[float | None], str]] = (),
               ylim: tuple[float, float] | None = None) -> str:
    """An SVG chart: one polyline per ``(name, values, css class)`` of ``series`` over ``steps``.

    ``mark``: index of the step marked (None: no mark); ``hlines``: ``(y, label)`` reference lines;
    ``points``: ``(index, y, css class, tooltip)`` dots; ``vlines``: ``(index, css class, tooltip)``;
    ``bands``: ``(low, high, css class)`` shaded ranges. Missing values (None, NaN) leave gaps.
    ``ylim``: ``(low, high)`` of the y axis (default: every value); a value beyond it is drawn at the edge,
    and a point there carries its number (class ``offscale``).
    """
    n = len(steps)
    ys = [v for _, vals, _ in series for v in vals if _finite(v)] + [y for y, _ in hlines if _finite(y)]
    ys += [p[1] for p in points if _finite(p[1])] + [v for lo, hi, _ in bands for v in (*lo, *hi) if _finite(v)]
    if n == 0 or not ys:
        return f"<p class='note'>{html.escape(title)}: no values.</p>"
    lo, hi = (min(ys), max(ys)) if ylim is None else (float(ylim[0]), float(ylim[1]))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.06
    lo, hi = lo - pad, hi + pad
    xs = [LEFT + (W - LEFT - RIGHT) * (i / (n - 1) if n > 1 else 0.5) for i in range(n)]

    def y(v: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (1 - (min(max(v, lo), hi) - lo) / (hi - lo))

    parts = [f"<rect x='{LEFT}' y='{TOP}' width='{W - LEFT - RIGHT}' height='{H - TOP - BOTTOM}' class='frame'/>"]
    for v in (lo + pad, (lo + hi) / 2, hi - pad):
        shown = 0.0 if abs(v) < (hi - lo) * 1e-3 else v  # no 0.000652 for a tick at zero
        parts.append(f"<text x='{LEFT - 4}' y='{y(v) + 4:.1f}' class='ytick'>{_fmt(shown)}</text>")
    every = max(1, math.ceil(n / 10))
    for i, s in enumerate(steps):
        if i % every == 0 or i == n - 1:
            parts.append(f"<text x='{xs[i]:.1f}' y='{H - BOTTOM + 14}' class='xtick'>{s}</text>")
    for low, high, cls in bands:
        pts = [(xs[i], y(v)) for i, v in enumerate(high) if i < n and _finite(v)]
        pts += [(xs[i], y(v)) for i, v in reversed(list(enumerate(low))) if i < n and _finite(v)]
        if len(pts) >= 3:
            parts.append(f"<polygon class='{cls}' points='{' '.join(f'{a:.1f},{b:.1f}' for a, b in pts)}'/>")
    for v, label in hlines:
        parts.append(f"<line class='ref' x1='{LEFT}' x2='{W - RIGHT}' y1='{y(v):.1f}' y2='{y(v):.1f}'>"
                     f"<title>{html.escape(label)}</title></line>")
    for i, cls, tip in vlines:
        parts.append(f"<line class='{cls}' x1='{xs[i]:.1f}' x2='{xs[i]:.1f}' y1='{TOP}' y2='{H - BOTTOM}'>"
                     f"<title>{html.escape(tip)}</title></line>")
    for name, vals, cls in series:
        run: list[str] = []
        for i, v in enumerate(list(vals)[:n] + [None]):
            if _finite(v):
                run.append(f"{xs[i]:.1f},{y(v):.1f}")
            elif run:
                parts.append(f"<polyline class='{cls}' points='{' '.join(run)}'><title>{html.escape(name)}</title>"
                             "</polyline>" if len(run) > 1 else
                             f"<circle class='{cls}' r='2' cx='{run[0].split(',')[0]}' cy='{run[0].split(',')[1]}'/>")
                run = []
    off = 0  # off-scale labels so far: neighbours alternate between two rows
    for i, v, cls, tip in points:
        if _finite(v):
            parts.append(f"<circle class='{cls}' r='4' cx='{xs[i]:.1f}' cy='{y(v):.1f}'><title>{html.escape(tip)}"
                         "</title></circle>")
            if not lo <= v <= hi:  # off the scale: its number beside the edge
                below, row = v < lo, 11 * (off % 2)
                parts.append(f"<text class='offscale' x='{xs[i] + 6:.1f}' "
                             f"y='{y(v) + (-6 - row if below else 12 + row):.1f}'>{'▼' if below else '▲'} {_fmt(v)}</text>")
                off += 1
    if mark is not None and 0 <= mark < n:
        parts.append(f"<line class='mark' x1='{xs[mark]:.1f}' x2='{xs[mark]:.1f}' y1='{TOP}' y2='{H - BOTTOM}'/>")
    legend = " · ".join(f"<tspan class='{cls}-t'>{html.escape(name)}</tspan>" for name, _, cls in series)
    head = f"<text x='{LEFT}' y='{TOP - 2}' class='legend'>{legend}</text>" if len(series) > 1 else ""
    return (f"<svg class='chart' viewBox='0 0 {W} {H}' width='{W}' height='{H}' role='img' "
            f"aria-label='{html.escape(title)}' data-steps=\"{','.join(str(s) for s in steps)}\" "
            f"data-xs=\"{','.join(f'{x:.1f}' for x in xs)}\"><title>{html.escape(title)}</title>{head}"
            f"{''.join(parts)}</svg>")
