"""The self-contained report page: inline CSS, figures as base64 data URIs, no script, no external resource.

Every piece of text that comes from a run (names, detector names, class names, config values)
goes through html.escape. A section appears only when some run has data for it; a figure that
fails to draw is replaced by a one-line note (with a warning) so a partial run never loses the
rest of its report.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from html import escape

import yaml

from poisonlab.report import centralized, charts, data
from poisonlab.report.entry import MAX_CONFUSIONS, Entry, attack_rounds, palette
from poisonlab.report.fmt import NOT_MEASURED, NOT_RUN, img, name_cell, svg_img, pct, seconds, table, td, text

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;
 color:#1b1b1b;background:#fff;line-height:1.45}
main{max-width:1260px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7rem;margin:0 0 4px}
h2{font-size:1.25rem;margin:36px 0 8px;padding-bottom:4px;border-bottom:2px solid #e3e3e3}
h3{font-size:1.05rem;margin:18px 0 6px}
p.sub{color:#555;margin:0 0 14px}
p.note{color:#444;font-size:.93rem;margin:4px 0 10px}
nav{font-size:.93rem;margin:8px 0 4px}
nav a{margin-right:14px;color:#0b57a4;text-decoration:none;white-space:nowrap}
table{border-collapse:collapse;font-size:.93rem;margin:8px 0}
th,td{border:1px solid #d6d6d6;padding:5px 10px;text-align:right;vertical-align:top}
th{background:#f3f5f8}
td:first-child,th:first-child{text-align:left}
td.name{font-weight:600}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.na{color:#8a8a8a;font-style:italic}
figure{margin:8px 0 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}
code{font-size:.85rem;word-break:break-word}
td.left,th.left{text-align:left}
.banner{border-left:5px solid #D55E00;background:#fff4ec;padding:10px 14px;margin:10px 0;font-weight:600}
.pair{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.cards{display:flex;flex-wrap:wrap;gap:10px}
figure.card{margin:0;padding:8px;border:1px solid #e3e3e3;border-radius:4px;text-align:center;font-size:.85rem}
figure.card img{border:1px solid #ccc;vertical-align:middle}
.arrow{margin:0 6px;color:#777}
.thumb{display:inline-block;width:84px}
.hit{color:#b3401a}
pre{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:4px;padding:10px 12px;overflow-x:auto;
 font-size:.85rem;line-height:1.35}
"""


# ---------------------------------------------------------------- sections

def summary(entries: Sequence[Entry]) -> str:
    """Summary table: one row per run with the final figures and the attackers-flagged rates."""
    rows = []
    for e in entries:
        fin = data.final(e.run)
        precision, recall, source = _flag_rates(e.run)
        rows.append([name_cell(e), td(text(e.run.get("kind"))), td(text(e.run.get("seed"))),
                     td(pct(fin.get("clean_accuracy"))), td(pct(fin.get("attack_success_rate"))),
                     td(precision), td(recall), td(source), td(seconds(e.run.get("wall_time")))])
    header = ["run", "kind", "seed", "clean accuracy", "attack success rate", "flagged: precision",
              "flagged: recall", "flags measured on", "wall time"]
    note = ('<p class="note">Accuracy and attack success rate are those of the final model. '
            "<b>flagged: precision</b> = share of flagged clients (or samples) that really were malicious; "
            "<b>recall</b> = share of malicious ones that were flagged. For federated runs both are pooled over "
            "all rounds, counting only clients sampled in that round.</p>")
    return table(header, rows) + note


def _flag_rates(run: Mapping) -> tuple[str, str, str]:
    """(precision, recall, where measured) cells from the round history, else the first detection."""
    tally = data.flag_tally(run)
    if tally is not None:
        precision = pct(tally.precision) if tally.tp + tally.fp else '<span class="na">nobody flagged</span>'
        recall = pct(tally.recall) if tally.tp + tally.fn else '<span class="na">no attacker sampled</span>'
        return precision, recall, "client updates, all rounds"
    for d in data.detections(run):
        return pct(d.get("precision")), pct(d.get("recall")), f"detector {escape(str(d.get('detector') or '?'))}"
    return NOT_MEASURED, NOT_MEASURED, NOT_MEASURED


