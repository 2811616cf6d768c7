"""The backdoor leaderboard: every attack x every defense of a sweep, scored as BackdoorBench scores them.

A leaderboard is a ``poisonlab sweep`` whose cells are centralized backdoor experiments with a
``defend:`` section (configs/backdoor-leaderboard.yaml: the grid runs attacks x defenses x seeds).
Cells that differ only in their defenses share one trained clean and poisoned model (experiment.py
keeps it with shared_builds.shared for the sweep), so a defense never pays for the attack's training,
and a defense added later adds cells without rerunning the finished ones. After the sweep, ``write_leaderboard`` reads each finished cell's metrics.json
"defense" record and writes, beside the sweep's summary:

- leaderboard.csv: one row per (attack, defense): the mean and standard deviation over seeds of
  clean accuracy (C-Acc), attack success rate (ASR), robust accuracy (RA) and the defense
  effectiveness rating (DER, defend/evaluate.py), the seconds each defense took, and how many seeds;
- leaderboard.md: the same as four attack x defense matrices (mean ± std, percent), and each
  defense's mean DER, ranked over the attacks that work on the undefended model (ASR >= 50%), with the mean
  over all attacks beside it;
- leaderboard.html: the four matrices as heatmaps, one self-contained file.

The "none" column is the undefended poisoned model of the same cell; "refused" marks a defense that
refused the model or data in one line (e.g. DP-SGD on a batch-norm model), never a made-up number.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

from poisonlab.rundir import atomic_write_text, write_csv

METRICS = (("clean_accuracy", "Clean accuracy (C-Acc)", True), ("attack_success_rate", "Attack success rate (ASR)", False),
           ("robust_accuracy", "Robust accuracy (RA)", True), ("der", "Defense effectiveness rating (DER)", True))
SEED_KEY = "seed"
NONE = "none"


def defense_labels(pairs: list[tuple[str, dict]]) -> dict[tuple[str, str], str]:
    """(name, params as sorted JSON) -> a column label: the name, with its parameters where the same name
    appears with different parameters."""
    keys = {(name, json.dumps(params or {}, sort_keys=True)) for name, params in pairs}
    names = [name for name, _ in keys]
    return {(name, p): name if names.count(name) < 2 or p == "{}" else
            name + "(" + ", ".join(f"{k}={_value_label(v)}" for k, v in sorted(json.loads(p).items())) + ")"
            for name, p in keys}


def _value_label(value: Any) -> str:
    """A parameter value in a column label: a component spec ({name, params}) by its name, anything else as is."""
    return str(value["name"]) if isinstance(value, dict) and "name" in value else str(value)


def attack_label(value: Any) -> str:
    """A grid value of the poison list as a row label: each poison's name, with its trigger's name if it has one."""
    items = value if isinstance(value, list) else [value]
    parts = []
    for item in items:
        if not isinstance(item, dict) or "name" not in item:
            parts.append(str(item))
            continue
        trigger = (item.get("params") or {}).get("trigger")
        trigger = trigger.get("name") if isinstance(trigger, dict) else trigger
        parts.append(str(item["name"]) + (f":{trigger}" if isinstance(trigger, str) else ""))
    return "+".join(parts)


def distinct_labels(values: list) -> dict[str, str]:
    """Grid values of the poison list (keyed by their JSON) -> row labels: attack_label, plus the parameters
    that tell apart values whose labels collide (e.g. the same trigger to one target and to all_to_all)."""
    keys = [json.dumps(v, sort_keys=True, default=str) for v in values]
    base = {k: attack_label(v) for k, v in zip(keys, values)}
    out = {}
    for key, value in zip(keys, values):
        twins = [json.loads(k) for k in keys if base[k] == base[key]]
        if len(twins) < 2:
            out[key] = base[key]
            continue
        mine = _params(value)
        differing = sorted(k for k in mine if k != "trigger" and any(_params(t).get(k) != mine[k] for t in twins))
        out[key] = base[key] + ("(" + ", ".join(f"{k}={mine[k]}" for k in differing) + ")" if differing else "")
    return out


def _params(value) -> dict:
    first = value[0] if isinstance(value, list) and value else value
    return dict(first.get("params") or {}) if isinstance(first, dict) else {}


def cell_rows(attack: str, seed, metrics: dict) -> list[dict]:
    """The leaderboard rows of one finished cell: the undefended model ("none") and each defense (its name and
    parameters under "defense" and "params"; sweep_rows turns them into labels)."""
    found = (metrics or {}).get("defense")
    if not found:
        return []
    rows = [{"attack": attack, "defense": NONE, "params": {}, "seed": seed, **_figures(found["baseline"]),
             "der": None, "seconds": None}]
    for record in found["defenses"]:
        rows.append({"attack": attack, "defense": record["defense"], "params": record.get("params") or {},
                     "seed": seed, **_figures(record), "der": record.get("der"), "seconds": record.get("wall_time"),
                     "refused": bool(record.get("refused"))})
    return rows


def _figures(record: dict) -> dict:
    return {k: record.get(k) for k in ("clean_accuracy", "attack_success_rate", "robust_accuracy")}


def sweep_rows(doc: dict, out_dir: Path) -> list[dict]:
    """Leaderboard rows of every finished cell of the sweep doc in out_dir. The attack is named by the grid
    settings other than the seed and the defenses; the undefended model ("none") counts once per attack and seed
    (cells that differ only in their defenses share it)."""
    from poisonlab.sweep import _short, expand_grid, finished_metrics

    rows, seen = [], set()
    poison_labels = distinct_labels((doc.get("grid") or {}).get("poison") or [])
    for cell in expand_grid(doc):
        parts = [poison_labels[json.dumps(v, sort_keys=True, default=str)] if k == "poison" else _short(v)
                 for k, v in cell.settings.items() if not _is_seed_or_defense(k)]
        if "poison" not in cell.settings:  # the attack is the base document's
            parts.insert(0, attack_label(cell.doc.get("poison") or []) or "no poison")
        attack = " · ".join(parts)
        seed = next((v for k, v in cell.settings.items() if k.split(".")[-1] == SEED_KEY), doc.get("seed", 0))
        for row in cell_rows(attack, seed, finished_metrics(out_dir / cell.slug, cell.doc)):
            if row["defense"] == NONE:
                if (attack, str(seed)) in seen:
                    continue
                seen.add((attack, str(seed)))
            rows.append(row)
    labels = defense_labels([(r["defense"], r["params"]) for r in rows if r["defense"] != NONE])
    for row in rows:
        params = row.pop("params")
        if row["defense"] != NONE:
            row["defense"] = labels[(row["defense"], json.dumps(params, sort_keys=True))]
    return rows


def _is_seed_or_defense(key: str) -> bool:
    return key.split(".")[-1] == SEED_KEY or key.split(".")[0] == "defend"


def summarize(rows: list[dict]) -> list[dict]:
    """One entry per (attack, defense): mean and population std over seeds of each metric, seconds, seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["attack"], row["defense"]), []).append(row)
    out = []
    for (attack, defense), members in groups.items():
        entry = {"attack": attack, "defense": defense, "seeds": len(members),
                 "refused": sum(bool(m.get("refused")) for m in members)}
        for key, _, _ in METRICS + (("seconds", "", True),):
            values = [m[key] for m in members if m.get(key) is not None and not math.isnan(m[key])]
            entry[f"{key}_mean"] = sum(values) / len(values) if values else None
            entry[f"{key}_std"] = (math.sqrt(sum((v - entry[f"{key}_mean"]) ** 2 for v in values) / len(values))
                                   if values else None)
        out.append(entry)
    return out


