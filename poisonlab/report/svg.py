"""A small SVG canvas for the report's charts: shapes, text, axes with ticks, a legend; no dependency.

Why not matplotlib for the federated report: importing it takes ~0.45 s and drawing the five figures
of the tutorial run ~0.7-1.0 s on a 2-core machine, where writing the same figures as SVG text takes
milliseconds (docs/benchmarks.md, "Reports"). The report embeds each SVG as an <img> data URI, so it stays
one self-contained file that works offline, and text from a run (a run name) is escaped here.
"""

from __future__ import annotations

import math
from html import escape

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"


def _n(value: float) -> str:
    """A coordinate with two decimals at most (short files, no '1e-05')."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


class Canvas:
    """An SVG document of width x height pixels, built shape by shape."""

    def __init__(self, width: float, height: float):
        self.width, self.height = width, height
        self.parts: list[str] = [f'<rect width="{_n(width)}" height="{_n(height)}" fill="#ffffff"/>']

    def rect(self, x, y, w, h, fill, stroke=None, opacity=None, stroke_width=1.0) -> None:
        extra = (f' stroke="{stroke}" stroke-width="{_n(stroke_width)}"' if stroke else "") + \
                (f' fill-opacity="{_n(opacity)}"' if opacity is not None else "")
        self.parts.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="{fill}"{extra}/>')

    def line(self, x1, y1, x2, y2, stroke, width=1.0, dash=None, opacity=None) -> None:
        extra = (f' stroke-dasharray="{dash}"' if dash else "") + (f' stroke-opacity="{_n(opacity)}"' if opacity else "")
        self.parts.append(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" '
                          f'stroke-width="{_n(width)}"{extra}/>')

    def polyline(self, points, stroke, width=2.0, dash=None, opacity=None) -> None:
        if len(points) < 2:
            return
        coords = " ".join(f"{_n(x)},{_n(y)}" for x, y in points)
        extra = (f' stroke-dasharray="{dash}"' if dash else "") + (f' stroke-opacity="{_n(opacity)}"' if opacity else "")
        self.parts.append(f'<polyline points="{coords}" fill="none" stroke="{stroke}" stroke-width="{_n(width)}" '
                          f'stroke-linejoin="round"{extra}/>')

    def marker(self, kind: str, x, y, r, fill, stroke=None, opacity=None) -> None:
        """A point: 'o' circle, 's' square, '^' triangle, 'D' diamond, 'x' cross (drawn with fill as its stroke)."""
        extra = (f' stroke="{stroke}" stroke-width="0.6"' if stroke else "") + \
                (f' fill-opacity="{_n(opacity)}"' if opacity is not None else "")
        if kind == "o":
            self.parts.append(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{_n(r)}" fill="{fill}"{extra}/>')
        elif kind == "s":
            self.rect(x - r, y - r, 2 * r, 2 * r, fill, stroke, opacity, 0.6)
        elif kind == "x":
            self.line(x - r, y - r, x + r, y + r, fill, 1.8)
            self.line(x - r, y + r, x + r, y - r, fill, 1.8)
        else:
            pts = ([(x, y - 1.2 * r), (x + 1.1 * r, y + 0.8 * r), (x - 1.1 * r, y + 0.8 * r)] if kind == "^"
                   else [(x, y - 1.3 * r), (x + r, y), (x, y + 1.3 * r), (x - r, y)])
            coords = " ".join(f"{_n(a)},{_n(b)}" for a, b in pts)
            self.parts.append(f'<polygon points="{coords}" fill="{fill}"{extra}/>')

    def text(self, x, y, text, size=12.0, anchor="middle", fill="#222222", bold=False, rotate=0.0) -> None:
        """Escaped text whose baseline centre (anchor 'middle'), start or end is at (x, y)."""
        turn = f' transform="rotate({_n(rotate)} {_n(x)} {_n(y)})"' if rotate else ""
        weight = ' font-weight="bold"' if bold else ""
        self.parts.append(f'<text x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" text-anchor="{anchor}" '
                          f'fill="{fill}"{weight}{turn}>{escape(str(text))}</text>')

    def svg(self) -> str:
        """The document as text."""
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(self.width)}" height="{_n(self.height)}" '
                f'viewBox="0 0 {_n(self.width)} {_n(self.height)}" font-family="{FONT}">'
                + "".join(self.parts) + "</svg>")


def nice_ticks(lo: float, hi: float, count: int = 6, integer: bool = False) -> list[float]:
    """Round tick values (steps 1, 2 or 5 x 10^n) covering [lo, hi], about count of them (Heckbert's
    'nice numbers', Graphics Gems 1990); integer ticks only when integer is set."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    ticks, v = [], first
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def tick_text(value: float) -> str:
    """A tick label: an integer without decimals, else the shortest of up to 3 significant digits."""
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


