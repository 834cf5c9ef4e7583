"""Small charts as inline SVG (drawn by the browser: milliseconds to build, crisp, readable in the DOM).

matplotlib takes a second or more per figure on a busy 2-core CPU, more than the app's 2 s budget per
interaction allows, so the views draw their charts here instead.
"""

from __future__ import annotations

import html
import math

WIDTH, HEIGHT = 420, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 26, 34
# The style of the views' HTML tables (passed to each ``gr.HTML`` as its ``css_template``).
TABLE_CSS = """
.coda-table { border-collapse: collapse; font-size: 13px; }
.coda-table td, .coda-table th { border: 1px solid #8884; padding: 3px 8px; text-align: left; }
"""
PALETTE = ("#2563eb", "#dc2626", "#059669", "#7c3aed", "#d97706", "#0891b2")


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    start = math.ceil(low / step) * step
    return [start + i * step for i in range(int((high - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


class _Frame:
    """Maps data coordinates into the plot area and draws the axes, ticks and labels."""

    def __init__(self, x_range, y_range, title: str, xlabel: str, ylabel: str):
        (self.x0, self.x1), (self.y0, self.y1) = x_range, y_range
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 0.5, self.x1 + 0.5
        if self.y1 == self.y0:
            self.y0, self.y1 = self.y0 - 0.5, self.y1 + 0.5
        self.parts = [f"<text x='{WIDTH / 2}' y='16' text-anchor='middle' font-size='12' font-weight='600'>{html.escape(title)}</text>",
                      f"<text x='{WIDTH / 2}' y='{HEIGHT - 4}' text-anchor='middle' font-size='11'>{html.escape(xlabel)}</text>",
                      f"<text x='12' y='{HEIGHT / 2}' text-anchor='middle' font-size='11' transform='rotate(-90 12 {HEIGHT / 2})'>{html.escape(ylabel)}</text>"]  # fmt: skip
        for y in _ticks(self.y0, self.y1):
            py = self.py(y)
            self.parts.append(f"<line x1='{PAD_LEFT}' x2='{WIDTH - PAD_RIGHT}' y1='{py:.1f}' y2='{py:.1f}' stroke='#e5e7eb'/>"
                              f"<text x='{PAD_LEFT - 4}' y='{py + 4:.1f}' text-anchor='end' font-size='10'>{_fmt(y)}</text>")  # fmt: skip

    def px(self, x: float) -> float:
        return PAD_LEFT + (x - self.x0) / (self.x1 - self.x0) * (WIDTH - PAD_LEFT - PAD_RIGHT)

    def py(self, y: float) -> float:
        return HEIGHT - PAD_BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - PAD_TOP - PAD_BOTTOM)

    def svg(self, css_class: str) -> str:
        axes = (f"<line x1='{PAD_LEFT}' x2='{PAD_LEFT}' y1='{PAD_TOP}' y2='{HEIGHT - PAD_BOTTOM}' stroke='#6b7280'/>"
                f"<line x1='{PAD_LEFT}' x2='{WIDTH - PAD_RIGHT}' y1='{HEIGHT - PAD_BOTTOM}' y2='{HEIGHT - PAD_BOTTOM}' stroke='#6b7280'/>")  # fmt: skip
        return (f"<svg class='{css_class}' xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
                f"viewBox='0 0 {WIDTH} {HEIGHT}' font-family='sans-serif'>{''.join(self.parts)}{axes}</svg>")  # fmt: skip


def bars(values: list[float], title: str, xlabel: str, ylabel: str, color: str = PALETTE[0]) -> str:
    """A bar per value (x = its index), each with a hover title giving the exact number."""
    low, high = min(0.0, *values), max(0.0, *values)
    frame = _Frame((-0.5, len(values) - 0.5), (low, high * 1.05 if high > 0 else high), title, xlabel, ylabel)
    width = 0.8 * (frame.px(1) - frame.px(0))
    for i, v in enumerate(values):
        top, bottom = sorted((frame.py(v), frame.py(0.0)))
        frame.parts.append(f"<rect class='bar' x='{frame.px(i) - width / 2:.1f}' y='{top:.1f}' width='{width:.1f}' "
                           f"height='{max(bottom - top, 0.5):.1f}' fill='{color}'><title>{i}: {v:.4g}</title></rect>")  # fmt: skip
    if len(values) <= 20:
        for i in range(len(values)):
            frame.parts.append(f"<text x='{frame.px(i):.1f}' y='{HEIGHT - PAD_BOTTOM + 12}' text-anchor='middle' font-size='9'>{i}</text>")
    return frame.svg("chart-bars")


def lines(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str,
          hline: tuple[str, float] | None = None, highlight: tuple[float, float] | None = None,
          labels: list[tuple[float, float, str]] | None = None) -> str:  # fmt: skip
    """Line charts with point markers; ``hline`` a labelled reference level; ``highlight`` a circled point."""
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts] + ([hline[1]] if hline else [])
    span, x_span = (max(ys) - min(ys)) or 1.0, (max(xs) - min(xs)) or 1.0
    x_pad = 0.15 * x_span if labels else 0.02 * x_span  # room for the point labels
    frame = _Frame((min(xs) - 0.02 * x_span, max(xs) + x_pad), (min(ys) - 0.05 * span, max(ys) + 0.05 * span),
                   title, xlabel, ylabel)  # fmt: skip
    for x in _ticks(min(xs), max(xs), 6):
        frame.parts.append(f"<text x='{frame.px(x):.1f}' y='{HEIGHT - PAD_BOTTOM + 12}' text-anchor='middle' font-size='9'>{_fmt(x)}</text>")
    for k, (name, pts) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        path = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in pts)
        frame.parts.append(f"<polyline class='series' points='{path}' fill='none' stroke='{color}' stroke-width='2'/>")
        frame.parts += [f"<circle cx='{frame.px(x):.1f}' cy='{frame.py(y):.1f}' r='3' fill='{color}'><title>{html.escape(name)}: "
                        f"({_fmt(x)}, {_fmt(y)})</title></circle>" for x, y in pts]  # fmt: skip
        frame.parts.append(f"<text x='{WIDTH - PAD_RIGHT - 4}' y='{PAD_TOP + 12 * (k + 1)}' text-anchor='end' font-size='10' "
                           f"fill='{color}'>{html.escape(name)}</text>")  # fmt: skip
    if hline:
        py = frame.py(hline[1])
        frame.parts.append(f"<line x1='{PAD_LEFT}' x2='{WIDTH - PAD_RIGHT}' y1='{py:.1f}' y2='{py:.1f}' stroke='#6b7280' "
                           f"stroke-dasharray='4 3'/><text x='{PAD_LEFT + 4}' y='{py - 3:.1f}' font-size='10'>{html.escape(hline[0])}</text>")  # fmt: skip
    for x, y, text in labels or []:
        frame.parts.append(f"<text x='{frame.px(x) + 5:.1f}' y='{frame.py(y) - 5:.1f}' font-size='10'>{html.escape(text)}</text>")
    if highlight:
        frame.parts.append(f"<circle cx='{frame.px(highlight[0]):.1f}' cy='{frame.py(highlight[1]):.1f}' r='9' fill='none' "
                           f"stroke='#dc2626' stroke-width='2'/>")  # fmt: skip
    return frame.svg("chart-lines")


def row(*svgs: str) -> str:
    """Charts next to each other (wrapping on narrow screens)."""
    return "<div style='display:flex; flex-wrap:wrap; gap:12px'>" + "".join(svgs) + "</div>"
