"""The built-in engine against Flower's simulation engine (Ray), side by side in one run.

    .venv/bin/python benchmarks/flower_vs_builtin.py                # speed: tutorial backdoor scenario
    .venv/bin/python benchmarks/flower_vs_builtin.py --agreement    # accuracy/ASR agreement over 3 seeds

Speed: the tutorial backdoor scenario (20 clients of synthetic tabular data, 32 features, 10
classes, 50-150 samples each; MLP 32-64-10; 30 rounds, E=3, B=32, lr 0.01; 2 attackers with a
feature-trigger backdoor boosting x10; FedAvg), the same Federation inputs given to both engines.
Times are end to end as a user waits: the built-in engine's Federation.run() versus
poisonlab.flower.run_simulation (Ray start-up, actors, messages, shutdown included).
Agreement: the same scenario for seeds 0, 1, 2 on both engines; mean clean accuracy and ASR of the
last round (target: within 2 and 5 points).
"""

from __future__ import annotations

import argparse
import time

import torch

from poisonlab.fl.adversary import Adversary
from poisonlab.fl.attacks import get as get_attack
from poisonlab.fl.federation import Federation, FederationConfig
from poisonlab.fl.local import LocalConfig
from poisonlab.data.synthetic import client_sizes, synthetic
from poisonlab.flower.simulation import run_simulation
from poisonlab.models import make_model
from poisonlab.poison.registry import make_poison
from poisonlab.rng import derive_seed

TRIGGER = {"name": "features", "params": {"features": [0, 1, 2, 3], "value": 4.0}}


def tutorial_federation(seed: int = 0, rounds: int = 30) -> Federation:
    """The tutorial backdoor scenario as the built-in engine's Federation (fresh each call)."""
    data = synthetic(num_samples=20000, seed=seed)
    sizes = client_sizes(20, 50, 150, seed=seed)
    n = sum(sizes)
    train, test = data.subset(torch.arange(n)), data.subset(torch.arange(n, n + 2000))
    bounds = torch.tensor([0] + sizes).cumsum(0)
    clients = [train.subset(torch.arange(int(bounds[i]), int(bounds[i + 1]))) for i in range(20)]
    backdoor = make_poison({"name": "backdoor", "params": {"trigger": TRIGGER, "target": 0, "rate": 0.3}})

    def poison(ds, cid):
        return backdoor.apply(ds, derive_seed(seed, "client-poison", cid)).data

    adversary = Adversary(clients=2, poison=poison, attack=get_attack("scale", gamma=10), force=True)
    model = make_model("mlp", (32,), 10, seed=seed, hidden=(64,))
    cfg = FederationConfig(rounds=rounds, sample=1.0, local=LocalConfig(epochs=3, batch_size=32, lr=0.01),
                           seed=seed, quiet=True, eval_every=1, target=0)
    return Federation(model, clients, test, cfg, adversaries=[adversary],
                      triggered_test=backdoor.triggered(test, derive_seed(seed, "triggered")))


def builtin(seed: int) -> tuple[float, dict]:
    start = time.perf_counter()
    last = tutorial_federation(seed).run().history[-1]
    return time.perf_counter() - start, last.to_dict()


def flower(seed: int, num_cpus: int) -> tuple[float, dict]:
    start = time.perf_counter()
    out = run_simulation(tutorial_federation(seed), num_cpus=num_cpus)
    return time.perf_counter() - start, out["history"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agreement", action="store_true", help="3 seeds, compare accuracy and ASR")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs for Ray (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in this process (default 1, as in each Ray actor; on a busy"
                             " 2-core machine 2 threads made the built-in engine 40x slower by oversubscription)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [0, 1, 2] if args.agreement else [0]
    rows = []
    for seed in seeds:
        tb, hb = builtin(seed)
        tf, hf = flower(seed, args.num_cpus)
        rows.append((seed, tb, tf, hb, hf))
        print(f"seed {seed}: built-in {tb:.2f}s acc {hb['clean_accuracy']:.4f} asr {hb['attack_success_rate']:.4f}"
              f" | flower {tf:.2f}s acc {hf['clean_accuracy']:.4f} asr {hf['attack_success_rate']:.4f}"
              f" | ratio {tf / tb:.1f}x", flush=True)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    acc_b, acc_f = mean([r[3]["clean_accuracy"] for r in rows]), mean([r[4]["clean_accuracy"] for r in rows])
    asr_b, asr_f = mean([r[3]["attack_success_rate"] for r in rows]), mean([r[4]["attack_success_rate"] for r in rows])
    print(f"mean over seeds {seeds}: clean accuracy built-in {100 * acc_b:.2f}% flower {100 * acc_f:.2f}%"
          f" (diff {100 * abs(acc_b - acc_f):.2f} points); ASR built-in {100 * asr_b:.2f}% flower {100 * asr_f:.2f}%"
          f" (diff {100 * abs(asr_b - asr_f):.2f} points)")
    print(f"end-to-end time: built-in {mean([r[1] for r in rows]):.2f}s, flower {mean([r[2] for r in rows]):.2f}s,"
          f" built-in is {mean([r[2] for r in rows]) / mean([r[1] for r in rows]):.1f}x faster")


if __name__ == "__main__":
    main()
