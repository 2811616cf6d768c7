"""Regenerate the FL attack scenario table: final clean accuracy and ASR of each configs/fl-*.yaml under FedAvg.

    .venv/bin/python benchmarks/fl_attack_scenarios.py                 # every configs/fl-*.yaml
    .venv/bin/python benchmarks/fl_attack_scenarios.py configs/fl-mnist-ipm.yaml --baseline-only

Each config is parsed with poisonlab.config and run by driving poisonlab.fl.Federation directly
(``build`` below maps the YAML onto the engine's API), once with its adversaries and, unless
--attack-only, once without them (the clean baseline). Prints a markdown table and writes it with a
JSON of every history to benchmarks/results/fl_attack_scenarios.{md,json} (atomically).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import io
import json
import sys
import time
from pathlib import Path

import torch

from poisonlab.config.load import load_config
from poisonlab.data import load
from poisonlab.fl.adversary import Adversary
from poisonlab.fl.aggregators import build_chain
from poisonlab.fl.attacks import ATTACKS
from poisonlab.fl.federation import Federation, FederationConfig
from poisonlab.fl.partition import PARTITIONS
from poisonlab.fl.persistence import persistence
from poisonlab.models import make_model
from poisonlab.poison import POISONS
from poisonlab.rng import derive_seed
from poisonlab.rundir import atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

def load_data(cfg):
    """The config's dataset ('synthetic' is poisonlab.data.synthetic) split into (train, test)."""
    data = load(cfg.data.dataset, **cfg.data.params)
    return data.split(cfg.data.test_fraction, seed=cfg.seed)


def without_knowledge(attack):
    """The attack run with ctx.omniscient=False (the engine always passes True)."""
    def run(updates, malicious, ctx):
        return attack(updates, malicious, dataclasses.replace(ctx, omniscient=False))
    return run


def adversary(spec, seed: int, index: int):
    """(Adversary, its poison object or None) from one federated.adversary entry."""
    poison = POISONS.get(spec.poison.name, **spec.poison.params) if spec.poison else None
    attack = ATTACKS.get(spec.attack.name, **spec.attack.params) if spec.attack else None
    if attack is not None and not spec.omniscient:
        attack = without_knowledge(attack)

    def poison_fn(data, cid, p=poison):
        return p.apply(data, seed=derive_seed(seed, "poison", index, cid)).data

    return Adversary(clients=spec.clients, poison=poison_fn if poison else None, attack=attack, schedule=spec.schedule,
                     boost=spec.boost, force_participation=spec.force_participation,
                     name=f"adversary{index}"), poison


def aggregator(fed):
    """The aggregation rule (a chain when several steps are listed)."""
    return build_chain((c.name, c.params) for c in fed.aggregator_chain())


def build(cfg, attack: bool = True, quiet: bool = True) -> Federation:
    """A Federation for the config (its adversaries only when attack is True)."""
    fed = cfg.federated
    train, test = load_data(cfg)
    parts = PARTITIONS.get(fed.partition.name, **fed.partition.params)(train.y, fed.clients, cfg.seed)
    clients = [train.subset(p) for p in parts]
    model = make_model(cfg.model.name, train.input_shape, train.num_classes, seed=cfg.seed, **cfg.model.params)
    advs = [adversary(s, cfg.seed, i) for i, s in enumerate(fed.adversaries())]
    backdoor = next((p for _, p in advs if p is not None and p.has_trigger), None)
    flips = tuple(pair for _, p in advs if p is not None and p.source is not None for pair in p.flip_pairs)
    config = FederationConfig(rounds=fed.rounds, sample=fed.sample, local=fed.local,
                              server_lr=fed.server_lr, eval_every=fed.eval_every, seed=cfg.seed,
                              target=backdoor.target if backdoor else None, flips=flips, quiet=quiet)
    return Federation(model, clients, test, config, aggregator=aggregator(fed),
                      adversaries=[a for a, _ in advs] if attack else [],
                      triggered_test=backdoor.triggered(test) if backdoor else None)


def last_attack_round(cfg) -> int | None:
    """The last round any adversary acts (None if some never stop)."""
    rounds = [s.schedule.last_round() for s in cfg.federated.adversaries()]
    return None if not rounds or None in rounds else max(rounds)


def baseline_key(cfg) -> str:
    """What a no-attack run depends on: the config without its name and grid, and of its adversaries only
    their poisons (a backdoor poison sets the triggered test set and target the baseline's ASR is measured on)."""
    doc = cfg.model_dump()
    doc.pop("name"), doc.pop("grid")
    advs = doc["federated"].pop("adversary")
    doc["poisons"] = [a["poison"] for a in (advs if isinstance(advs, list) else [advs] if advs else [])]
    return json.dumps(doc, sort_keys=True, default=str)


