"""The centralized run's story, as report sections: the clean baseline next to the poisoned model,
the backdoor on triggered inputs, the poison itself, and what poisoned inputs look like.

Every section reads only what the runner recorded in metrics.json "final" (poisonlab/centralized.py
and report/record.py write it); a run without those keys (an older document, a federated run) simply
has no such section, and a value that was not recorded reads "not measured" or "not run".
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Mapping, Sequence
from html import escape

from poisonlab.report import data
from poisonlab.report.entry import Entry
from poisonlab.report.fmt import NOT_MEASURED, NOT_RUN, img, pct, table, td

THUMB = 84  # pixels: the shown size of an example image's longer side (small images are enlarged crisply)
DROP_PP = 5.0  # a per-class accuracy drop of at least this many points is highlighted


def centralized(entries: Sequence[Entry], needs: str) -> list[Entry]:
    """The centralized runs whose final block has the key `needs`."""
    return [e for e in entries if e.run.get("kind") == "centralized" and needs in data.final(e.run)]


def _per_run(entries: Sequence[Entry], build) -> str | None:
    """Each run's part under its name (the name only when there are several runs); None when all are empty."""
    parts = [(e, body) for e in entries if (body := build(e))]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0][1]
    return "".join(f"<h3>{escape(e.name)}</h3>{body}" for e, body in parts)


def change_pp(before, after) -> str:
    """after - before of two fractions, in percentage points with a sign; 'not measured' when either is missing."""
    a, b = data.num(before), data.num(after)
    if math.isnan(a) or math.isnan(b):
        return NOT_MEASURED
    return f"{100 * (b - a):+.2f} pp"


def _number(value, digits: int = 4) -> str:
    v = data.num(value)
    return NOT_MEASURED if math.isnan(v) else f"{v:.{digits}f}"


# ---------------------------------------------------------------- clean baseline vs poisoned model

def baseline_section(entries: Sequence[Entry]) -> str | None:
    """Clean baseline vs poisoned model: headline figures, targeted flips and per-class accuracy."""
    return _per_run(centralized(entries, "clean_accuracy_clean_model"), _baseline)


def _baseline(e: Entry) -> str:
    fin = data.final(e.run)
    rows = [[td("clean test accuracy"), td(pct(fin.get("clean_accuracy_clean_model"))),
             td(pct(fin.get("clean_accuracy"))),
             td(change_pp(fin.get("clean_accuracy_clean_model"), fin.get("clean_accuracy")))]]
    if fin.get("attack_success_rate") is None and fin.get("attack_success_rate_clean_model") is None:
        rows.append([td("attack success rate"), td(NOT_RUN), td(NOT_RUN),
                     td('<span class="na">the poison has no trigger</span>')])
    else:
        rows.append([td("attack success rate (triggered test inputs)"),
                     td(pct(fin.get("attack_success_rate_clean_model"))), td(pct(fin.get("attack_success_rate"))),
                     td(change_pp(fin.get("attack_success_rate_clean_model"), fin.get("attack_success_rate")))])
    loss0, loss = data.num(fin.get("loss_clean_model")), data.num(fin.get("loss"))
    rows.append([td("test loss (cross-entropy)"), td(_number(loss0)), td(_number(loss)),
                 td(NOT_MEASURED if math.isnan(loss0) or math.isnan(loss) else f"{loss - loss0:+.4f}")])
    before = data.as_dict(fin.get("flips_clean_model"))
    for pair, n in data.as_dict(fin.get("flips")).items():
        n0 = data.count(before.get(pair))
        n1 = data.count(n)
        rows.append([td(f"test inputs {escape(str(pair))} (true -> predicted)"),
                     td(NOT_MEASURED if n0 is None else str(n0)), td(NOT_MEASURED if n1 is None else str(n1)),
                     td(NOT_MEASURED if n0 is None or n1 is None else f"{n1 - n0:+d}")])
    head = table(["", "clean baseline", "poisoned model", "change"], rows)
    note = ('<p class="note">Both models have the same architecture, data split and seed; the baseline is trained '
            "on the clean training set, the poisoned model on the poisoned one. Attack success rate: triggered test "
            "inputs whose true class is not the target, predicted as the target. pp = percentage points.</p>")
    return head + note + (_per_class(e) or "")


