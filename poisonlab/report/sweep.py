"""The sweep report (runs/<sweep>/report.html): attack x defense heatmaps and a sortable table of every cell.

`poisonlab sweep` writes it after the last cell (poisonlab/sweep.py). Each grid cell's metrics.json is
read with the same accessors as the run report, so a number here is the number in that cell's own
report: final clean accuracy, attack success rate (ASR) and the *flagged* precision and recall
(federated: pooled over all rounds, counting only sampled clients; centralized: the first detector).
Cells that differ only by `seed` are one heatmap square: the mean over the seeds that measured it,
± the standard deviation (population, as summary.md), with the count when some seed did not measure
it. The first non-seed grid key gives the rows, the others the columns. The page is one file with
inline CSS and one small inline script (the table sort); links go to each cell's report.html.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import quote

import matplotlib
import numpy as np

from poisonlab.report import data
from poisonlab.report.fmt import NOT_MEASURED, NOT_RUN, seconds
from poisonlab.report.html import CSS, banners
from poisonlab.rundir import atomic_write_text

SEED_KEY = "seed"
METRICS = [  # key, title, what it means
    ("clean_accuracy", "Clean accuracy", "final model on the clean test set (higher is better)"),
    ("attack_success_rate", "Attack success rate", "triggered test inputs whose true class is not the target, "
                                                   "predicted as the target (lower is better)"),
    ("flag_precision", "Flagged: precision", "share of flagged clients (or samples) that really were malicious"),
    ("flag_recall", "Flagged: recall", "share of malicious clients (or samples) that were flagged"),
]

SWEEP_CSS = """
.map{flex:0 1 auto}
.map p.note{max-width:540px}
table.heat td,table.heat th{padding:4px 7px}
table.heat td{min-width:72px;text-align:center;white-space:nowrap;font-variant-numeric:tabular-nums}
table.heat td small{display:block;font-size:.75rem;opacity:.85}
table.heat td.empty{background:#eeeeee;color:#777;font-style:italic}
table.cells th{cursor:pointer;user-select:none;white-space:nowrap}
table.cells th[aria-sort=ascending]::after{content:" \\25B2"}
table.cells th[aria-sort=descending]::after{content:" \\25BC"}
"""

# Sorts table.cells by the clicked column: numbers by their data-v value (cells without one last), text
# alphabetically; a second click reverses. No library, nothing fetched.
SORT_SCRIPT = """<script>
document.querySelectorAll('table.cells').forEach(function (tbl) {
  tbl.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var up = th.getAttribute('aria-sort') !== 'ascending';
      tbl.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
      var body = tbl.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) { var c = row.cells[col]; return c.hasAttribute('data-v') ? c.getAttribute('data-v') : null; }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return (x === null) - (y === null);
        var nx = parseFloat(x), ny = parseFloat(y);
        var d = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return up ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
</script>"""


@dataclass(frozen=True)
class SweepCell:
    """One grid cell: its settings (grid key -> value), its directory name and its metrics (None: not finished)."""

    settings: dict
    slug: str
    metrics: dict | None


def cell_figures(run: Mapping | None) -> dict[str, float]:
    """The four figures of one cell (nan where not measured), exactly as its own report computes them."""
    if run is None:
        return {key: float("nan") for key, _, _ in METRICS}
    fin = data.final(run)
    out = {"clean_accuracy": data.num(fin.get("clean_accuracy")),
           "attack_success_rate": data.num(fin.get("attack_success_rate"))}
    tally = data.flag_tally(run)
    if tally is not None:
        out["flag_precision"], out["flag_recall"] = tally.precision, tally.recall
    else:
        first = next(iter(data.detections(run)), {})
        out["flag_precision"], out["flag_recall"] = data.num(first.get("precision")), data.num(first.get("recall"))
    return out


def labels(cells: Sequence[SweepCell], short: Callable[[object], str]) -> dict[str, dict[str, str]]:
    """For each grid key: the canonical JSON of each value -> a label, short(value), made unique with #2, #3."""
    out: dict[str, dict[str, str]] = {}
    for key in dict.fromkeys(k for c in cells for k in c.settings):
        names: dict[str, str] = {}
        for c in cells:
            value = c.settings.get(key)
            canon = _canon(value)
            if canon not in names:
                label, n = short(value), 1
                while label in names.values():
                    n += 1
                    label = f"{short(value)} #{n}"
                names[canon] = label
        out[key] = names
    return out


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class Spread:
    """The values of one metric over a group's seeds: mean, population std, how many measured it."""

    values: tuple[float, ...]
    seeds: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.values)) if self.values else float("nan")


