"""The defense matrix's tables (docs/defense-matrix.md) from the sweep directory's finished cells.

    PYTHONPATH=. python benchmarks/defense_matrix_tables.py runs/defense-matrix              # print the tables
    PYTHONPATH=. python benchmarks/defense_matrix_tables.py runs/defense-matrix --write      # replace them in the doc
    ... --keep docs/defense-matrix.md   # cells absent from the sweep directory keep the doc's earlier value
    ... --detail stale permutation      # those rows' cells: clean, ASR, mean flag precision / recall

Each cell of configs/defense-matrix.yaml's grid is read from <sweep dir>/<cell>/metrics.json when its
cell.json has the cell's config digest (poisonlab.sweep.finished_metrics, as `poisonlab sweep` skips it):
final clean accuracy in %, and "clean / ASR" where the adversary has a triggered test set. A cell
neither finished nor kept is "…"; a cell whose run diverged (the global model's test loss NaN/Inf:
<cell>/diverged.json, written by benchmarks/defense_matrix_diverged.py) is "NaN (rN)", N the round it
diverged in. Rules are split into tables of at most 14 columns. With --keep,
a cell the sweep directory lacks takes the value the doc's current tables show (computed by an earlier
session's sweep), and the counts line says how many cells came from where. --write replaces the text
between the doc's `<!-- matrix:begin -->` and `<!-- matrix:end -->` markers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from poisonlab.sweep import _short, config_digest, expand_grid, final_figures, finished_metrics

CONFIG = "configs/defense-matrix.yaml"
DOC = "docs/defense-matrix.md"
ADVERSARY, AGGREGATOR = "federated.adversary", "federated.aggregator"
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"
MISSING = "…"
MARKER = "diverged.json"
"""A cell whose run diverged (benchmarks/defense_matrix_diverged.py writes it): {"digest", "error"}."""
WIDTH = (14, 9, 9, 9)
"""Columns per table: the 14 classic rules, then the issue-21 rules in tables of 9."""


def cell_text(metrics: dict) -> str:
    """'88.1', or '88.1 / 67.2' with an attack success rate."""
    figures = final_figures(metrics)
    clean, asr = figures["clean_accuracy"], figures["attack_success_rate"]
    text = MISSING if clean is None else f"{100 * clean:.1f}"
    return text if asr is None else f"{text} / {100 * asr:.1f}"


def column_label(rule_label: str) -> str:
    """A rule's column header: a chain a+b is written 'a > b'."""
    return rule_label.replace("+", " > ")


def diverged_round(cell_dir: Path, doc: dict) -> int | None:
    """The 1-based round a cell's run diverged in (0 if the message names none), when <cell>/diverged.json
    carries the cell's config digest; else None."""
    path = cell_dir / MARKER
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record["digest"] != config_digest(doc):
            return None
        found = re.search(r"round (\d+)", record["error"])
        return int(found.group(1)) if found else 0
    except (ValueError, KeyError):
        return None


def computed(doc: dict, sweep_dir: Path) -> dict[tuple[str, str], str]:
    """(adversary label, rule label) -> cell text, for every finished cell in sweep_dir."""
    out = {}
    for cell in expand_grid(doc):
        key = (_short(cell.settings[ADVERSARY]), _short(cell.settings[AGGREGATOR]))
        metrics = finished_metrics(sweep_dir / cell.slug, cell.doc)
        if metrics is not None:
            out[key] = cell_text(metrics)
        elif (round_ := diverged_round(sweep_dir / cell.slug, cell.doc)) is not None:
            out[key] = f"NaN (r{round_})"
    return out


def kept(doc_text: str) -> dict[tuple[str, str], str]:
    """(adversary label, rule label) -> cell text shown in the doc's tables (cells shown as … left out)."""
    out: dict[tuple[str, str], str] = {}
    header: list[str] | None = None
    for line in doc_text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            header = None
        elif cells[0] == "adversary \\ aggregator":
            header = [c.replace(" > ", "+") for c in cells[1:]]
        elif header is not None and not set(cells[0]) <= {"-"}:
            out.update({(cells[0], rule): value for rule, value in zip(header, cells[1:]) if value != MISSING})
    return out


def tables(doc: dict, values: dict[tuple[str, str], str]) -> str:
    """The markdown tables, WIDTH columns at a time (the rest in tables of the last width)."""
    rows = [_short(a) for a in doc["grid"][ADVERSARY]]
    rules = [_short(r) for r in doc["grid"][AGGREGATOR]]
    blocks, start, widths = [], 0, list(WIDTH)
    while start < len(rules):
        width = widths.pop(0) if widths else WIDTH[-1]
        part = rules[start:start + width]
        lines = ["| adversary \\ aggregator | " + " | ".join(column_label(r) for r in part) + " |",
                 "|---|" + "---|" * len(part)]
        lines += [f"| {row} | " + " | ".join(values.get((row, r), MISSING) for r in part) + " |" for row in rows]
        blocks.append("\n".join(lines))
        start += width
    return "\n\n".join(blocks)


def counts_line(doc: dict, fresh: dict, old: dict) -> str:
    """'N of M cells: a from the sweep directory, b kept from the earlier tables, c missing.'"""
    total = len(doc["grid"][ADVERSARY]) * len(doc["grid"][AGGREGATOR])
    carried = len(set(old) - set(fresh))
    filled = len(fresh) + carried
    return (f"**{filled} of the {total} cells are filled in below**: {len(fresh)} read from the sweep directory's"
            f" cells, {carried} kept from the earlier tables, {total - filled} missing (`{MISSING}`).")


def detail(doc: dict, sweep_dir: Path, labels: list[str]) -> str:
    """A table of the named rows' finished cells: rule, clean accuracy, ASR, mean flag precision and recall (%)."""
    lines = ["| adversary | rule | clean acc | ASR | flag precision | flag recall |", "|---|---|---|---|---|---|"]
    for cell in expand_grid(doc):
        row = _short(cell.settings[ADVERSARY])
        metrics = finished_metrics(sweep_dir / cell.slug, cell.doc) if row in labels else None
        if metrics is not None:
            f = final_figures(metrics)
            shown = [MISSING if f[k] is None else f"{100 * f[k]:.1f}" for k in
                     ("clean_accuracy", "attack_success_rate", "flag_precision", "flag_recall")]
            lines.append(f"| {row} | {column_label(_short(cell.settings[AGGREGATOR]))} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--keep", type=Path, help="a doc whose tables fill the cells the sweep directory lacks")
    parser.add_argument("--write", action="store_true", help=f"replace the tables between the markers in {DOC}")
    parser.add_argument("--detail", nargs="+", metavar="ROW", help="print these rows' cells with their flag figures")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        doc = yaml.safe_load(f)
    if args.detail:
        print(detail(doc, args.sweep_dir, args.detail))
        return
    fresh = computed(doc, args.sweep_dir)
    old = kept(args.keep.read_text()) if args.keep else {}
    text = counts_line(doc, fresh, old) + "\n\n" + tables(doc, {**old, **fresh})
    if not args.write:
        print(text)
        return
    page = Path(DOC).read_text()
    if BEGIN not in page or END not in page:
        sys.exit(f"{DOC} has no {BEGIN} ... {END} markers")
    head, rest = page.split(BEGIN, 1)
    Path(DOC).write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])
    print(f"{DOC}: {counts_line(doc, fresh, old)}")


if __name__ == "__main__":
    main()
