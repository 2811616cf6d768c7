"""The tutorial scenario written as a user would with plain PyTorch: a for loop over clients and FedAvg.

The same workload as configs/fl-tutorial-backdoor.yaml: 2,500 Gaussian-cluster samples (32 features,
10 classes), 20% held out for testing, 20 IID clients, an MLP 32-64-10, 30 rounds of 3 local epochs
(batch 32, SGD lr 0.01), 2 attackers who set features 0-3 to 4.0 and relabel 30% of their samples to
class 0 and scale their update x10, plain FedAvg (weighted by client size), clean accuracy and attack
success rate evaluated every round, metrics written as JSON. benchmarks/end_to_end.py runs it as a
whole process beside `poisonlab run configs/fl-tutorial-backdoor.yaml`.

    python benchmarks/tutorial_loop.py [--out metrics.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch import nn

CLIENTS, ATTACKERS, ROUNDS, EPOCHS, BATCH, LR, GAMMA = 20, 2, 30, 3, 32, 0.01, 10.0
FEATURES, CLASSES, SAMPLES, TEST_FRACTION = 32, 10, 2500, 0.2
TRIGGER, VALUE, TARGET, RATE = [0, 1, 2, 3], 4.0, 0, 0.3


def make_data(g: torch.Generator):
    """Gaussian clusters: a centre per class plus unit noise; a shuffled train/test split."""
    centres = torch.randn(CLASSES, FEATURES, generator=g)
    y = torch.arange(SAMPLES) % CLASSES
    y = y[torch.randperm(SAMPLES, generator=g)]
    x = centres[y] + torch.randn(SAMPLES, FEATURES, generator=g)
    order = torch.randperm(SAMPLES, generator=g)
    n_test = int(SAMPLES * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def triggered(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, TRIGGER] = VALUE
    return x


def poison(x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
    """The attacker's backdoor: a RATE fraction of its samples get the trigger and the target label."""
    pick = torch.randperm(len(y), generator=g)[: int(RATE * len(y))]
    x, y = x.clone(), y.clone()
    x[pick] = triggered(x[pick])
    y[pick] = TARGET
    return x, y


def local_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(EPOCHS):
        order = torch.randperm(len(y), generator=g)
        for start in range(0, len(y), BATCH):
            idx = order[start:start + BATCH]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


@torch.no_grad()
def evaluate(model: nn.Module, x, y) -> tuple[float, float]:
    acc = (model(x).argmax(1) == y).float().mean().item()
    keep = y != TARGET
    asr = (model(triggered(x[keep])).argmax(1) == TARGET).float().mean().item()
    return acc, asr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tutorial_loop_metrics.json")
    args = parser.parse_args()
    start = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    xtr, ytr, xte, yte = make_data(g)
    parts = torch.randperm(len(ytr), generator=g).chunk(CLIENTS)
    clients = [(xtr[p], ytr[p]) for p in parts]
    for a in range(ATTACKERS):
        clients[a] = poison(*clients[a], g)
    model = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))
    history = []
    for rnd in range(ROUNDS):
        global_state = copy.deepcopy(model.state_dict())
        updates, sizes = [], []
        for c, (x, y) in enumerate(clients):
            local = local_train(copy.deepcopy(model), x, y, g)
            update = {k: v - global_state[k] for k, v in local.state_dict().items()}
            if c < ATTACKERS:
                update = {k: GAMMA * v for k, v in update.items()}
            updates.append(update)
            sizes.append(len(y))
        total = sum(sizes)
        model.load_state_dict({k: global_state[k] + sum(n / total * u[k] for n, u in zip(sizes, updates))
                               for k in global_state})
        acc, asr = evaluate(model, xte, yte)
        history.append({"round": rnd + 1, "clean_accuracy": acc, "attack_success_rate": asr})
    with open(args.out, "w") as f:
        json.dump({"history": history, "final": history[-1], "wall_time": time.perf_counter() - start}, f)
    print(f"clean accuracy {100 * history[-1]['clean_accuracy']:.2f}%, "
          f"attack success rate {100 * history[-1]['attack_success_rate']:.2f}%")


if __name__ == "__main__":
    main()
