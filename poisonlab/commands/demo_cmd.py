"""``poisonlab demo``: the default job, offline on scikit-learn's digits.

20 federated clients, 2 of them backdoor attackers that stamp a trigger on half their data,
relabel it as 0 and boost their update x5; the same federation under FedAvg and robust rules.
Prints one row per rule (clean accuracy, attack success rate, attackers flagged) and writes a
combined HTML report. The experiment is poisonlab/demo.yaml; `poisonlab sweep` runs any such file.
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path

import yaml

from poisonlab.commands._options import add_device
from poisonlab.config import parse
from poisonlab.console import console, percent, table
from poisonlab.outdir import claim
from poisonlab.sweep import expand_grid, final_figures

NAME = "demo"
HELP = "Run the default experiment offline on digits: a boosted backdoor against FedAvg and robust rules."


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="directory for the runs and the report (default runs/demo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, help="override the number of rounds (default 20)")
    parser.add_argument("--force", action="store_true", help="replace an earlier demo run with other settings in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_device(parser, "auto")


def demo_document(seed: int = 0, rounds: int | None = None) -> dict:
    """The demo experiment (poisonlab/demo.yaml) with seed and rounds applied."""
    doc = yaml.safe_load(resources.files("poisonlab").joinpath("demo.yaml").read_text(encoding="utf-8"))
    doc["seed"] = seed
    if rounds is not None:
        doc["federated"]["rounds"] = rounds
    return doc


def run(args) -> int:
    from poisonlab.experiment import run_experiment
    from poisonlab.report import write_report

    import torch

    if getattr(args, "threads", None) is None and "POISONLAB_THREADS" not in os.environ:
        torch.set_num_threads(1)  # the demo's models are tiny: one thread is fastest and never oversubscribes
    from poisonlab.device import resolve

    resolve(args.device)  # an absent device is refused before anything is printed or written
    out = claim(Path(args.out), "demo")
    start = time.perf_counter()
    cells = expand_grid(demo_document(args.seed, args.rounds))
    fed = parse(cells[0].doc).federated
    console.print(f"[bold]poisonlab demo[/]: digits, {fed.clients} clients, {fed.rounds} rounds;"
                  " 2 attackers stamp a 2x2 trigger on half their data, relabel it 0, boost their update x5")
    runs, rows = [], []
    for i, cell in enumerate(cells, 1):
        config = parse(cell.doc)
        rule = "+".join(c.name for c in config.federated.aggregator_chain())
        config = config.model_copy(update={"name": rule})
        console.print(f"[{i}/{len(cells)}] {rule}")
        metrics = run_experiment(config, out / cell.slug, report=False, force=args.force, quiet=args.quiet,
                                 device=args.device)
        runs.append(metrics)
        rows.append(_row(rule, metrics))
    report = write_report(out / "report.html", runs, title="poisonlab demo: backdoor vs aggregation rules",
                          gallery_png=_gallery(cells[0].doc))
    console.print(table("Backdoor (target 0) against each aggregation rule, final round",
                        ["rule", "clean acc.", "ASR", "flagged: precision", "flagged: recall", "time"], rows))
    console.print("flagged: precision = share of flagged clients that were attackers; recall = share of sampled"
                  " attackers flagged (pooled over rounds, as in the report)")
    console.print(f"total {time.perf_counter() - start:.0f} s; report: {report}")
    return 0


def _row(rule: str, metrics: dict) -> tuple:
    """One table row; the flag columns are the report's (report.data.flag_tally: pooled over rounds)."""
    from poisonlab.report.data import flag_tally

    figures = final_figures(metrics)
    asr = figures["attack_success_rate"]
    tally = flag_tally(metrics)
    if tally is None or tally.tp + tally.fp == 0:  # the rule reduces coordinates (median, trimmed mean): no flags
        precision, recall = "nobody flagged", "-" if tally is None else percent(tally.recall)
    else:
        precision, recall = percent(tally.precision), percent(tally.recall)
    return (rule, percent(figures["clean_accuracy"]), "-" if asr is None else percent(asr), precision, recall,
            f"{metrics['wall_time']:.1f} s")


def _gallery(doc: dict) -> bytes | None:
    """Clean and triggered test digits side by side, for the report."""
    try:
        from poisonlab.poison.gallery import render_gallery
    except ImportError:
        return None
    from poisonlab.builders import load_split
    from poisonlab.poison.registry import make_poison

    _, test_set = load_split(parse(doc))
    poison = make_poison(doc["federated"]["adversary"]["poison"])
    clean = test_set.subset(list(range(8)))
    return render_gallery(clean.x, poison.triggered(clean, 0).x, None, titles=None)
