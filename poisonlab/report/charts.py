"""The federated report's figures as SVG (report/svg.py): one function per figure, each returning the SVG
text (or None without data). They show what report/plots.py's matplotlib versions showed, with the same
data helpers (report/data.py), colours and markers (report/entry.py); values stored as fractions are drawn in %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from poisonlab.report import data
from poisonlab.report.entry import ATTACKER, FLAGGED, HONEST, MARKERS, MAX_CONFUSIONS, Entry, attack_rounds, jitter
from poisonlab.report.svg import Axes, Canvas, legend, legend_height, nice_ticks

PANEL_W, PANEL_H = 430.0, 270.0
LEFT, TOP, GAP, BOTTOM = 70.0, 34.0, 100.0, 52.0
VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]
"""matplotlib's viridis at 0, 25, 50, 75 and 100 %; shares in between are interpolated linearly."""


def _grid_boxes(n: int, ncols: int, w: float, h: float, top_extra: float = 0.0):
    """Pixel boxes of n panels in ncols columns, and the canvas size without a legend."""
    rows = -(-n // ncols)
    boxes = [(LEFT + (i % ncols) * (w + GAP), TOP + top_extra + (i // ncols) * (h + TOP + BOTTOM + 10), w, h)
             for i in range(n)]
    return boxes, LEFT + ncols * w + (ncols - 1) * GAP + 30, TOP + top_extra + rows * (h + TOP + BOTTOM + 10) - TOP


def _line_style(i: int, n: int) -> tuple[str, float, float]:
    """Run i's marker, marker radius and line width, shrinking with i so overlapping runs stay visible."""
    t = i / max(n - 1, 1)
    return MARKERS[i % len(MARKERS)] if MARKERS[i % len(MARKERS)] in "os^D" else "o", 3.6 - 1.6 * t, 3.2 - 2.0 * t


def accuracy_asr(entries: Sequence[Entry]) -> str | None:
    """Two panels: clean accuracy (%) and attack success rate (%) per round, one line per run."""
    keys = (("clean_accuracy", "Clean accuracy per round", "accuracy (%)"),
            ("attack_success_rate", "Attack success rate per round", "attack success rate (%)"))
    curves = {k: [(e, *data.series(e.run, k)) for e in entries] for k, _, _ in keys}
    if not any(len(v) for k in curves for _, _, v in curves[k]):
        return None
    xs = [float(v) for k in curves for _, x, y in curves[k] if len(y) for v in x]
    shaded = attack_rounds(entries)
    lo, hi = (min(xs + shaded), max(xs + shaded)) if xs else (0.0, 1.0)
    items = [("line", e.color, e.name) for e, _, y in curves["clean_accuracy"]
             if len(y) or len(data.series(e.run, "attack_success_rate")[1])]
    if shaded:
        items.append(("patch", "#f7ddd0", "rounds with attackers taking part"))
    boxes, width, height = _grid_boxes(2, 2, PANEL_W, PANEL_H)
    c = Canvas(width, height + legend_height(len(items)))
    for box, (key, title, ylabel) in zip(boxes, keys):
        ax = Axes(c, box, (lo - 0.6, hi + 0.6), (-3, 103))
        for r in shaded:
            c.rect(ax.px(r - 0.5), ax.y, ax.px(r + 0.5) - ax.px(r - 0.5), ax.h, ATTACKER, opacity=0.08)
        ax.frame(title, "round", ylabel, xticks=nice_ticks(lo, hi, integer=True), yticks=[0, 20, 40, 60, 80, 100])
        drawn = 0
        for i, (e, x, y) in enumerate(curves[key]):
            if not len(y):
                continue
            marker, r, lw = _line_style(i, len(entries))
            points = [(ax.px(a), ax.py(100 * b)) for a, b in zip(x, y)]
            c.polyline(points, e.color, lw, opacity=0.9)
            for px, py in points:
                c.marker(marker, px, py, r, e.color, opacity=0.9)
            drawn += 1
        if not drawn:
            c.text(ax.x + ax.w / 2, ax.y + ax.h / 2, "not measured", 12, fill=HONEST)
    legend(c, items, height + 8)
    return c.svg()


def _viridis(share: float) -> str:
    """The viridis colour of share in [0, 1]."""
    t = min(max(share, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(t), len(VIRIDIS) - 2)
    a, b = (tuple(int(h[k:k + 2], 16) for k in (1, 3, 5)) for h in VIRIDIS[i:i + 2])
    return "#" + "".join(f"{round(x + (y - x) * (t - i)):02x}" for x, y in zip(a, b))


def confusion(entries: Sequence[Entry]) -> str | None:
    """Confusion-matrix heatmaps (rows = true class, colour = % of the row, text = counts) of up to 4 runs."""
    shown = [(e.name, cm, data.class_names(e.run, cm.shape[0]))
             for e in entries if (cm := data.confusion(e.run)) is not None][:MAX_CONFUSIONS]
    if not shown:
        return None
    k = shown[0][1].shape[0]
    side = min(max(260.0, 26.0 * k + 60), 560.0)
    ncols = min(len(shown), 2)
    long_names = any(max(map(len, names)) > 2 for _, _, names in shown)
    boxes, width, height = _grid_boxes(len(shown), ncols, side, side)
    c = Canvas(width + 80, height + (20 if long_names else 0))
    for (x0, y0, w, h), (title, cm, names) in zip(boxes, shown):
        n = cm.shape[0]
        rows = cm.sum(axis=1, keepdims=True)
        rate = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        cell = w / n
        for (i, j), count in np.ndenumerate(cm):
            c.rect(x0 + j * cell, y0 + i * cell, cell + 0.3, cell + 0.3, _viridis(rate[i, j]))
            if n <= 20:
                c.text(x0 + (j + 0.5) * cell, y0 + (i + 0.5) * cell + 4, str(count), 9 if n > 10 else 10,
                       fill="#000000" if rate[i, j] > 0.6 else "#ffffff")
        ax = Axes(c, (x0, y0, w, h), (-0.5, n - 0.5), (n - 0.5, -0.5))
        ax.frame(title, "predicted class", "true class", xticks=list(range(n)), yticks=list(range(n)), grid=False,
                 xtick_labels=names, ytick_labels=names, rotate_x=long_names)
    bar_x, bar_y, bar_h = width - 10, TOP, min(side, 300.0)
    for s in range(20):
        c.rect(bar_x, bar_y + bar_h * (19 - s) / 20, 14, bar_h / 20 + 0.3, _viridis((s + 0.5) / 20))
    for v in (0, 50, 100):
        c.text(bar_x + 18, bar_y + bar_h * (1 - v / 100) + 4, f"{v}%", 10, "start")
    c.text(bar_x + 56, bar_y + bar_h / 2, "share of the true class", 10, rotate=90)
    return c.svg()


def update_norms(entries: Sequence[Entry]) -> str | None:
    """Per-round strip plot of client update L2 norms, honest in grey, malicious as vermillion triangles."""
    panels = [(e, *data.norm_points(e.run)) for e in entries]
    panels = [p for p in panels if len(p[2])]
    if not panels:
        return None
    every = np.concatenate([p[2] for p in panels])
    log = bool(every.min() > 0 and every.max() / every.min() > 50)
    if log:
        ylim = (10 ** math.floor(math.log10(every.min())), 10 ** math.ceil(math.log10(every.max())))
    else:
        pad = 0.05 * (every.max() - every.min() or max(abs(every.max()), 1.0))
        ylim = (min(0.0, every.min() - pad), every.max() + pad)
    ncols = min(len(panels), 2)
    boxes, width, height = _grid_boxes(len(panels), ncols, PANEL_W if ncols == 2 else 620.0, 220.0)
    c = Canvas(width, height + legend_height(2))
    for box, (e, rounds, norms, bad) in zip(boxes, panels):
        ax = Axes(c, box, (rounds.min() - 0.7, rounds.max() + 0.7), ylim, log_y=log)
        ax.frame(e.name, "round", "update L2 norm" + (" (log scale)" if log else ""),
                 xticks=nice_ticks(float(rounds.min()), float(rounds.max()), integer=True))
        x = rounds + jitter(rounds)
        for xi, yi, b in zip(x, norms, bad):
            if not b:
                c.marker("o", ax.px(xi), ax.py(yi), 2.4, HONEST, opacity=0.55)
        for xi, yi, b in zip(x, norms, bad):
            if b:
                c.marker("^", ax.px(xi), ax.py(yi), 4.2, ATTACKER, "#000000")
    legend(c, [("o", HONEST, "honest client"), ("^", ATTACKER, "malicious client")], height + 8)
    return c.svg()


def flags(entries: Sequence[Entry]) -> str | None:
    """Round x client grid per run: grey = not sampled, white = kept, blue = flagged; x = true attacker."""
    panels = [(e, m) for e in entries if (m := data.flag_matrix(e.run)) is not None]
    if not panels:
        return None
    k = max(m[0].shape[1] for _, m in panels)
    ncols = min(len(panels), 2)
    ph = min(max(150.0, 12.0 * k), 480.0)
    boxes, width, height = _grid_boxes(len(panels), ncols, PANEL_W if ncols == 2 else 620.0, ph)
    items = [("patch", "#e8e8e8", "not sampled"), ("patch", "#ffffff", "sampled, not flagged"),
             ("patch", FLAGGED, "flagged by the defense"), ("x", ATTACKER, "true attacker")]
    c = Canvas(width, height + legend_height(4))
    fills = ["#e8e8e8", "#ffffff", FLAGGED]
    for (x0, y0, w, h), (e, (status, attacker, rounds)) in zip(boxes, panels):
        R, K = status.shape
        cw, ch = w / R, h / K
        thin = R <= 60 and K <= 60
        for (r, cl), s in np.ndenumerate(status):
            c.rect(x0 + r * cw, y0 + cl * ch, cw + (0 if thin else 0.3), ch + (0 if thin else 0.3), fills[int(s)],
                   "#c8c8c8" if thin else None, stroke_width=0.5)
        for r, cl in zip(*np.nonzero(attacker)):
            c.marker("x", x0 + (r + 0.5) * cw, y0 + (cl + 0.5) * ch, min(cw, ch, 10) * 0.3, ATTACKER)
        ax = Axes(c, (x0, y0, w, h), (-0.5, R - 0.5), (K - 0.5, -0.5))
        cols = [int(v) for v in nice_ticks(0, R - 1, 10, integer=True)]
        ids = [int(v) for v in nice_ticks(0, K - 1, 8, integer=True)]
        ax.frame(e.name, "round", "client id", xticks=cols, yticks=ids, grid=False,
                 xtick_labels=[str(rounds[i]) for i in cols])
    legend(c, items, height + 8)
    return c.svg()


def roc(entries: Sequence[Entry]) -> str | None:
    """ROC curves (TPR vs FPR, in %) of every detection with scores and both classes; AUROC in the legend."""
    found = [(e, str(d.get("detector") or f"detector {j + 1}"), j, arrays) for e in entries
             for j, d in enumerate(data.detections(e.run)) if (arrays := data.detection_arrays(d)) is not None]
    if not found:
        return None
    from poisonlab.metrics import auroc, roc_curve  # torch and scikit-learn: only when a run has detections

    curves = [(e, name, j, *roc_curve(*arrays), auroc(*arrays)) for e, name, j, arrays in found]
    dashes = [None, "8 4", "2 3", "8 3 2 3"]
    c = Canvas(560, 470 + 20 * (len(curves) + 1))
    ax = Axes(c, (LEFT, TOP, 440, 400), (-2, 102), (-2, 102))
    ax.frame("Detection ROC curves", "false positive rate (%)", "true positive rate (%)",
             xticks=[0, 20, 40, 60, 80, 100], yticks=[0, 20, 40, 60, 80, 100])
    c.line(ax.px(0), ax.py(0), ax.px(100), ax.py(100), "#999999", 1, "6 4")
    y = TOP + 400 + 62
    c.line(LEFT, y - 4, LEFT + 28, y - 4, "#999999", 1, "6 4")
    c.text(LEFT + 36, y, "chance (AUROC 0.50)", 11, "start")
    for e, detector, j, fpr, tpr, area in curves:
        dash = dashes[j % len(dashes)]
        c.polyline([(ax.px(100 * a), ax.py(100 * b)) for a, b in zip(fpr, tpr)], e.color, 2, dash)
        y += 20
        c.line(LEFT, y - 4, LEFT + 28, y - 4, e.color, 2, dash)
        c.text(LEFT + 36, y, f"{e.name} · {detector} (AUROC {area:.2f})", 11, "start")
    return c.svg()


def per_class_accuracy(entries: Sequence[Entry]) -> str | None:
    """Grouped bars of each class's accuracy (%) per run."""
    shown = [(e, v) for e in entries if len(v := data.per_class(e.run)) and not np.isnan(v).all()]
    if not shown:
        return None
    k = max(len(v) for _, v in shown)
    names = data.class_names(shown[0][0].run, k)
    rotate = max(map(len, names)) > 2
    w = min(max(560.0, 26.0 * k * len(shown) + 120), 1100.0)
    items = [("patch", e.color, e.name) for e, _ in shown]
    c = Canvas(LEFT + w + 30, TOP + 300 + BOTTOM + (14 if rotate else 0) + legend_height(len(items)))
    ax = Axes(c, (LEFT, TOP, w, 300), (-0.6, k - 0.4), (0, 105))
    ax.frame("Per-class accuracy (final model)", "class", "accuracy (%)", xticks=list(range(k)),
             yticks=[0, 20, 40, 60, 80, 100], xtick_labels=names, rotate_x=rotate)
    width = 0.8 / len(shown)
    for i, (e, v) in enumerate(shown):
        for j, acc in enumerate(np.nan_to_num(100 * v, nan=0.0)):
            left = j - 0.4 + width * i
            c.rect(ax.px(left), ax.py(acc), ax.px(left + width) - ax.px(left), ax.py(0) - ax.py(acc), e.color)
    legend(c, items, TOP + 300 + BOTTOM + (14 if rotate else 0) + 8)
    return c.svg()
