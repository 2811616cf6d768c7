"""The figures still drawn with matplotlib, as PNG bytes: the centralized report's confusion panels and
baseline-vs-poisoned bars, and ``poisonlab scan``'s detection figure (`detection`). The federated report's
figures are SVG (report/charts.py: no matplotlib import, milliseconds to draw).

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch), so
it is safe in a headless process. Values stored as fractions are drawn in %.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from poisonlab.metrics import detection_scores, roc_curve
from poisonlab.report.entry import ATTACKER, HONEST

DPI = 110
FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans", "WenQuanYi Zen Hei", "Droid Sans Fallback",
                  "Last Resort High-Efficiency")
"""Fonts tried, in order, for characters DejaVu Sans lacks (a run named in Japanese, Arabic, emoji...); those
installed are used. Matplotlib ships the last one: it draws a placeholder box for any character no other
font has, so a non-Latin run name never raises 'Glyph ... missing from font(s)' warnings."""


def font_family() -> list[str]:
    """DejaVu Sans, then the installed FALLBACK_FONTS (matplotlib's per-glyph font fallback)."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(name for name in FALLBACK_FONTS if name in installed)]


STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
         "xtick.labelsize": 9.5, "ytick.labelsize": 9.5, "axes.grid": True, "grid.alpha": 0.3,
         "font.family": font_family()}


def _png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes at the report's resolution."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _figure(width: float, height: float) -> Figure:
    """A white figure with constrained layout."""
    return Figure(figsize=(width, height), layout="constrained", facecolor="white")


def _grid(fig: Figure, n: int, ncols: int, **kw) -> list:
    """n axes in a grid of ncols columns (extra cells removed)."""
    rows = -(-n // ncols)
    axes = np.atleast_1d(fig.subplots(rows, ncols, squeeze=False, **kw)).ravel()
    for ax in axes[n:]:
        ax.remove()
    return list(axes[:n])


def confusion_panels(panels: Sequence[tuple[str, np.ndarray, list[str]]], highlight: int | None = None) -> bytes:
    """One heatmap per (title, counts, class names): rows = true class, colour = % of the row, text = counts.

    highlight: a predicted class whose column is outlined (the backdoor's target).
    """
    k = panels[0][1].shape[0]
    ncols = min(len(panels), 2)
    side = min(max(3.8, 0.42 * k + 1.8), 8.0)
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig = _figure(side * ncols + 1.0, side * -(-len(panels) // ncols))
        axes = _grid(fig, len(panels), ncols)
        for ax, (title, cm, names) in zip(axes, panels):
            rows = cm.sum(axis=1, keepdims=True)
            rate = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0) * 100
            image = ax.imshow(rate, cmap="viridis", vmin=0, vmax=100)
            ticks = np.arange(cm.shape[0])
            long_names = max(map(len, names)) > 2
            ax.set_xticks(ticks, names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
            ax.set_yticks(ticks, names)
            ax.set(title=title, xlabel="predicted class", ylabel="true class")
            if highlight is not None and 0 <= highlight < cm.shape[1]:
                ax.add_patch(Rectangle((highlight - 0.5, -0.5), 1, cm.shape[0], fill=False, ec=ATTACKER, lw=2.5))
            if cm.shape[0] <= 20:
                for (i, j), count in np.ndenumerate(cm):
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=8 if cm.shape[0] > 10 else 9,
                            color="black" if rate[i, j] > 60 else "white")
        fig.colorbar(image, ax=axes, shrink=0.8, label="share of the true class (%)")
        return _png(fig)


def baseline_vs_poisoned(baseline: np.ndarray, poisoned: np.ndarray, names: list[str], color: str) -> bytes:
    """Per-class accuracy (%) of the clean baseline (grey) and the poisoned model (run colour), side by side."""
    k = len(names)
    with matplotlib.rc_context(STYLE):
        fig = _figure(min(max(7, 0.55 * k + 2.5), 11.5), 4.2)
        ax = fig.subplots()
        x = np.arange(k)
        ax.bar(x - 0.2, np.nan_to_num(100 * baseline, nan=0.0), width=0.4, color=HONEST, label="clean baseline")
        ax.bar(x + 0.2, np.nan_to_num(100 * poisoned, nan=0.0), width=0.4, color=color, label="poisoned model")
        ax.set_xticks(x, names, rotation=45 if max(map(len, names)) > 2 else 0)
        ax.set(title="Per-class accuracy on clean test inputs", xlabel="class", ylabel="accuracy (%)", ylim=(0, 105))
        ax.grid(axis="x", visible=False)
        fig.legend(loc="outside lower center", ncols=2, frameon=False)
        return _png(fig)


def detection(scores: np.ndarray, flagged: np.ndarray, truth: np.ndarray | None, title: str) -> bytes:
    """One detection: the score histogram (split by truth when known, log counts) and, with truth, its ROC
    curve with the flags' operating point (``poisonlab scan`` writes it as scores.png)."""
    scores = np.asarray(scores, dtype=float)
    fig = Figure(figsize=(10 if truth is not None else 5, 3.6), layout="tight")
    axes = fig.subplots(1, 2 if truth is not None else 1, squeeze=False)
    ax = axes[0, 0]
    finite = scores[np.isfinite(scores)]
    bins = np.linspace(finite.min(), finite.max(), 50) if finite.size and finite.min() < finite.max() else 20
    if truth is None:
        ax.hist(finite, bins=bins, color="tab:blue")
    else:
        t = np.asarray(truth, dtype=bool)
        ax.hist(scores[~t], bins=bins, alpha=0.6, label=f"clean ({int((~t).sum())})", color="tab:blue")
        ax.hist(scores[t], bins=bins, alpha=0.6, label=f"poisoned ({int(t.sum())})", color="tab:red")
        ax.legend()
        fpr, tpr = roc_curve(scores, t)
        ev = detection_scores(np.asarray(flagged, dtype=bool), t, scores)
        rx = axes[0, 1]
        rx.plot(fpr, tpr, color="tab:red")
        rx.plot([0, 1], [0, 1], ls=":", color="grey")
        rx.scatter([ev.fpr], [ev.tpr], color="black", zorder=3, label=f"flags: TPR {ev.tpr:.3f}, FPR {ev.fpr:.3f}")
        rx.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC (AUROC {ev.auroc:.4f})")
        rx.legend(loc="lower right")
    ax.set(xlabel="score (higher = more suspicious)", ylabel="count", title=title)
    ax.set_yscale("log")
    return _png(fig)
