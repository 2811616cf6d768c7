"""The defense matrix as a user runs it: whole `poisonlab sweep` processes, before vs after, local vs Ray.

    .venv/bin/python benchmarks/sweep.py                         # the 140 cells (configs/defense-matrix.yaml)
    .venv/bin/python benchmarks/sweep.py --quick                 # 2 attacks x 14 rules = 28 cells
    .venv/bin/python benchmarks/sweep.py --quick --modes stacked ray
    .venv/bin/python benchmarks/sweep.py --attacks 1 --rounds 5 --modes before alone stacked   # 14 cells
    .venv/bin/python benchmarks/sweep.py --attacks 10 --rules 14 --modes stacked    # the 140-cell matrix of issue #24
    .venv/bin/python benchmarks/sweep.py --attacks 1 --rules 14 --rounds 5 --modes stacked --before DIR

configs/defense-matrix.yaml has grown (17 attacks x 41 rules); issue #24's 140-cell matrix is its first 10
attacks x first 14 rules. --before DIR runs each mode from an older source tree too (`git archive COMMIT | tar -x
-C DIR`), right after the same mode from this one. Each line also gives CPU seconds per cell-round; on a shared
machine that is the figure to compare and to extrapolate from (say so when you do).

Modes (each a fresh process and a fresh sweep directory, timed whole, in the order given):
  before  : --stack 1 --cell-reports: one cell after another with each cell's report.html, as `poisonlab sweep`
            ran before stacking (its data and partitions are now built once even so);
  alone   : --stack 1: one cell after another, no per-cell reports;
  stacked : the default: 14 compatible cells train in one stacked engine call per round, no per-cell reports;
  ray     : --executor ray on a local Ray (one CPU per cell, every core).
Each line gives the wall time, the CPU time of the process tree (user + sys, from os.wait4) and the ratio of the
first mode's wall time to the mode's (> 1: faster). The sweeps' summaries are compared: the local modes must give
the same clean accuracy per cell exactly (stacked cells are bitwise those alone); Ray's workers run one thread
each, so its largest difference (float rounding grown over 20 rounds) is printed.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODES = {"before": ["--stack", "1", "--cell-reports"], "alone": ["--stack", "1"], "stacked": [],
         "ray": ["--executor", "ray"]}


def config(quick: bool, tmp: Path, attacks: int | None = None, rounds: int | None = None,
           rules: int | None = None) -> Path:
    """The defense matrix with its data path made absolute (and, quick, its first 2 attacks only)."""
    doc = yaml.safe_load((ROOT / "configs/defense-matrix.yaml").read_text())
    doc["data"]["params"]["data_dir"] = str((ROOT / "configs" / doc["data"]["params"]["data_dir"]).resolve()
                                            if not Path(doc["data"]["params"]["data_dir"]).is_absolute() else
                                            doc["data"]["params"]["data_dir"])
    if not Path(doc["data"]["params"]["data_dir"]).is_dir():
        doc["data"]["params"]["data_dir"] = str((ROOT / "../shared/data/mnist").resolve())
    if quick:
        doc["grid"]["federated.adversary"] = doc["grid"]["federated.adversary"][:2]
    if attacks:
        doc["grid"]["federated.adversary"] = doc["grid"]["federated.adversary"][:attacks]
    if rules:
        doc["grid"]["federated.aggregator"] = doc["grid"]["federated.aggregator"][:rules]
    if rounds:
        doc["federated"]["rounds"] = rounds
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "matrix.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def timed(args: list[str], tree: Path = ROOT) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children) of one whole command run from tree's sources
    (bytecode cached under a temporary PYTHONPYCACHEPREFIX, as an installed package has it compiled)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) /
                                                                             "poisonlab-bench-pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def accuracies(out: Path) -> dict[tuple, float]:
    with open(out / "summary.csv") as f:
        return {(r["federated.adversary"], r["federated.aggregator"]): float(r["clean_accuracy_mean"])
                for r in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 attacks x 14 rules (28 cells)")
    parser.add_argument("--attacks", type=int, help="only the first N attacks of the grid (N x 14 cells)")
    parser.add_argument("--rules", type=int, help="only the first N rules of the grid")
    parser.add_argument("--rounds", type=int, help="federated.rounds instead of the config's 20")
    parser.add_argument("--before", type=Path, help="an older source tree: each mode also runs from it")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["before", "stacked", "ray"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poisonlab-bench-sweep-") as tmp:
        path = config(args.quick, Path(tmp), args.attacks, args.rounds, args.rules)
        doc = yaml.safe_load(path.read_text())
        cells = len(doc['grid']['federated.adversary']) * len(doc['grid']['federated.aggregator'])
        rounds = doc['federated']['rounds']
        print(f"{cells} cells, {rounds} rounds, {os.cpu_count()} cores\n")
        print("| tree | mode | command options | wall s | CPU s | CPU s per cell-round | speed-up (wall) vs first |")
        print("|---|---|---|---|---|---|---|")
        first, reference = None, None
        runs = [(tree, mode) for mode in args.modes for tree in ([ROOT] + ([args.before] if args.before else []))]
        warm = config(args.quick, Path(tmp) / "warm", args.attacks, 1, args.rules)
        for tree in {tree for tree, _ in runs}:  # untimed, one round: compiles each tree's bytecode (and the
            timed([sys.executable, "-m", "poisonlab", "sweep", str(warm), "--out", str(Path(tmp) / "warm" / tree.name)],
                  tree)  # libraries') once, so no timed run pays for it
        for tree, mode in runs:
            name = "this" if tree == ROOT else "before"
            out = Path(tmp) / f"{name}-{mode}"
            command = [sys.executable, "-m", "poisonlab", "sweep", str(path), "--out", str(out), *MODES[mode]]
            wall, cpu = timed(command, tree)
            first = first or wall
            found = accuracies(out)
            reference = reference or found
            worst = max(abs(found[c] - reference[c]) for c in reference)
            if mode != "ray":  # the local modes compute the same numbers
                assert worst == 0, f"{name} {mode}: clean accuracy differs from the first run's by {worst:.4f}"
            print(f"| {name} | {mode} | {' '.join(MODES[mode]) or '(default)'} | {wall:.1f} | {cpu:.1f} |"
                  f" {cpu / (cells * rounds):.3f} | {first / wall:.2f}x |"
                  f" (largest clean-accuracy difference to the first run: {100 * worst:.2f} points)", flush=True)

if __name__ == "__main__":
    main()