def _per_class(e: Entry) -> str | None:
    """Per-class accuracy of both models (table and bars), or None when either is missing."""
    base, pois = data.per_class(e.run, "per_class_accuracy_clean_model"), data.per_class(e.run)
    if not len(base) or len(base) != len(pois):
        return None
    names = data.class_names(e.run, len(base))
    rows = []
    for name, b, p in zip(names, base, pois):
        change = change_pp(b, p)
        drop = not (math.isnan(b) or math.isnan(p)) and 100 * (p - b) <= -DROP_PP
        rows.append([td(escape(name)), td(pct(b)), td(pct(p)), td(f"<b>{change}</b>" if drop else change)])
    from poisonlab.report import plots  # matplotlib: only for a centralized run

    figure = img(plots.baseline_vs_poisoned(base, pois, names, e.color), "per-class accuracy, baseline vs poisoned")
    return (f"<h3>Per-class accuracy on clean test inputs</h3>"
            f'<p class="note">Changes of {DROP_PP:.0f} points or more are in bold: a drop on one class can show a '
            "targeted or label-flipping attack that the overall accuracy hides.</p>"
            '<div class="pair">' + table(["class", "clean baseline", "poisoned model", "change"], rows)
            + figure + "</div>")


# ---------------------------------------------------------------- the backdoor on triggered inputs

def triggered_section(entries: Sequence[Entry]) -> str | None:
    """Confusion matrices of both models on triggered test inputs: the backdoor as a bright target column."""
    return _per_run(centralized(entries, "confusion_triggered"), _triggered)


def _triggered(e: Entry) -> str | None:
    fin = data.final(e.run)
    cm, cm0 = data.confusion(e.run, "confusion_triggered"), data.confusion(e.run, "confusion_triggered_clean_model")
    if cm is None or cm0 is None or cm.shape != cm0.shape:
        return None
    names = data.class_names(e.run, cm.shape[0])
    target = data.count(fin.get("attack_target"))
    target = target if target is not None and target < cm.shape[0] else None
    from poisonlab.report import plots  # matplotlib: only for a centralized run

    png = plots.confusion_panels([("clean baseline, triggered inputs", cm0, names),
                                  ("poisoned model, triggered inputs", cm, names)], highlight=target)
    where = (f" The outlined column is the target class {escape(names[target])}: a bright column for the poisoned "
             "model is the backdoor firing, while the baseline (never trained on the trigger) keeps its diagonal."
             if target is not None else "")
    return (f'<p class="note">Test inputs with the trigger applied ({int(cm.sum())} inputs); rows are their true '
            f"classes, columns the predicted class, numbers are counts and colour is the share of the row.{where} "
            "The attack success rate counts only the rows whose true class is not the target.</p>"
            + img(png, "confusion matrices on triggered inputs, baseline and poisoned model"))


# ---------------------------------------------------------------- the poison

def poison_section(entries: Sequence[Entry]) -> str | None:
    """How many training rows were poisoned, by which poison, and which classes they came from and went to."""
    return _per_run(centralized(entries, "poison_count"), _poison)


def _poison(e: Entry) -> str | None:
    fin = data.final(e.run)
    n, size = data.count(fin.get("poison_count")), data.count(fin.get("train_size"))
    if n is None:
        return None
    share = f" of {size:,} training rows ({100 * n / size:.2f}%)" if size else ""
    parts = [f"<p><b>{n:,}</b> poisoned rows{share} in the set the poisoned model was trained on.</p>"]
    infos = [i for i in data.as_list(fin.get("poison_info")) if isinstance(i, Mapping)]
    if infos:
        rows = [[td(str(i + 1)), td(f"<code>{escape(json.dumps(info, default=str))}</code>", "left")]
                for i, info in enumerate(infos)]
        parts.append(table(["poison", "what it did (as the poison recorded it)"], rows))
    parts.append(_classes(e) or "")
    return "".join(parts)


def _classes(e: Entry) -> str | None:
    """Per-class table of poisoned rows: taken from (clean label) and trained as (poisoned label)."""
    touched = data.as_dict(data.final(e.run).get("poison_classes"))
    original, trained = data.counts(touched.get("original")), data.counts(touched.get("trained_as"))
    added = data.count(touched.get("added"))
    if original is None or trained is None or len(original) != len(trained):
        return None
    names = data.class_names(e.run, len(original))
    rows = [[td(escape(name)), td(str(o)), td(str(t))]
            for name, o, t in zip(names, original, trained) if o or t]
    note = ('<p class="note"><b>taken from</b>: poisoned rows by their clean label; <b>trained as</b>: every '
            "poisoned row by the label the poisoned model saw. Classes not listed were not touched."
            + (f" {added:,} poisoned rows were added after the clean set (they have no clean label)." if added else "")
            + "</p>")
    if not rows:
        return note
    return "<h3>Classes the poison touched</h3>" + table(["class", "taken from", "trained as"], rows) + note