def groups(cells: Sequence[SweepCell], names: Mapping[str, Mapping[str, str]]):
    """(row label, column label) -> the cells that differ only by seed, with the row and column label order."""
    keys = [k for k in names if k != SEED_KEY]
    row_key, col_keys = (keys[0], keys[1:]) if keys else (None, [])
    found: dict[tuple[str, str], list[SweepCell]] = {}
    for c in cells:
        row = names[row_key][_canon(c.settings.get(row_key))] if row_key else "all cells"
        col = " · ".join(names[k][_canon(c.settings.get(k))] for k in col_keys) or _title(row_key)
        found.setdefault((row, col), []).append(c)
    rows = list(dict.fromkeys(r for r, _ in found))
    cols = list(dict.fromkeys(c for _, c in found))
    return found, rows, cols, row_key, col_keys


def _title(key: str | None) -> str:
    return "all cells" if key is None else key.rsplit(".", 1)[-1]


def spread(members: Sequence[SweepCell], metric: str) -> Spread:
    values = tuple(v for c in members if not math.isnan(v := cell_figures(c.metrics)[metric]))
    return Spread(values, len(members))


def _colour(value: float) -> tuple[str, str]:
    """(background, text colour) of a fraction on the viridis scale (0 dark purple .. 1 yellow)."""
    rgba = matplotlib.colormaps["viridis"](min(max(value, 0.0), 1.0))
    return matplotlib.colors.to_hex(rgba), "#000" if value > 0.55 else "#fff"


def heat_cell(s: Spread, why_empty: str) -> str:
    if not s.values:
        return f'<td class="empty">{escape(why_empty)}</td>'
    bg, fg = _colour(s.mean)
    spread_text = f" ± {100 * s.std:.1f}" if len(s.values) > 1 else ""  # one value has no spread
    count = (f"<small>{len(s.values)} of {s.seeds} seeds</small>" if len(s.values) < s.seeds
             else f"<small>{s.seeds} seeds</small>" if s.seeds > 1 else "")
    return f'<td style="background:{bg};color:{fg}">{100 * s.mean:.1f}{spread_text}{count}</td>'


def heatmap(metric: str, found, rows, cols, row_key, col_keys) -> str:
    """One metric as an HTML heatmap table (rows: first grid key, columns: the other keys)."""
    corner = f"{_title(row_key)} \\ {' · '.join(_title(k) for k in col_keys) or 'value'}"
    head = f"<th>{escape(corner)}</th>" + "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        tds = []
        for c in cols:
            members = found.get((r, c))
            if not members:
                tds.append('<td class="empty">not in the grid</td>')
            elif all(m.metrics is None for m in members):
                tds.append('<td class="empty">not run</td>')
            else:
                tds.append(heat_cell(spread(members, metric), _why_empty(metric, members)))
        body.append(f"<tr><th>{escape(r)}</th>{''.join(tds)}</tr>")
    return f'<table class="heat"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _why_empty(metric: str, members: Sequence[SweepCell]) -> str:
    """Why a heatmap square has no number: the reason the cells' reports would give."""
    runs = [m.metrics for m in members if m.metrics is not None]
    if metric == "attack_success_rate":
        return "no trigger"
    tallies = [data.flag_tally(r) for r in runs]
    if metric.startswith("flag_") and any(t is not None for t in tallies):
        if metric == "flag_precision":
            return "nobody flagged"
        return "no attacker"
    if metric.startswith("flag_") and not any(data.detections(r) for r in runs):
        return "no flags recorded"
    return "not measured"


def _pct_cell(value: float) -> str:
    return (f"<td>{NOT_MEASURED}</td>" if math.isnan(value)
            else f'<td data-v="{value:.6f}">{100 * value:.2f}%</td>')


