"""The report's figures: one function per figure, each returning PNG bytes (or None without data).

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch), so
it is safe in a headless process. Every report figure takes `entries`: (name, colour, run dict)
triples; a run keeps its colour in every figure. Values stored as fractions are drawn in %.
`detection` draws one detection for ``poisonlab scan``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator

from poisonlab.metrics import auroc, detection_scores, roc_curve
from poisonlab.report import data
from poisonlab.report.entry import (
    ATTACKER, FLAGGED, HONEST, MARKERS, MAX_CONFUSIONS, Entry, attack_rounds, jitter)

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


def accuracy_asr(entries: Sequence[Entry]) -> bytes | None:
    """Two panels: clean accuracy (%) and attack success rate (%) per round, one line per run."""
    keys = (("clean_accuracy", "Clean accuracy", "accuracy (%)"),
            ("attack_success_rate", "Attack success rate", "attack success rate (%)"))
    curves = {k: [(e, *data.series(e.run, k)) for e in entries] for k, _, _ in keys}
    if not any(len(v) for k in curves for _, _, v in curves[k]):
        return None
    shaded = attack_rounds(entries)
    with matplotlib.rc_context(STYLE):
        fig = _figure(12, 4.6)
        axes = fig.subplots(1, 2)
        for ax, (key, title, ylabel) in zip(axes, keys):
            for r in shaded:
                ax.axvspan(r - 0.5, r + 0.5, color=ATTACKER, alpha=0.08, lw=0)
            drawn = 0
            for i, (e, x, y) in enumerate(curves[key]):
                if len(y):
                    ax.plot(x, 100 * y, **_line_style(i, len(entries), e.color), label=e.name)
                    drawn += 1
            if not drawn:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color=HONEST)
            ax.set(title=f"{title} per round", xlabel="round", ylabel=ylabel, ylim=(-3, 103))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        handles = [Line2D([], [], **_line_style(i, len(entries), e.color), label=e.name)
                   for i, (e, _, y) in enumerate(curves["clean_accuracy"])
                   if len(y) or len(data.series(e.run, "attack_success_rate")[1])]
        if shaded:
            handles.append(Patch(color=ATTACKER, alpha=0.15, label="rounds with attackers taking part"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)
        return _png(fig)


def _line_style(i: int, n: int, color: str) -> dict:
    """Run i's line: its colour, its own marker, and a width shrinking with i so overlapping runs stay visible."""
    return {"color": color, "marker": MARKERS[i % len(MARKERS)], "ms": 5.5 - 2.5 * i / max(n - 1, 1),
            "lw": 3.2 - 2.0 * i / max(n - 1, 1), "alpha": 0.9}


def confusion(entries: Sequence[Entry]) -> bytes | None:
    """Confusion-matrix heatmaps (rows = true class, colour = % of the row, text = counts) of up to 4 runs."""
    shown = [(e.name, cm, data.class_names(e.run, cm.shape[0]))
             for e in entries if (cm := data.confusion(e.run)) is not None][:MAX_CONFUSIONS]
    return confusion_panels(shown) if shown else None


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


