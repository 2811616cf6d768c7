"""Aggregator-aware attacks on the MNIST split: does each reproduce the qualitative result of its paper?

    .venv/bin/python benchmarks/aggregator_aware_attacks.py            # ~20 short runs
    .venv/bin/python benchmarks/aggregator_aware_attacks.py --quick    # 2 rounds each (a smoke run)

Setting (small and fast, as issue 21 asks): the seeded 8,000 / 2,000 split of the real MNIST test set
(../shared/data/mnist), an MLP, 20 clients (Dirichlet alpha 0.5 non-iid split, as both papers use non-iid
data; --partition iid for the iid one) all taking part every round, 4 of them
(20%) malicious and acting every round, local training 1 epoch (batch 20, lr 0.05), 6 rounds.
Each aggregator runs once without attack (its baseline) and once per attack; the attacks see the
deployed rule as ctx.extras["aggregator"]. Full knowledge = omniscient; partial = the attackers'
own updates only. Prints a markdown table (final clean accuracy, drop vs the rule's baseline, rounds in
which the rule selected a malicious row) and
writes it with a JSON to benchmarks/results/aggregator_aware_attacks.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from poisonlab.data import load
from poisonlab.fl.adversary import Adversary
from poisonlab.fl.aggregators import build_rule
from poisonlab.fl.attacks import get as get_attack
from poisonlab.fl.federation import Federation, FederationConfig
from poisonlab.fl.partition import PARTITIONS
from poisonlab.models import make_model
from poisonlab.rundir import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mnist"
F = 4  # malicious clients of 20 (the rules' f)

RULES = {"krum": {"f": F}, "multi_krum": {"f": F, "m": 10}, "bulyan": {"f": F},
         "trimmed_mean": {"beta": 0.2}, "median": {}}

UV = {"perturbation": "unit_vec"}  # p = -mu/||mu||: the strongest of the paper's three here (std did not hurt Krum)

# (rule, attack, params, omniscient, the paper's claim)
CASES = [
    ("krum", "fang_krum", {}, True, "Fang 2020: breaks Krum (MNIST error 0.10 -> 0.99, full knowledge)"),
    ("krum", "fang_krum", {}, False, "Fang 2020: partial knowledge also breaks Krum"),
    ("trimmed_mean", "fang_trim", {}, True, "Fang 2020: raises trimmed-mean error several-fold"),
    ("trimmed_mean", "fang_trim", {}, False, "Fang 2020: partial knowledge, smaller but clear rise"),
    ("median", "fang_trim", {}, True, "Fang 2020: raises median error several-fold"),
    ("median", "fang_trim", {}, False, "Fang 2020: partial knowledge, smaller but clear rise"),
    ("krum", "agr_tailored", UV, True, "Shejwalkar 2021: tailored attack degrades Krum"),
    ("multi_krum", "agr_tailored", UV, True, "Shejwalkar 2021: tailored attack degrades Multi-Krum"),
    ("bulyan", "agr_tailored", UV, True, "Shejwalkar 2021: tailored attack degrades Bulyan"),
    ("trimmed_mean", "agr_tailored", UV, True, "Shejwalkar 2021: tailored beats the AGR-agnostic min-max"),
    ("trimmed_mean", "min_max", UV, True, "Shejwalkar 2021: AGR-agnostic min-max (comparison row)"),
    ("median", "agr_tailored", UV, True, "Shejwalkar 2021: tailored attack degrades median"),
    ("median", "alie_opt", {}, True, "ByzFL: tuned ALIE at least as strong as ALIE"),
    ("median", "alie", {}, True, "Baruch 2019: ALIE (comparison row)"),
    ("trimmed_mean", "ipm_opt", {}, True, "ByzFL: tuned IPM degrades trimmed mean"),
]


def federation(train_clients, test, rule: str, attack: str | None, params: dict, omniscient: bool, rounds: int,
               seed: int) -> Federation:
    """The federation of the setting with the rule (non-finite guard included) and, if named, the attack."""
    model = make_model("mlp", test.input_shape, test.num_classes, seed=seed)
    config = FederationConfig(rounds=rounds, sample=20, seed=seed, quiet=True, eval_every=rounds,
                              local={"epochs": 1, "batch_size": 20, "lr": 0.05})
    advs = [] if attack is None else [Adversary(clients=F, attack=get_attack(attack, **params), omniscient=omniscient)]
    return Federation(model, train_clients, test, config, aggregator=build_rule(rule, RULES[rule]), adversaries=advs)


def malicious_selected(history) -> int:
    """Rounds in which the rule kept at least one malicious row (every row, for mean-like rules)."""
    return sum(bool(set(h.malicious) & set(h.selected)) for h in history)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="2 rounds per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--partition", choices=("dirichlet", "iid"), default="dirichlet")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "aggregator_aware_attacks"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = 2 if args.quick else args.rounds
    train, test = load("mnist", data_dir=str(DATA), part="test").split(0.2, seed=args.seed)
    parts = PARTITIONS.get(args.partition)(train.y, 20, args.seed)
    clients = [train.subset(p) for p in parts]
    rows, base = [], {}
    for rule in RULES:
        start = time.perf_counter()
        acc = federation(clients, test, rule, None, {}, True, rounds, args.seed).run().history[-1].clean_accuracy
        base[rule] = acc
        rows.append({"rule": rule, "attack": "none", "knowledge": "-", "accuracy": acc, "claim": "baseline",
                     "seconds": round(time.perf_counter() - start, 1)})
        print(f"{rule:13s} none          {acc:.3f}", flush=True)
    for rule, attack, params, omniscient, claim in CASES:
        start = time.perf_counter()
        history = federation(clients, test, rule, attack, params, omniscient, rounds, args.seed).run().history
        acc = history[-1].clean_accuracy
        rows.append({"rule": rule, "attack": attack, "knowledge": "full" if omniscient else "partial", "accuracy": acc,
                     "claim": claim, "malicious_selected": malicious_selected(history),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(f"{rule:13s} {attack:13s} {'full' if omniscient else 'partial':8s} {acc:.3f}", flush=True)
    lines = [f"MNIST split, mlp, 20 clients ({args.partition}) all sampled, 4 malicious (20%), {rounds} rounds,"
             f" seed {args.seed}.", "",
             "| rule | attack | knowledge | final clean acc | drop vs no attack | rounds a malicious row was kept"
             " | paper's claim |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        drop = "-" if r["attack"] == "none" else f"{100 * (base[r['rule']] - r['accuracy']):+.1f} pts"
        kept = "-" if r["attack"] == "none" else f"{r['malicious_selected']}/{rounds}"
        lines.append(f"| {r['rule']} | {r['attack']} | {r['knowledge']} | {100 * r['accuracy']:.1f}% | {drop} | {kept}"
                     f" | {r['claim']} |")
    table = "\n".join(lines)
    print(table)
    atomic_write_text(Path(args.out + ".md"), table + "\n")
    atomic_write_text(Path(args.out + ".json"), json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