def cell_table(cells: Sequence[SweepCell], names, out_dir: Path) -> str:
    """Every cell, one row: its settings, seed, four figures, wall time, and a link to its report."""
    keys = [k for k in names if k != SEED_KEY]
    head = ([_title(k) for k in keys] + ([SEED_KEY] if SEED_KEY in names else [])
            + [t for _, t, _ in METRICS] + ["wall time", "report"])
    rows = []
    for i, c in enumerate(cells):
        label = [names[k][_canon(c.settings.get(k))] for k in keys]
        tds = [f'<td data-v="{escape(v)}">{escape(v)}</td>' for v in label]
        if SEED_KEY in names:
            seed = c.settings.get(SEED_KEY)
            tds.append(f'<td data-v="{escape(str(seed))}">{escape(str(seed))}</td>')
        if c.metrics is None:
            tds += [f"<td>{NOT_RUN}</td>"] * (len(METRICS) + 1)
        else:
            figures = cell_figures(c.metrics)
            tds += [_pct_cell(figures[k]) for k, _, _ in METRICS]
            wall = data.num(c.metrics.get("wall_time"))
            tds.append(f"<td>{seconds(wall)}</td>" if math.isnan(wall) else f'<td data-v="{wall:.3f}">{seconds(wall)}</td>')
        report = out_dir / c.slug / "report.html"
        tds.append(f'<td data-v="{i:06d}"><a href="{quote(c.slug)}/report.html" title="{escape(c.slug)}">open</a></td>'
                   if report.is_file() else f'<td data-v="{i:06d}"><span class="na">no report</span></td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    header = "".join(f'<th title="click to sort">{escape(h)}</th>' for h in head)
    return f'<table class="cells"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def grid_legend(names, cells: Sequence[SweepCell]) -> str:
    """Each grid key's labels and the exact values they stand for."""
    parts = []
    for key, values in names.items():
        if key == SEED_KEY:
            continue
        raw = {}
        for c in cells:
            raw.setdefault(_canon(c.settings.get(key)), c.settings.get(key))
        items = "".join(f"<tr><td>{escape(label)}</td><td class=\"left\"><code>{escape(json.dumps(raw[canon], default=str))}"
                        f"</code></td></tr>" for canon, label in values.items())
        parts.append(f"<h3>{escape(key)}</h3><table><thead><tr><th>label</th><th class=\"left\">value</th></tr></thead>"
                     f"<tbody>{items}</tbody></table>")
    return "".join(parts)


def render_sweep(title: str, cells: Sequence[SweepCell], out_dir: Path, short: Callable[[object], str] = str) -> str:
    """The sweep report page as a string."""
    names = labels(cells, short)
    found, rows, cols, row_key, col_keys = groups(cells, names)
    finished = [c for c in cells if c.metrics is not None]
    seeds = sorted({str(c.settings.get(SEED_KEY)) for c in cells}) if SEED_KEY in names else []
    sections = []
    heat = []
    for key, name, meaning in METRICS:
        heat.append(f'<div class="map"><h3>{escape(name)}</h3><p class="note">{escape(meaning)}; in %, mean over '
                    "seeds ± standard deviation.</p>" + heatmap(key, found, rows, cols, row_key, col_keys) + "</div>")
    sections.append(("heatmaps", "Attack x defense", '<div class="pair">' + "".join(heat) + "</div>" + (
        '<p class="note">Colour: the mean on one scale from 0% (dark) to 100% (bright) in every map. Flags are '
        "pooled over all rounds for federated cells (only sampled clients count) and come from the first detector "
        "for centralized cells, as in each cell's report. A grey square says why it has no number.</p>")))
    sections.append(("cells", "Every cell", '<p class="note">Click a column header to sort; the last column links '
                     "to the cell's own report.</p>" + cell_table(cells, names, out_dir)))
    sections.append(("grid", "The grid", grid_legend(names, cells)))
    nav = "\n".join(f'<a href="#{a}">{escape(n)}</a>' for a, n, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{escape(n)}</h2>{b}</section>' for a, n, b in sections)
    runs = [{**c.metrics, "name": c.slug} for c in finished]
    sub = (f"poisonlab sweep report · {len(cells)} cells ({len(finished)} finished)"
           + (f" · seeds {escape(', '.join(seeds))}" if seeds else ""))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}{SWEEP_CSS}</style></head>\n"
            f'<body><main><h1>{escape(title)}</h1><p class="sub">{sub}</p>'
            f'<div id="banners">{banners(runs)}</div>'
            f"<nav>{nav}</nav>\n{body}\n</main>{SORT_SCRIPT}</body></html>\n")


def write_sweep_report(path, title: str, cells: Sequence[SweepCell], short: Callable[[object], str] = str) -> Path:
    """Write the sweep report to `path` atomically (links are relative to its directory); return the path."""
    path = Path(path)
    return atomic_write_text(path, render_sweep(title, cells, path.parent, short))
