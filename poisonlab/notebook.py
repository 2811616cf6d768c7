"""Jupyter rendering: a result, a dataset, a detection or a list of runs as an HTML table with a small plot.

Jupyter shows an object by calling its ``_repr_html_``; CentralizedResult, Dataset and Detection
define it by calling the functions here, and ``Runs(metrics, ...)`` wraps the metrics documents that
``run_experiment`` returns (plain dicts) so that they render too. Every text is escaped and every
plot is a PNG inlined as a data URI (report/html.py's ``img``), as in report.html: the notebook
stays one self-contained file. Figures use matplotlib's Agg backend, never a window.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from html import escape

from poisonlab.report.html import img, table, td

MAX_CLASSES_SHOWN = 20


def _pct(value) -> str:
    return "not measured" if value is None or value != value else f"{100 * float(value):.2f}%"


def _rows(pairs: Sequence[tuple[str, object]]) -> list[list[str]]:
    return [[td(escape(str(k))), td(escape(str(v)))] for k, v in pairs]


def _png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _figure(width: float = 4.5, height: float = 2.4, ncols: int = 1):
    """A new Agg figure and its axes (one, or an array of ncols)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height))


def dataset_html(data) -> str:
    """Name, size, sample shape and samples per class; for images, the first 8 samples."""
    counts = data.y.bincount(minlength=data.num_classes).tolist()
    shown = list(zip(data.classes, counts))[:MAX_CLASSES_SHOWN]
    pairs = [("samples", len(data)), ("sample shape", tuple(data.input_shape)), ("classes", data.num_classes),
             ("per class", ", ".join(f"{c}: {n}" for c, n in shown) + (" ..." if data.num_classes > len(shown) else ""))]
    html = f"<b>Dataset {escape(data.name)}</b>" + table(["", ""], _rows(pairs))
    if data.is_image and len(data):
        html += img(_image_strip(data), f"the first samples of {data.name}", enlarge_to=480)
    return html


def _image_strip(data, n: int = 8) -> bytes:
    """The first n images side by side with their labels."""
    n = min(n, len(data))
    fig, axes = _figure(n * 0.9, 1.1, ncols=n)
    for ax, x, y in zip([axes] if n == 1 else axes, data.x[:n], data.y[:n]):
        picture = x.permute(1, 2, 0).clamp(0, 1).numpy()
        ax.imshow(picture[..., 0] if picture.shape[2] == 1 else picture, cmap="gray", vmin=0, vmax=1)
        ax.set_title(data.classes[int(y)], fontsize=8)
        ax.axis("off")
    return _png(fig)


def detection_html(detection, truth=None) -> str:
    """Items scored and flagged, score range; a histogram of scores, flagged vs not."""
    scores, flagged = detection.scores, detection.flagged
    pairs = [("items scored", len(detection)), ("flagged", detection.num_flagged)]
    if len(detection):
        pairs += [("score min / median / max",
                   f"{scores.min().item():.4g} / {scores.median().item():.4g} / {scores.max().item():.4g}")]
    html = "<b>Detection</b>" + table(["", ""], _rows(pairs))
    if len(detection) > 1:
        fig, ax = _figure()
        ax.hist([scores[~flagged].numpy(), scores[flagged].numpy()], bins=30, stacked=True,
                label=["not flagged", "flagged"], color=["tab:blue", "tab:red"])
        ax.set_xlabel("score (higher = more suspicious)")
        ax.set_ylabel("items")
        ax.legend(fontsize=8)
        html += img(_png(fig), "histogram of detection scores")
    return html


def centralized_html(result) -> str:
    """Clean baseline vs poisoned model side by side, poison count, flips; per-class accuracy change."""
    rows = [["clean accuracy", _pct(result.clean_accuracy_clean_model), _pct(result.clean_accuracy)],
            ["attack success rate", _pct(result.attack_success_rate_clean_model), _pct(result.attack_success_rate)]]
    rows += [[f"flips {pair}", str(result.flips_clean_model.get(pair, 0)), str(n)] for pair, n in result.flips.items()]
    html = (f"<b>Centralized: {result.poison_count} of {result.train_size} training rows poisoned, "
            f"injection {escape(str(result.injection.get('mode', '')))}</b>"
            + table(["", "clean model", "poisoned model"], [[td(escape(c)) for c in r] for r in rows]))
    change = [100 * (a - b) for a, b in zip(result.per_class_accuracy, result.per_class_accuracy_clean_model)]
    if change:
        fig, ax = _figure()
        ax.bar(range(len(change)), change, color=["tab:red" if v < 0 else "tab:blue" for v in change])
        ax.set_xticks(range(len(change)), result.class_names[:len(change)], fontsize=7)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylabel("accuracy change (points)")
        ax.set_title("per class: poisoned minus clean model", fontsize=9)
        html += img(_png(fig), "per-class accuracy change")
    return html


class Runs:
    """Metrics documents (what run_experiment returns) shown as one table and, for federated runs, the
    clean accuracy and attack success rate per round. ``Runs(m1, m2, names=["fedavg", "median"])``."""

    def __init__(self, *runs: Mapping, names: Sequence[str] | None = None):
        self.runs = list(runs)
        self.names = list(names) if names is not None else [str(r.get("name", f"run {i}")) for i, r in
                                                             enumerate(self.runs)]

    def _repr_html_(self) -> str:
        rows = [[td(escape(n)), td(escape(str(r.get("kind", "")))), td(_pct(r.get("final", {}).get("clean_accuracy"))),
                 td(_pct(r.get("final", {}).get("attack_success_rate")))] for n, r in zip(self.names, self.runs)]
        html = table(["run", "kind", "clean accuracy", "attack success rate"], rows)
        curves = [(n, r["history"]) for n, r in zip(self.names, self.runs) if r.get("history")]
        if curves:
            fig, (left, right) = _figure(8, 2.4, ncols=2)
            for name, hist in curves:
                rounds = [h["round"] for h in hist]
                left.plot(rounds, [h.get("clean_accuracy") for h in hist], label=name)
                asr = [h.get("attack_success_rate") for h in hist]
                if any(a is not None for a in asr):
                    right.plot(rounds, [float("nan") if a is None else a for a in asr], label=name)
            for ax, what in ((left, "clean accuracy"), (right, "attack success rate")):
                ax.set_xlabel("round")
                ax.set_ylabel(what)
                ax.set_ylim(-0.02, 1.02)
            left.legend(fontsize=7)
            html += img(_png(fig), "clean accuracy and attack success rate per round")
        return html