class Axes:
    """A plot area at (x, y, w, h) pixels on a canvas mapping data (xlim, ylim) onto it; log y on request."""

    def __init__(self, canvas: Canvas, box: tuple[float, float, float, float], xlim, ylim, log_y: bool = False):
        self.c, (self.x, self.y, self.w, self.h) = canvas, box
        self.xlim, self.ylim, self.log_y = xlim, ylim, log_y

    def px(self, v: float) -> float:
        lo, hi = self.xlim
        return self.x + (v - lo) / (hi - lo or 1) * self.w

    def py(self, v: float) -> float:
        lo, hi = self.ylim
        if self.log_y:
            v, lo, hi = (math.log10(max(t, 1e-300)) for t in (v, lo, hi))
        return self.y + self.h - (v - lo) / (hi - lo or 1) * self.h

    def frame(self, title: str, xlabel: str, ylabel: str, xticks=None, yticks=None, grid: bool = True,
              xtick_labels=None, ytick_labels=None, rotate_x: bool = False) -> None:
        """Border, grid lines, ticks with labels, axis labels and title."""
        c = self.c
        if xticks is None:
            xticks = nice_ticks(*self.xlim)
        if yticks is None:
            yticks = self._log_ticks() if self.log_y else nice_ticks(*self.ylim)
        for i, t in enumerate(xticks):
            x = self.px(t)
            if grid:
                c.line(x, self.y, x, self.y + self.h, "#dddddd", 0.8)
            label = xtick_labels[i] if xtick_labels is not None else tick_text(t)
            if rotate_x:
                c.text(x, self.y + self.h + 14, label, 10, "end", rotate=-45)
            else:
                c.text(x, self.y + self.h + 15, label, 10)
        for i, t in enumerate(yticks):
            y = self.py(t)
            if grid:
                c.line(self.x, y, self.x + self.w, y, "#dddddd", 0.8)
            c.text(self.x - 6, y + 4, ytick_labels[i] if ytick_labels is not None else tick_text(t), 10, "end")
        c.rect(self.x, self.y, self.w, self.h, "none", "#444444", stroke_width=0.9)
        c.text(self.x + self.w / 2, self.y - 9, title, 13)
        c.text(self.x + self.w / 2, self.y + self.h + (44 if rotate_x else 34), xlabel, 11.5)
        c.text(self.x - 44, self.y + self.h / 2, ylabel, 11.5, rotate=-90)

    def _log_ticks(self) -> list[float]:
        lo, hi = (math.log10(max(v, 1e-300)) for v in self.ylim)
        return [10.0 ** e for e in range(math.ceil(lo), math.floor(hi) + 1)]


def legend(canvas: Canvas, items: list[tuple[str, str, str]], y: float, per_row: int = 4) -> None:
    """A centred legend at height y: (kind, colour, label) items, kind a marker ('o', '^', 'x', 's') or 'line'
    or 'patch'; at most per_row items a row."""
    rows = [items[i:i + per_row] for i in range(0, len(items), per_row)]
    for r, row in enumerate(rows):
        widths = [34 + 6.6 * len(label) for _, _, label in row]
        x = (canvas.width - sum(widths)) / 2
        yy = y + 20 * r
        for (kind, color, label), w in zip(row, widths):
            if kind == "line":
                canvas.line(x, yy - 4, x + 22, yy - 4, color, 2.5)
            elif kind == "patch":
                canvas.rect(x + 4, yy - 11, 14, 12, color, "#999999")
            else:
                canvas.marker(kind, x + 11, yy - 4, 4.5, color, "#000000" if kind == "^" else None)
            canvas.text(x + 28, yy, label, 11, "start")
            x += w


def legend_height(count: int, per_row: int = 4) -> float:
    """Pixels a legend of count items takes."""
    return 20 * -(-count // per_row) + 8 if count else 0
