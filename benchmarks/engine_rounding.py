"""How far float rounding alone moves batch-norm local training: the engines' gap beside the loop's own.

    PYTHONPATH=. .venv/bin/python benchmarks/engine_rounding.py [--data-dir ../shared/data/mnist]

Trains 4 clients of the MNIST split (ResNet-8 from the zoo, width 8, batch 16, lr 0.05, momentum 0.9) for
1, 2, 4, 8, 16 local steps and prints, per step count, the relative difference (in norm) between
(a) the vectorized engine and the per-client reference loop, and (b) the reference loop with 1 and with 2
CPU threads (the same code, only the summation order differs). When (a) and (b) grow alike, the engines'
gap is rounding amplified by the training dynamics, not a difference in what they compute.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from poisonlab.data import load
from poisonlab.fl.federation import Federation, FederationConfig
from poisonlab.fl.local import LocalConfig, flat_params
from poisonlab.fl.partition import partition
from poisonlab.models import make_model

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def updates(clients, test, engine: str, threads: int) -> torch.Tensor:
    torch.set_num_threads(threads)
    model = make_model("resnet20", (1, 28, 28), 10, seed=0, width=8, blocks=1)
    cfg = FederationConfig(rounds=1, sample=1.0, seed=0, quiet=True, engine=engine,
                           local=LocalConfig(epochs=1, batch_size=16, lr=0.05, momentum=0.9))
    fed = Federation(model, clients, test, cfg, device="cpu")
    sampled = fed.sample(0)
    return fed.train_clients(0, flat_params(fed.model), sampled, [fed.clients[int(c)] for c in sampled]).updates


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(MNIST_DIR))
    args = parser.parse_args()
    train, test = load("mnist", data_dir=args.data_dir, part="test").split(test_fraction=0.2, seed=0)
    parts = partition("iid", train.y, 20, seed=0)[:4]
    print("| local steps | vectorized vs reference | reference 1 vs 2 threads |\n|---|---|---|")
    for steps in (1, 2, 4, 8, 16):
        clients = [train.subset(p[:16 * steps]) for p in parts]
        ref1, ref2 = updates(clients, test, "reference", 1), updates(clients, test, "reference", 2)
        vec = updates(clients, test, "vectorized", 2)
        print(f"| {steps} | {relative(ref2, vec):.2e} | {relative(ref1, ref2):.2e} |")


if __name__ == "__main__":
    main()