def detection_table(entries: Sequence[Entry]) -> str | None:
    """Table of every detection record: TPR, FPR, precision, recall, F1, AUROC."""
    rows = []
    for e in entries:
        for d in data.detections(e.run):
            n = len(data.as_list(d.get("truth")))
            auroc = data.num(d.get("auroc"))
            rows.append([name_cell(e), td(text(d.get("detector"))), td(str(n) if n else NOT_MEASURED),
                         *(td(pct(d.get(k))) for k in ("tpr", "fpr", "precision", "recall", "f1")),
                         td(NOT_MEASURED if math.isnan(auroc) else f"{auroc:.3f}")])
    idle = [e.name for e in entries if e.run.get("kind") == "centralized" and not data.detections(e.run)]
    note = (f'<p class="note">Detectors: {NOT_RUN} for {escape(", ".join(idle))} (the config has no '
            "<code>detect:</code> section).</p>" if idle else "")
    if not rows:
        return note or None
    header = ["run", "detector", "items scored", "TPR", "FPR", "precision", "recall", "F1", "AUROC"]
    return table(header, rows) + note


def defense_table(entries: Sequence[Entry]) -> str | None:
    """Each run's defenses (its `defend:` section) beside the undefended model: C-Acc, ASR, RA, DER, time."""
    rows = []
    for e in entries:
        found = data.as_dict(e.run.get("defense"))
        if not found:
            continue
        base = data.as_dict(found.get("baseline"))
        rows.append([name_cell(e), td("none (the poisoned model)"), td(""),
                     *(td(pct(base.get(k))) for k in ("clean_accuracy", "attack_success_rate", "robust_accuracy")),
                     td("(reference)"), td("0"), td("")])
        for d in data.as_list(found.get("defenses")):
            d = data.as_dict(d)
            params = data.as_dict(d.get("params"))
            label = text(d.get("defense")) + (f" <small>{escape(json.dumps(params, sort_keys=True))}</small>" if params else "")
            if d.get("refused"):
                rows.append([name_cell(e), td(label), td(text(d.get("stage"))),
                             td(f"refused: {escape(str(d['refused']))}"), *(td("") for _ in range(5))])
                continue
            rejected = d.get("rejected_clean")
            rows.append([name_cell(e), td(label), td(text(d.get("stage"))),
                         *(td(pct(d.get(k))) for k in ("clean_accuracy", "attack_success_rate", "robust_accuracy")),
                         td(pct(d.get("der"))), td(pct(rejected) if data.num(rejected) else "0"),
                         td(seconds(d.get("wall_time")))])
    if not rows:
        return None
    header = ["run", "defense", "stage", "clean accuracy", "ASR", "robust accuracy", "DER", "clean inputs rejected",
              "time"]
    note = ('<p class="note">Robust accuracy: triggered inputs classified as their true class. DER (BackdoorBench):'
            " [max(0, ΔASR) − max(0, ΔACC) + 1] / 2, 50% = no change. The defender's clean set: "
            f"{', '.join(str(data.as_dict(e.run.get('defense')).get('clean_size', '?')) for e in entries if e.run.get('defense'))}"
            " training rows the poisons left untouched.</p>")
    return table(header, rows) + note


def flips_table(entries: Sequence[Entry]) -> str | None:
    """Targeted misclassification counts (true -> predicted) of each run's final model."""
    rows = [[name_cell(e), td(escape(str(pair))), td(str(int(count)))]
            for e in entries for pair, count in data.as_dict(data.final(e.run).get("flips")).items()
            if not math.isnan(data.num(count))]
    return table(["run", "true -> predicted class", "test inputs"], rows) if rows else None