def run(path: str, attack: bool) -> dict:
    """Run one config; the final metrics and the history as a dict."""
    cfg = load_config(path)
    start = time.perf_counter()
    result = build(cfg, attack=attack).run()
    final = result.history[-1]
    out = {"config": Path(path).name, "attack": attack, "rounds": cfg.federated.rounds, "key": baseline_key(cfg),
           "clean_accuracy": final.clean_accuracy, "attack_success_rate": final.attack_success_rate,
           "flips": final.flips, "seconds": round(time.perf_counter() - start, 1),
           "history": [r.to_dict() for r in result.history]}
    last = last_attack_round(cfg)
    if attack and last is not None and last < cfg.federated.rounds - 1 and final.attack_success_rate is not None:
        p = persistence(result.history, last, threshold=0.5)
        out["persistence"] = {"rounds": p.rounds, "censored": p.censored, "last_attack_round": last}
    return out


def fmt(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def table(rows: list[dict]) -> str:
    """Markdown: one line per config, clean baseline and attacked side by side."""
    lines = ["| scenario | rounds | clean acc (no attack) | clean acc (attacked) | ASR (no attack) | ASR (attacked)"
             " | flips s->t (no attack) | flips s->t (attacked) |",
             "|---|---|---|---|---|---|---|---|"]
    by, shared = {}, {r["key"]: r for r in rows if not r["attack"]}
    for r in rows:
        by.setdefault(r["config"], {})[r["attack"]] = r
    for pair in by.values():  # a baseline run for another config with the same setting serves this one
        if False not in pair and True in pair and pair[True]["key"] in shared:
            pair[False] = shared[pair[True]["key"]]
    for name, pair in by.items():
        a, c = pair.get(True, {}), pair.get(False, {})
        flips = ", ".join(f"{k}: {v}" for k, v in (a.get("flips") or {}).items()) or "-"
        flips0 = ", ".join(f"{k}: {(c.get('flips') or {}).get(k, '?')}" for k in (a.get("flips") or {})) or "-"
        lines.append(f"| {name} | {(a or c).get('rounds')} | {fmt(c.get('clean_accuracy'))} | {fmt(a.get('clean_accuracy'))}"
                     f" | {fmt(c.get('attack_success_rate'))} | {fmt(a.get('attack_success_rate'))} | {flips0} | {flips} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """One panel per scenario: clean accuracy and ASR per round, attacked (solid) and baseline (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["config"] for r in rows))
    cols = min(4, len(names))
    rows_ = -(-len(names) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols, 3.0 * rows_), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        for r in (r for r in rows if r["config"] == name):
            style = "-" if r["attack"] else "--"
            rounds = [h["round"] for h in r["history"]]
            ax.plot(rounds, [h["clean_accuracy"] for h in r["history"]], style, color="tab:blue",
                    label="clean acc" + ("" if r["attack"] else " (no attack)"))
            if any(h["attack_success_rate"] is not None for h in r["history"]):
                ax.plot(rounds, [h["attack_success_rate"] for h in r["history"]], style, color="tab:red",
                        label="ASR" + ("" if r["attack"] else " (no attack)"))
        ax.set_title(name.removesuffix(".yaml"), fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", help="YAML files (default: configs/fl-*.yaml)")
    ap.add_argument("--attack-only", action="store_true", help="skip the no-attack baseline runs")
    ap.add_argument("--baseline-only", action="store_true", help="only the no-attack baseline runs")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="build the table and figure from earlier outputs instead")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fl_attack_scenarios"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = args.configs or sorted(glob.glob(str(ROOT / "configs" / "fl-*.yaml")))
    rows, baselines = [], {}
    if args.merge:
        rows, paths = [row for f in args.merge for row in json.loads(Path(f).read_text())], []
    modes = (True,) if args.attack_only else (False,) if args.baseline_only else (True, False)
    for path in paths:
        for attack in modes:
            key = baseline_key(load_config(path))
            if not attack and key in baselines:  # configs differing only in their adversaries share one baseline
                row = {**baselines[key], "config": Path(path).name, "shared_baseline": baselines[key]["config"]}
            else:
                row = run(path, attack)
            if not attack:
                baselines.setdefault(key, row)
            rows.append(row)
            print(f"{row['config']} attack={attack}: clean {fmt(row['clean_accuracy'])} ASR {fmt(row['attack_success_rate'])}"
                  f" {row.get('persistence', '')} ({row['seconds']} s)", file=sys.stderr, flush=True)
    md = table(rows)
    print(md)
    atomic_write_text(args.out + ".md", md + "\n")
    plot(rows, Path(args.out + ".png"))
    atomic_write_text(args.out + ".json", json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
