"""Record the defense matrix's cells whose training diverges, so the tables show "diverged" instead of "…".

    PYTHONPATH=. python benchmarks/defense_matrix_diverged.py runs/part.yaml --out runs/defense-matrix

An attack that drives the global model to NaN/Inf (MPAF's fake clients under a rule that averages
their amplified rows, say) stops its run with a DivergedError (poisonlab/divergence.py): the sweep
aborts with it and the cell stays unfinished. This script runs each unfinished cell of a sweep config
(a benchmarks/defense_matrix_part.py part) on its own; a cell that diverges gets <cell>/diverged.json
({"digest": the cell's config digest, "error": the one-line message}), which
benchmarks/defense_matrix_tables.py reads (with the same digest check as a finished cell). A cell that
finishes is written as the sweep writes it (metrics.json, cell.json); any other error stops the script.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from poisonlab.config.load import parse
from poisonlab.errors import DivergedError
from poisonlab.rundir import atomic_write_text
from poisonlab.sweep import config_digest, expand_grid, finished_metrics

from defense_matrix_tables import MARKER, diverged_round  # run as a script: benchmarks/ is on sys.path

def run_cell(cell, out_dir: Path) -> str:
    """Run one cell; 'finished', or 'diverged: <message>' after writing its marker."""
    from poisonlab.experiment import run_experiment

    cell_dir = out_dir / cell.slug
    cell_dir.mkdir(parents=True, exist_ok=True)
    digest = config_digest(cell.doc)
    try:
        run_experiment(parse(cell.doc), cell_dir, quiet=True, report=False)
    except DivergedError as err:
        atomic_write_text(cell_dir / MARKER, json.dumps({"digest": digest, "error": str(err)}))
        return f"diverged: {err}"
    atomic_write_text(cell_dir / "cell.json", json.dumps({"settings": cell.settings, "digest": digest}, default=str))
    return "finished"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a sweep config (a defense_matrix_part.py part)")
    parser.add_argument("--out", required=True, type=Path, help="the sweep directory")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        doc = yaml.safe_load(f)
    for cell in expand_grid(doc):
        cell_dir = args.out / cell.slug
        if finished_metrics(cell_dir, cell.doc) is not None or diverged_round(cell_dir, cell.doc) is not None:
            continue
        print(f"{cell.slug}: {run_cell(cell, args.out)}", flush=True)


if __name__ == "__main__":
    main()