def gallery(png: bytes | None) -> str | None:
    """The trigger gallery image, if it is a PNG that decodes; a note otherwise."""
    if not png:
        return None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(png)) as im:
            im.verify()
            ok = im.format == "PNG"
    except Exception:  # noqa: BLE001 - any undecodable bytes just skip the image
        ok = False
    if not ok:
        return '<p class="note">The trigger gallery supplied was not a readable PNG image, so it is not shown.</p>'
    return ('<p class="note">Clean test inputs next to the same inputs with the trigger applied.</p>'
            + img(png, "trigger gallery: clean vs triggered inputs", enlarge_to=480))


def config_section(entries: Sequence[Entry]) -> str | None:
    """The first run's resolved config as YAML; for other runs only the keys that differ from it."""
    with_config = [e for e in entries if isinstance(e.run.get("config"), Mapping)]
    if not with_config:
        return None
    first = with_config[0]
    parts = [f"<h3>{escape(first.name)}</h3><pre>{escape(to_yaml(used_config(first.run)))}</pre>"]
    base = flatten(used_config(first.run))
    for e in with_config[1:]:
        mine = flatten(used_config(e.run))
        diff = config_diff(base, mine)
        body = (f"<pre>{escape(to_yaml(diff))}</pre>" if diff
                else f'<p class="note">Same config as {escape(first.name)}.</p>')
        parts.append(f"<h3>{escape(e.name)} <small>(keys that differ from {escape(first.name)})</small></h3>{body}")
    missing = [e.name for e in entries if e not in with_config]
    if missing:
        parts.append(f'<p class="note">No config recorded for: {escape(", ".join(missing))}.</p>')
    return "".join(parts)


CENTRALIZED_ONLY = ("train", "poison", "injection")
"""Top-level config sections a federated run never reads (its training and poisons live under federated:)."""


def used_config(run: Mapping) -> dict:
    """The run's config without the sections its kind does not use (a federated run's centralized defaults)."""
    config = dict(run["config"])
    if run.get("kind") == "federated" or config.get("federated") is not None:
        config = {k: v for k, v in config.items() if k not in CENTRALIZED_ONLY}
    return config


def config_diff(base: dict[str, object], mine: dict[str, object]) -> dict[str, object]:
    """Flattened keys whose values differ; a key absent on one side is shown once, never beside its own
    sub-keys (base has `federated: null`, mine `federated.clients: 20`: only the sub-keys are listed)."""
    diff = {}
    for key in sorted(set(base) | set(mine)):
        if key not in mine and _covered(mine, key):
            continue  # mine replaced this leaf by a section (or a section by a leaf above it): shown there
        value = mine.get(key, "(absent)")
        if value != base.get(key, "(absent)"):
            diff[key] = value
    return diff


def _covered(flat: dict[str, object], key: str) -> bool:
    """True when flat holds a sub-key of key, or a leaf that is an ancestor of key."""
    parts = key.split(".")
    ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
    return any(k.startswith(key + ".") or k in ancestors for k in flat)


