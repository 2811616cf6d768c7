"""Small HTML formatters shared by the report pages: percentages, durations, escaped text, tables, images.

Cells and tables take already-escaped HTML; everything that turns a value into text escapes it here.
A value that is missing, NaN or infinite reads "not measured", never a number.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Sequence
from html import escape

from poisonlab.report import data

NOT_MEASURED = '<span class="na">not measured</span>'
NOT_RUN = '<span class="na">not run</span>'


def pct(value) -> str:
    """A fraction as '97.31%', or 'not measured'."""
    v = data.num(value)
    return NOT_MEASURED if math.isnan(v) else f"{100 * v:.2f}%"


def seconds(value) -> str:
    """A duration: '0.42 s', '12.3 s', '2 min 05 s', or 'not measured'."""
    v = data.num(value)
    if math.isnan(v) or v < 0:
        return NOT_MEASURED
    if v < 10:
        return f"{v:.2f} s"
    if v < 60:
        return f"{v:.1f} s"
    minutes, rest = divmod(round(v), 60)
    return f"{minutes} min {rest:02d} s"


def text(value) -> str:
    """Any value as escaped text ('not measured' for None)."""
    return NOT_MEASURED if value is None else escape(str(value))


def svg_img(svg: str, alt: str) -> str:
    """An <img> holding an SVG document (report/svg.py) as a base64 data URI, at the size its root element gives.

    An <img> rather than inline SVG: the drawing cannot reach the page (no styles, no scripts, no ids), and
    it keeps its alt text like the PNG figures."""
    width, height = (re.search(rf'{k}="([0-9.]+)"', svg).group(1) for k in ("width", "height"))
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f'<figure><img src="{uri}" alt="{escape(alt)}" width="{round(float(width))}" height="{round(float(height))}"></figure>'


def img(png: bytes, alt: str, enlarge_to: int = 0) -> str:
    """An <img> holding the PNG as a base64 data URI, with its display size.

    A PNG narrower than `enlarge_to` pixels is shown an integer factor larger, with crisp
    (pixelated) scaling, so tiny trigger images stay visible.
    """
    width, height = struct.unpack(">II", png[16:24])
    scale = max(1, min(8, enlarge_to // max(width, 1)))
    style = ' style="image-rendering:pixelated"' if scale > 1 else ""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="{uri}" alt="{escape(alt)}" width="{width * scale}" '
            f'height="{height * scale}"{style}></figure>')


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table; header strings are escaped here, cells must already be HTML."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def td(html: str, cls: str = "") -> str:
    """A table cell around already-escaped HTML."""
    return f'<td class="{cls}">{html}</td>' if cls else f"<td>{html}</td>"


def name_cell(entry) -> str:
    """A run's name with its colour swatch (the colour it has in every figure)."""
    return td(f'<span class="swatch" style="background:{entry.color}"></span>{escape(entry.name)}', "name")
