"""Sweeps: the cartesian product of a config's ``grid:`` section, one run directory per cell.

A cell whose metrics.json exists with the same resolved config is skipped, so rerunning a
sweep does no work for finished cells. The summary groups cells that differ only by seed and
reports the mean and standard deviation of the final metrics, as CSV and markdown.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poisonlab.config.load import parse, set_path
from poisonlab.config.yaml_limits import short
from poisonlab.config.validate import check_components
from poisonlab.errors import ConfigError
from poisonlab.outdir import claim
from poisonlab.progress import duration, eta
from poisonlab.rundir import atomic_write_text, write_csv

SUMMARY_METRICS = ("clean_accuracy", "attack_success_rate", "flag_precision", "flag_recall")


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its settings (dotted key -> value), its document and directory name."""

    settings: dict[str, Any]
    doc: dict
    slug: str


MAX_CELLS = 10_000
"""Most cells a sweep expands to (each is a full experiment; more is a typo in the grid)."""


def expand_grid(doc: dict) -> list[Cell]:
    """Every combination of the grid's values applied to the base document (grid removed)."""
    grid = doc.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise ConfigError("sweep needs a 'grid:' section mapping key paths to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{str(key)[:80]} must be a non-empty list of values; got {short(values)}")
    count = math.prod(len(values) for values in grid.values())
    if count > MAX_CELLS:
        raise ConfigError(f"grid has {count} cells ({' x '.join(str(len(v)) for v in grid.values())});"
                          f" accepted: at most {MAX_CELLS} cells per sweep")
    base = {k: v for k, v in doc.items() if k != "grid"}
    cells = []
    for combo in itertools.product(*grid.values()):
        settings = dict(zip(grid.keys(), combo))
        cell_doc = copy.deepcopy(base)
        for key, value in settings.items():
            set_path(cell_doc, key, copy.deepcopy(value))
        cells.append(Cell(settings, cell_doc, cell_slug(settings)))
    return cells


def cell_slug(settings: dict[str, Any]) -> str:
    """A readable, filesystem-safe directory name for a cell, with a short hash for uniqueness."""
    parts = [f"{key.split('.')[-1]}-{_short(value)}" for key, value in settings.items()]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "__".join(parts))[:120] + f"__{digest}"


def _short(value: Any) -> str:
    """A short label for a grid value: a component's name, an adversary's poison+attack, or the value."""
    if value is None:
        return "none"
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])
    if isinstance(value, dict) and ("attack" in value or "poison" in value):
        names = [_short(value[k]) for k in ("poison", "attack") if value.get(k)]
        return "+".join(names) or "none"
    if isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value):
        return "+".join(str(v["name"]) for v in value)
    return str(value)


def config_digest(doc: dict) -> str:
    """SHA-256 of a resolved config document (canonical JSON)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def run_sweep(doc: dict, out_dir: Path, run_one: Callable[[Any, Path], dict],
              log: Callable[[str], None] = print, report: bool = True, executor=None) -> list[dict]:
    """Run every unfinished cell with run_one(config, cell_dir) -> metrics; return one summary row per cell.

    report: write out_dir/report.html comparing the cells (heatmaps, sortable table) after the last one.
    executor: how the unfinished cells run (poisonlab/sweep_exec.py; None: one after another, in order).
    """
    from poisonlab.sweep_exec import sequential

    cells = expand_grid(doc)
    configs = [parse(cell.doc) for cell in cells]  # validate every cell before running any
    for config in configs:
        check_components(config)
    claim(out_dir, "sweep")
    finished = [finished_metrics(out_dir / cell.slug, cell.doc) for cell in cells]
    for i, (cell, metrics) in enumerate(zip(cells, finished), 1):
        if metrics is not None:
            log(f"[{i}/{len(cells)}] finished already: {cell.slug}")
    todo = [i for i, metrics in enumerate(finished) if metrics is None]
    tasks = []
    for i in todo:
        (out_dir / cells[i].slug).mkdir(parents=True, exist_ok=True)
        tasks.append((configs[i], out_dir / cells[i].slug))
    if todo:
        log(f"running {len(todo)} of {len(cells)} cells")
    started = last = time.perf_counter()
    for done, (t, metrics) in enumerate((executor or sequential)(run_one, tasks) if tasks else (), 1):
        took, last = metrics.get("wall_time", time.perf_counter() - last), time.perf_counter()
        i = todo[t]
        cell = cells[i]
        atomic_write_text(out_dir / cell.slug / "cell.json", json.dumps({"settings": cell.settings,
                                                                          "digest": config_digest(cell.doc)}, default=str))
        finished[i] = metrics
        left = len(todo) - done
        log(f"[{i + 1}/{len(cells)}] done in {duration(took)}: {cell_result(metrics)}"
            + (f"; {left} to go, {eta(done, len(todo), time.perf_counter() - started)}" if left else
               f"; all {len(todo)} in {duration(time.perf_counter() - started)}"))
    rows = [{**{k: _short(v) for k, v in cell.settings.items()}, **final_figures(metrics)}
            for cell, metrics in zip(cells, finished)]
    if report:
        log(f"sweep report: {write_sweep_report(doc, out_dir, cells)}")
    return rows


def cell_result(metrics: dict) -> str:
    """A finished cell's figures in one line: clean accuracy, ASR, flag precision/recall (where measured)."""
    figures = final_figures(metrics)
    names = {"clean_accuracy": "clean acc.", "attack_success_rate": "ASR", "flag_precision": "flag precision",
             "flag_recall": "flag recall"}
    parts = [f"{label} {100 * figures[key]:.1f}%" for key, label in names.items() if figures.get(key) is not None]
    return ", ".join(parts + [_defense_result(d) for d in (metrics.get("defense") or {}).get("defenses", [])]) \
        or "no figures measured"