def update_norms(entries: Sequence[Entry]) -> bytes | None:
    """Per-round strip plot of client update L2 norms, honest in grey, malicious as vermillion triangles."""
    panels = [(e, *data.norm_points(e.run)) for e in entries]
    panels = [p for p in panels if len(p[2])]
    if not panels:
        return None
    every = np.concatenate([p[2] for p in panels])
    log = every.min() > 0 and every.max() / every.min() > 50
    ncols = min(len(panels), 2)
    with matplotlib.rc_context(STYLE):
        fig = _figure(12 if ncols == 2 else 8, 3.4 * -(-len(panels) // ncols) + 0.5)
        axes = _grid(fig, len(panels), ncols, sharey=True)
        for ax, (e, rounds, norms, bad) in zip(axes, panels):
            x = rounds + jitter(rounds)
            ax.scatter(x[~bad], norms[~bad], s=10, color=HONEST, alpha=0.55, lw=0)
            ax.scatter(x[bad], norms[bad], s=34, color=ATTACKER, marker="^", edgecolor="black", lw=0.4)
            ax.set(title=e.name, xlabel="round", ylabel="update L2 norm" + (" (log scale)" if log else ""))
            if log:
                ax.set_yscale("log")
            ax.set_xlim(rounds.min() - 0.7, rounds.max() + 0.7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        handles = [Line2D([], [], ls="", marker="o", color=HONEST, label="honest client"),
                   Line2D([], [], ls="", marker="^", color=ATTACKER, markeredgecolor="black", label="malicious client")]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
        return _png(fig)


def flags(entries: Sequence[Entry]) -> bytes | None:
    """Round x client heatmap per run: grey = not sampled, white = kept, blue = flagged; x = true attacker."""
    panels = [(e, m) for e in entries if (m := data.flag_matrix(e.run)) is not None]
    if not panels:
        return None
    k = max(m[0].shape[1] for _, m in panels)
    ncols = min(len(panels), 2)
    height = min(max(2.4, 0.16 * k + 1.3), 6.5)
    cmap = ListedColormap(["#e8e8e8", "#ffffff", FLAGGED])
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig = _figure(12 if ncols == 2 else 8, height * -(-len(panels) // ncols) + 0.6)
        axes = _grid(fig, len(panels), ncols)
        for ax, (e, (status, attacker, rounds)) in zip(axes, panels):
            ax.imshow(status.T, cmap=cmap, vmin=0, vmax=2, aspect="auto", interpolation="nearest")
            r_idx, c_idx = np.nonzero(attacker)
            ax.scatter(r_idx, c_idx, marker="x", s=22 if status.shape[1] <= 40 else 14, color=ATTACKER, lw=1.6)
            if status.shape[0] <= 60 and status.shape[1] <= 60:
                ax.set_xticks(np.arange(status.shape[0] + 1) - 0.5, minor=True)
                ax.set_yticks(np.arange(status.shape[1] + 1) - 0.5, minor=True)
                ax.grid(which="minor", color="#c8c8c8", lw=0.5)
                ax.tick_params(which="minor", length=0)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10, min_n_ticks=1))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _, r=rounds: _round_tick(v, r)))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=8, min_n_ticks=1))
            ax.set(title=e.name, xlabel="round", ylabel="client id")
        handles = [Patch(facecolor="#e8e8e8", edgecolor="#999", label="not sampled"),
                   Patch(facecolor="#ffffff", edgecolor="#999", label="sampled, not flagged"),
                   Patch(facecolor=FLAGGED, label="flagged by the defense"),
                   Line2D([], [], ls="", marker="x", color=ATTACKER, mew=1.6, label="true attacker")]
        fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
        return _png(fig)


def _round_tick(position: float, rounds: list[int]) -> str:
    """Tick label of a heatmap column: the round number stored at that column index."""
    i = int(position)
    return str(rounds[i]) if i == position and 0 <= i < len(rounds) else ""


def roc(entries: Sequence[Entry]) -> bytes | None:
    """ROC curves (TPR vs FPR, in %) of every detection with scores and both classes; AUROC in the legend."""
    curves = []
    for e in entries:
        for j, d in enumerate(data.detections(e.run)):
            arrays = data.detection_arrays(d)
            if arrays is not None:
                fpr, tpr = roc_curve(*arrays)
                curves.append((e, str(d.get("detector") or f"detector {j + 1}"), j, fpr, tpr, auroc(*arrays)))
    if not curves:
        return None
    styles = ["-", "--", ":", "-."]
    with matplotlib.rc_context(STYLE):
        fig = _figure(7.2, 6.6)
        ax = fig.subplots()
        ax.plot([0, 100], [0, 100], color="#999999", ls="--", lw=1, label="chance (AUROC 0.50)")
        for e, detector, j, fpr, tpr, area in curves:
            ax.plot(100 * fpr, 100 * tpr, color=e.color, ls=styles[j % len(styles)], lw=2, drawstyle="default",
                    label=f"{e.name} · {detector} (AUROC {area:.2f})")
        ax.set(title="Detection ROC curves", xlabel="false positive rate (%)", ylabel="true positive rate (%)",
               xlim=(-2, 102), ylim=(-2, 102), aspect="equal")
        ax.legend(loc="lower right", frameon=True)
        return _png(fig)


def per_class_accuracy(entries: Sequence[Entry]) -> bytes | None:
    """Grouped bars of each class's accuracy (%) per run."""
    shown = [(e, v) for e in entries if len(v := data.per_class(e.run)) and not np.isnan(v).all()]
    if not shown:
        return None
    k = max(len(v) for _, v in shown)
    names = data.class_names(shown[0][0].run, k)
    width = 0.8 / len(shown)
    with matplotlib.rc_context(STYLE):
        fig = _figure(min(max(7, 0.3 * k * len(shown) + 2.5), 11.5), 4.4)
        ax = fig.subplots()
        for i, (e, v) in enumerate(shown):
            x = np.arange(len(v)) - 0.4 + width * (i + 0.5)
            ax.bar(x, np.nan_to_num(100 * v, nan=0.0), width=width, color=e.color, label=e.name)
        ax.set_xticks(np.arange(k), names, rotation=45 if max(map(len, names)) > 2 else 0)
        ax.set(title="Per-class accuracy (final model)", xlabel="class", ylabel="accuracy (%)", ylim=(0, 105))
        ax.grid(axis="x", visible=False)
        fig.legend(loc="outside lower center", ncols=min(len(shown), 4), frameon=False)
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