def to_yaml(value) -> str:
    """Block-style YAML of a JSON-like value (non-JSON leaves are shown as their str)."""
    plain = json.loads(json.dumps(value, default=str))
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts as {'dotted.key': leaf}; lists and scalars are leaves."""
    if isinstance(value, Mapping) and value:
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.loads(json.dumps(value, default=str))}


# ---------------------------------------------------------------- figures with their captions

FIGURES = [  # anchor, section title, drawing function, alt text, caption
    ("rounds", "Clean accuracy and attack success rate per round", charts.accuracy_asr,
     "clean accuracy and attack success rate per round",
     "Left: accuracy on the clean test set. Right: share of triggered test inputs (true class not the target) "
     "classified as the target. Higher is better on the left, lower on the right."),
    ("confusion", "Confusion matrix", charts.confusion, "confusion matrix heatmap",
     "The final (for a centralized run: poisoned) model on the clean test inputs. Rows are true classes, columns "
     "predicted classes; numbers are test-input counts and colour is the share of the row (bright diagonal = correct)."),
    ("norms", "Client update norms", charts.update_norms, "update norms per round, malicious clients marked",
     "L2 norm of each sampled client's update in every round, as the server received it. Grey dots are honest "
     "clients, vermillion triangles malicious ones: boosted updates stand out above the grey band."),
    ("flags", "Who each defense flagged", charts.flags, "round by client grid of flagged clients, attackers marked",
     "One panel per run; columns are rounds, rows are clients. Blue = flagged (rejected or down-weighted) by the "
     "defense, white = sampled and kept, grey = not sampled. An x marks a true attacker: blue with x is a catch, "
     "white with x a miss, blue without x a false alarm."),
    ("roc", "Detection ROC curves", charts.roc, "detection ROC curves",
     "True positive rate against false positive rate as the detector's threshold moves; AUROC in the legend "
     "(1.0 = perfect ranking, 0.5 = chance). Detections without scores or without both poisoned and clean items "
     "cannot have a curve."),
    ("per-class", "Per-class accuracy", charts.per_class_accuracy, "per-class accuracy",
     "Accuracy of the final model on each class's clean test inputs; a dip on one class can show a targeted or "
     "label-flipping attack."),
]


def _omitted(entries: Sequence[Entry], has: Callable[[dict], bool], why: str) -> str:
    """A note naming the runs left out of a figure, '' when none are."""
    left = [e.name for e in entries if not has(e.run)]
    return f" Not shown ({why}): {escape(', '.join(left))}." if left else ""


def _has_rounds(run: dict) -> bool:
    """True when the run has any per-round accuracy or ASR value."""
    return any(len(data.series(run, k)[1]) for k in ("clean_accuracy", "attack_success_rate"))


def caption_notes(anchor: str, entries: Sequence[Entry]) -> str:
    """The part of a figure's caption that depends on the runs: shading, runs left out, truncation."""
    if anchor == "rounds":
        shaded = " Shaded rounds had attackers taking part." if attack_rounds(entries) else ""
        return shaded + _omitted(entries, _has_rounds, "no per-round history, e.g. centralized")
    if anchor == "confusion" and sum(data.confusion(e.run) is not None for e in entries) > MAX_CONFUSIONS:
        return f" Showing the first {MAX_CONFUSIONS} runs with a confusion matrix."
    if anchor == "norms":
        return _omitted(entries, lambda r: len(data.norm_points(r)[1]) > 0, "no update norms recorded")
    if anchor == "flags":
        return _omitted(entries, data.has_flags, "no flag records")
    return ""


def figure_section(anchor: str, draw: Callable[[Sequence[Entry]], str | None], alt: str, caption: str,
                   entries: Sequence[Entry]) -> str | None:
    """A figure (SVG, report/charts.py) with its caption, None when the figure has no data."""
    svg = draw(entries)
    if svg is None:
        return None
    return f'<p class="note">{caption}{caption_notes(anchor, entries)}</p>' + svg_img(svg, alt)