def _axes(summary: list[dict]) -> tuple[list[str], list[str]]:
    attacks = list(dict.fromkeys(e["attack"] for e in summary))
    defenses = [NONE] + [d for d in dict.fromkeys(e["defense"] for e in summary) if d != NONE]
    return attacks, defenses


EFFECTIVE_ASR = 0.5
"""An attack "works" on the undefended model when its mean ASR there is at least this: only then does DER
measure how well a defense removes a backdoor (elsewhere it only measures the accuracy the defense costs)."""


def effective_attacks(summary: list[dict]) -> set[str]:
    """The attacks whose undefended model ("none") has a mean ASR of at least EFFECTIVE_ASR."""
    return {e["attack"] for e in summary if e["defense"] == NONE and e["attack_success_rate_mean"] is not None
            and e["attack_success_rate_mean"] >= EFFECTIVE_ASR}


def ranking(summary: list[dict]) -> list[tuple[str, float, int, float | None, float | None, int]]:
    """(defense, mean DER over the attacks that measured it, how many attacks, mean seconds a run, mean DER over
    the effective attacks among them (None: none), how many), best first: by the effective attacks' mean DER
    where there are effective attacks, else by the mean over all."""
    works = effective_attacks(summary)
    per: dict[str, list[tuple[float, float | None, bool]]] = {}
    for e in summary:
        if e["defense"] != NONE and e["der_mean"] is not None:
            per.setdefault(e["defense"], []).append((e["der_mean"], e["seconds_mean"], e["attack"] in works))
    out = []
    for d, v in per.items():
        secs = [t for _, t, _ in v if t is not None]
        good = [x for x, _, w in v if w]
        out.append((d, sum(x for x, _, _ in v) / len(v), len(v), sum(secs) / len(secs) if secs else None,
                    sum(good) / len(good) if good else None, len(good)))
    if works:  # defenses never scored on an effective attack go last
        return sorted(out, key=lambda t: (t[4] is None, -(t[4] or 0.0)))
    return sorted(out, key=lambda t: -t[1])