def _defense_result(record: dict) -> str:
    """One defense's figures after it ran (or why it refused), for a cell's log line."""
    if record.get("refused"):
        return f"{record['defense']} refused"
    figures = [f"{label} {100 * record[key]:.1f}%" for key, label in
               (("clean_accuracy", "clean acc."), ("attack_success_rate", "ASR")) if record.get(key) is not None]
    return f"after {record['defense']}: " + ", ".join(figures) if figures else f"{record['defense']}: no figures"


def write_sweep_report(doc: dict, out_dir: Path, cells: list[Cell]) -> Path:
    """out_dir/report.html: every cell's finished metrics.json compared (poisonlab/report/sweep.py)."""
    from poisonlab.report.sweep import SweepCell, write_sweep_report as write

    found = [SweepCell(cell.settings, cell.slug, finished_metrics(out_dir / cell.slug, cell.doc)) for cell in cells]
    return write(out_dir / "report.html", str(doc.get("name") or out_dir.name), found, short=_short)


def finished_metrics(cell_dir: Path, doc: dict) -> dict | None:
    """The metrics of a finished cell run with the same config, or None."""
    marker, metrics_path = cell_dir / "cell.json", cell_dir / "metrics.json"
    if not (marker.is_file() and metrics_path.is_file()):
        return None
    try:
        if json.loads(marker.read_text())["digest"] != config_digest(doc):
            return None
        return json.loads(metrics_path.read_text())
    except (ValueError, KeyError):
        return None


def final_figures(metrics: dict) -> dict:
    """The summary numbers of one run: final clean accuracy, ASR, mean flag precision/recall."""
    final = metrics.get("final", {})
    history = metrics.get("history", [])
    out = {"clean_accuracy": final.get("clean_accuracy"), "attack_success_rate": final.get("attack_success_rate")}
    for key in ("precision", "recall"):
        values = [h[key] for h in history if h.get(key) is not None]
        out[f"flag_{key}"] = sum(values) / len(values) if values else None
    return out


def summarize(rows: list[dict], seed_key: str = "seed") -> list[dict]:
    """Group rows that differ only by seed; mean and standard deviation of each summary metric."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = tuple((k, v) for k, v in row.items() if k != seed_key and k not in SUMMARY_METRICS)
        groups.setdefault(key, []).append(row)
    summary = []
    for key, members in groups.items():
        entry = dict(key)
        entry["seeds"] = len(members)
        for metric in SUMMARY_METRICS:
            values = [m[metric] for m in members if m.get(metric) is not None]
            entry[f"{metric}_mean"] = sum(values) / len(values) if values else None
            entry[f"{metric}_std"] = _std(values) if values else None
        summary.append(entry)
    return summary


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def write_summary(out_dir: Path, summary: list[dict]) -> tuple[Path, Path]:
    """summary.csv and summary.md (mean ± std in percent; plus an attack x defense matrix for 2-key grids)."""
    csv_path = write_csv(out_dir / "summary.csv", summary)
    text = markdown_table(summary)
    keys = [k for k in (summary[0] if summary else {}) if not k.endswith(("_mean", "_std")) and k != "seeds"]
    if len(keys) == 2:
        text += "\nClean accuracy / ASR (%), mean over seeds:\n\n" + matrix_table(summary, keys[0], keys[1])
    md_path = atomic_write_text(out_dir / "summary.md", text)
    return csv_path, md_path


def markdown_table(summary: list[dict]) -> str:
    """The summary as a markdown table: settings columns, then metric mean ± std (percent)."""
    if not summary:
        return "(no cells)\n"
    settings = [k for k in summary[0] if not k.endswith(("_mean", "_std")) and k != "seeds"]
    header = settings + ["seeds", "clean accuracy", "ASR", "flag precision", "flag recall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        cells = [str(row[k]) for k in settings] + [str(row["seeds"])]
        cells += [_pm(row[f"{m}_mean"], row[f"{m}_std"]) for m in SUMMARY_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def matrix_table(summary: list[dict], row_key: str, col_key: str) -> str:
    """A markdown matrix: rows = values of row_key, columns = values of col_key, cells 'accuracy / ASR' (%)."""
    rows = list(dict.fromkeys(r[row_key] for r in summary))
    cols = list(dict.fromkeys(r[col_key] for r in summary))
    cell = {(r[row_key], r[col_key]): r for r in summary}
    lines = [f"| {row_key.split('.')[-1]} \\ {col_key.split('.')[-1]} | " + " | ".join(cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for row in rows:
        values = []
        for col in cols:
            entry = cell.get((row, col))
            if entry is None:
                values.append("")
                continue
            acc, asr = entry["clean_accuracy_mean"], entry["attack_success_rate_mean"]
            values.append(_pct(acc) + (f" / {_pct(asr)}" if asr is not None else ""))
        lines.append(f"| {row} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.1f} ± {100 * (std or 0):.1f}"