def _safe(title: str, build: Callable[[], str | None]) -> str | None:
    """Run a section builder; an unexpected error becomes a visible one-line note and a warning."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - a report must never lose its other sections
        warnings.warn(f"report section '{title}' could not be drawn: {exc!r}", RuntimeWarning, stacklevel=2)
        return f'<p class="note">This section could not be drawn: {escape(type(exc).__name__)}: {escape(str(exc))}</p>'


# A banner rule takes the runs and returns a warning sentence (plain text) or None. Banners sit under the
# title, before every section, for what a reader must know before trusting any number below.
BannerRule = Callable[[Sequence[Mapping]], "str | None"]


def nothing_poisoned(runs: Sequence[Mapping]) -> str | None:
    """A centralized run whose poison touched no training row: its "poisoned" model is a second clean model."""
    names = [data.run_name(r, i) for i, r in enumerate(runs)
             if r.get("kind") == "centralized" and data.count(data.final(r).get("poison_count")) == 0]
    return (f"No training row was poisoned in {', '.join(names)}: the poisoned model was trained on clean data, "
            "so any difference from the baseline is training noise, not an attack." if names else None)


def run_warnings(runs: Sequence[Mapping]) -> str | None:
    """The runs' own warnings (metrics.json "warnings", e.g. an attack that never acts within the configured
    rounds, so its ASR measures no attack), one banner for all; None when there are none."""
    lines = [f"{data.run_name(r, i)}: {w}" for i, r in enumerate(runs)
             if isinstance(r.get("warnings"), list) for w in r["warnings"]]
    return ("Read these results with care. " + " | ".join(lines)) if lines else None


BANNERS: list[BannerRule] = [run_warnings, nothing_poisoned]


def banners(runs: Sequence[Mapping]) -> str:
    """The banners every rule in BANNERS raises for these runs, as escaped HTML ('' when none).
    A rule that fails is skipped with a RuntimeWarning, like a section that cannot be drawn."""
    found = []
    for rule in BANNERS:
        try:
            message = rule(runs)
        except Exception as exc:  # noqa: BLE001 - a broken rule must not cost the report
            warnings.warn(f"report banner {getattr(rule, '__name__', rule)!s} failed: {exc!r}", RuntimeWarning,
                          stacklevel=2)
            continue
        if message:
            found.append(message)
    return "".join(f'<div class="banner" role="alert">{escape(str(m))}</div>' for m in found)


def render(runs: Sequence[dict], title: str, gallery_png: bytes | None = None,
           extra_sections: Sequence[tuple[str, str]] | None = None) -> str:
    """The whole page as a string. extra_sections are (title, HTML body) pairs; titles are escaped, bodies are not."""
    runs = [r if isinstance(r, Mapping) else {} for r in runs]
    colors = palette(len(runs))
    entries = [Entry(data.run_name(r, i), colors[i], dict(r)) for i, r in enumerate(runs)]
    figs = {anchor: (anchor, title, lambda a=anchor, d=draw, alt=alt, c=caption: figure_section(a, d, alt, c, entries))
            for anchor, title, draw, alt, caption in FIGURES}
    if centralized.all_baseline_per_class(entries):
        del figs["per-class"]  # already drawn beside the baseline's
    sections: list[tuple[str, str, Callable[[], str | None]]] = [
        ("summary", "Summary", lambda: summary(entries) if entries else '<p class="note">No runs to report.</p>'),
        ("baseline", "Clean baseline vs poisoned model", lambda: centralized.baseline_section(entries)),
        ("triggered", "The backdoor: predictions on triggered inputs", lambda: centralized.triggered_section(entries)),
        ("poison", "The poison", lambda: centralized.poison_section(entries)),
        ("examples", "Examples: clean vs poisoned", lambda: centralized.examples_section(entries)),
        ("detections", "Detection quality", lambda: detection_table(entries)),
        ("defenses", "Defenses", lambda: defense_table(entries)),
        *(figs[a] for a in ("roc", "rounds", "confusion") if a in figs),
        ("flips", "Targeted misclassifications", lambda: flips_table(entries)),
        ("gallery", "Trigger gallery", lambda: gallery(gallery_png)),
        *(figs[a] for a in ("norms", "flags", "per-class") if a in figs),
        *((f"extra-{i}", str(t), (lambda b=b: str(b))) for i, (t, b) in enumerate(extra_sections or [])),
        ("config", "Config", lambda: config_section(entries)),
    ]
    built = [(anchor, name, body) for anchor, name, build in sections if (body := _safe(name, build))]
    nav = "\n".join(f'<a href="#{a}">{escape(n)}</a>' for a, n, _ in built)
    body = "".join(f'<section id="{a}"><h2>{escape(n)}</h2>{b}</section>' for a, n, b in built)
    kinds = sorted({str(r.get("kind")) for r in runs if r.get("kind")})
    sub = f"{len(runs)} run{'s' if len(runs) != 1 else ''}" + (f" · {escape(', '.join(kinds))}" if kinds else "")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
            f'<body><main><h1>{escape(title)}</h1><p class="sub">poisonlab report · {sub}</p>'
            f'<div id="banners">{banners(runs)}</div>'
            f"<nav>{nav}</nav>\n{body}\n</main></body></html>\n")