def _pm(entry: dict | None, key: str) -> str:
    if entry is not None and entry.get("refused") and entry["refused"] == entry["seeds"]:
        return "refused"
    if entry is None or entry.get(f"{key}_mean") is None:
        return "-"
    std = entry[f"{key}_std"] if entry["seeds"] > 1 else None
    return f"{100 * entry[f'{key}_mean']:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def markdown(summary: list[dict]) -> str:
    """The four attack x defense matrices (percent, mean ± std over seeds) and the DER ranking."""
    attacks, defenses = _axes(summary)
    at = {(e["attack"], e["defense"]): e for e in summary}
    parts = []
    for key, title, _ in METRICS:
        lines = [f"### {title}", "", "| attack \\ defense | " + " | ".join(defenses) + " |",
                 "|---|" + "---|" * len(defenses)]
        lines += ["| " + a + " | " + " | ".join(_pm(at.get((a, d)), key) for d in defenses) + " |" for a in attacks]
        parts.append("\n".join(lines))
    rank = ["### Ranking by mean DER", "",
            f"Effective attacks: those whose undefended ASR is at least {100 * EFFECTIVE_ASR:.0f}% (only there does DER"
            " measure the backdoor's removal); ranked by their mean DER.", "",
            "| defense | mean DER, effective attacks (%) | effective attacks | mean DER, all attacks (%) | attacks |"
            " seconds a run |", "|---|---|---|---|---|---|"]
    rank += [f"| {d} | {'-' if g is None else f'{100 * g:.1f}'} | {ng} | {100 * v:.1f} | {n} |"
             f" {'-' if t is None else f'{t:.1f}'} |" for d, v, n, t, g, ng in ranking(summary)]
    return "\n\n".join(parts + ["\n".join(rank)]) + "\n"


def _colour(value: float, higher_is_better: bool) -> str:
    """A red (bad) .. green (good) background for a fraction."""
    good = value if higher_is_better else 1.0 - value
    good = min(max(good, 0.0), 1.0)
    return f"hsl({int(120 * good)},65%,{78 - 10 * good:.0f}%)"


def html(title: str, summary: list[dict]) -> str:
    """leaderboard.html: the four matrices as heatmaps (no script, nothing fetched)."""
    attacks, defenses = _axes(summary)
    at = {(e["attack"], e["defense"]): e for e in summary}
    body = [f"<h1>{escape(title)}: backdoor leaderboard</h1>",
            "<p>Rows: attacks; columns: defenses (<em>none</em> = the undefended poisoned model). Mean ± std over"
            " seeds, percent. DER = [max(0, ΔASR) − max(0, ΔACC) + 1] / 2 (BackdoorBench); 50 = no change.</p>"]
    for key, name, better in METRICS:
        head = "<tr><th>attack \\ defense</th>" + "".join(f"<th>{escape(d)}</th>" for d in defenses) + "</tr>"
        rows = []
        for a in attacks:
            tds = []
            for d in defenses:
                e = at.get((a, d))
                if e is None or e.get(f"{key}_mean") is None:
                    tds.append(f'<td class="empty">{escape(_pm(e, key))}</td>')
                else:
                    tds.append(f'<td style="background:{_colour(e[f"{key}_mean"], better)}">{escape(_pm(e, key))}</td>')
            rows.append(f"<tr><th>{escape(a)}</th>{''.join(tds)}</tr>")
        body.append(f"<h2>{escape(name)}</h2><table>{head}{''.join(rows)}</table>")
    css = ("body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 24px}"
           "td,th{border:1px solid #ccc;padding:4px 7px;font-size:.85rem;white-space:nowrap;text-align:center}"
           "th{background:#f4f4f4}td.empty{background:#eee;color:#888}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)} leaderboard</title>"
            f"<style>{css}</style></head><body>{''.join(body)}</body></html>")


def write_leaderboard(doc: dict, out_dir: Path) -> list[Path]:
    """leaderboard.csv, .md and .html in out_dir when the sweep's cells ran defenses; [] otherwise."""
    rows = sweep_rows(doc, out_dir)
    if not rows:
        return []
    summary = summarize(rows)
    title = str(doc.get("name") or out_dir.name)
    return [write_csv(out_dir / "leaderboard.csv", summary),
            atomic_write_text(out_dir / "leaderboard.md", f"# {title}: backdoor leaderboard\n\n" + markdown(summary)),
            atomic_write_text(out_dir / "leaderboard.html", html(title, summary))]