# ---------------------------------------------------------------- examples

def examples_section(entries: Sequence[Entry]) -> str | None:
    """Clean vs poisoned training rows and clean vs triggered test inputs, as small inline images."""
    return _per_run(centralized(entries, "examples"), _examples)


def thumb(b64, alt: str) -> str | None:
    """A small <img> of a base64 PNG, enlarged crisply to about THUMB pixels; None if it is not a PNG."""
    if not isinstance(b64, str):
        return None
    try:
        png = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(png) < 24 or not png.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    width, height = struct.unpack(">II", png[16:24])
    if not width or not height:
        return None
    scale = max(1, THUMB // max(width, height))
    return (f'<img src="data:image/png;base64,{b64}" alt="{escape(alt)}" width="{width * scale}" '
            f'height="{height * scale}" style="image-rendering:pixelated">')


def _label(names: list[str], value) -> str:
    i = data.count(value)
    if i is None:
        return "?"
    return escape(names[i] if i < len(names) else str(i))


def _card(left: str | None, right: str | None, caption: str) -> str:
    missing = '<span class="na thumb">none</span>'
    return (f'<figure class="card"><div>{left or missing}<span class="arrow">&rarr;</span>{right or missing}</div>'
            f"<figcaption>{caption}</figcaption></figure>")


def _examples(e: Entry) -> str | None:
    found = data.as_dict(data.final(e.run).get("examples"))
    names = data.class_names(e.run, len(data.per_class(e.run)))
    target = data.count(data.final(e.run).get("attack_target"))
    parts = []
    train = [x for x in data.as_list(found.get("poisoned")) if isinstance(x, Mapping)]
    cards = [_card(thumb(x.get("clean"), "clean training row"), thumb(x.get("poisoned"), "poisoned training row"),
                   f"row {_label([], x.get('row'))}: "
                   + (f"label {_label(names, x.get('label'))}" if x.get("label") is not None else "added row")
                   + f" &rarr; {_label(names, x.get('poisoned_label'))}")
             for x in train]
    if cards:
        parts.append("<h3>Poisoned training rows</h3><p class=\"note\">Left: the row in the clean training set "
                     "(none for a row the poison added); right: the row the poisoned model was trained on.</p>"
                     f'<div class="cards">{"".join(cards)}</div>')
    trig = [x for x in data.as_list(found.get("triggered")) if isinstance(x, Mapping)]
    cards = []
    for x in trig:
        hit = target is not None and data.count(x.get("predicted")) == target
        label = f"true {_label(names, x.get('label'))}" if x.get("label") is not None else "held-out input"
        cards.append(_card(thumb(x.get("clean"), "clean test input"), thumb(x.get("triggered"), "triggered test input"),
                           f"{label}; baseline: {_label(names, x.get('predicted_clean_model'))}; "
                           + (f'<b class="hit">poisoned: {_label(names, x.get("predicted"))}</b>' if hit
                              else f"poisoned: {_label(names, x.get('predicted'))}")))
    if cards:
        parts.append("<h3>Triggered test inputs</h3><p class=\"note\">Left: a test input (none when the triggered "
                     "set is not the test set stamped row by row); right: with the trigger, and what each model "
                     "predicts for it. A prediction of the target class by the poisoned model is in bold.</p>"
                     f'<div class="cards">{"".join(cards)}</div>')
    return "".join(parts) or None


def all_baseline_per_class(entries: Sequence[Entry]) -> bool:
    """True when every run is a centralized run whose baseline section draws its per-class accuracy next to
    the baseline's, so the generic per-class figure would only repeat it."""
    shown = centralized(entries, "clean_accuracy_clean_model")
    return bool(entries) and len(shown) == len(entries) and all(
        0 < len(data.per_class(e.run)) == len(data.per_class(e.run, "per_class_accuracy_clean_model")) for e in shown)
