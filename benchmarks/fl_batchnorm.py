"""Federated training of a batch-norm model: 20-client FedAvg on the MNIST split, and one round on both engines.

    .venv/bin/python benchmarks/fl_batchnorm.py                  # FedAvg run + one-round comparison
    .venv/bin/python benchmarks/fl_batchnorm.py --only round --epochs 1 --batch-size 32 --momentum 0.5

The model: poisonlab's resnet20 zoo model with blocks=1 (ResNet-8: 3 stages of one BasicBlock, each conv
followed by BatchNorm2d; He et al. 2016) and width 8, built as a user would (make_model, seeded). The data: the
seeded 8,000 / 2,000 split of the real MNIST test set in ../shared/data/mnist, 20 iid clients of 400 samples.
FedAvg (McMahan et al. 2017): all 20 clients every round, 2 local epochs, batch 16, SGD lr 0.05 momentum 0.9;
the server averages the parameters AND the clients' batch-norm running statistics (weights = sample counts).
(1 local epoch, batch 32, momentum 0.5 -- 13 local steps a round -- reached only 66% after 8 rounds: too few
steps for the weights and for the running statistics, which start at 0/1 and move by momentum 0.1 a step.)

Printed: clean accuracy per round, the final accuracy (target >= 95%) and the run's wall time; then round 0's
local training of the 20 clients on the vectorized engine and on the per-client reference loop side by side
(same batches: seconds, ratio, and the largest difference between their updates and running statistics).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from poisonlab.fl.federation import Federation, FederationConfig
from poisonlab.fl.local import LocalConfig, flat_params
from poisonlab.fl.partition import partition
from poisonlab.models import make_model

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
CLIENTS = 20


LOCAL = LocalConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9)


def federation(rounds: int, engine: str = "vectorized", local: LocalConfig = LOCAL, device: str = "cpu") -> Federation:
    """The benchmark's federation: ResNet-8 (width 8) on 20 iid clients of the 8,000-sample MNIST split."""
    from poisonlab.data import load

    train, test = load("mnist", data_dir=str(MNIST_DIR), part="test").split(test_fraction=0.2, seed=0)
    clients = [train.subset(p) for p in partition("iid", train.y, CLIENTS, seed=0)]
    model = make_model("resnet20", (1, 28, 28), 10, seed=0, width=8, blocks=1)
    cfg = FederationConfig(rounds=rounds, sample=1.0, seed=0, quiet=True, engine=engine,
                           local=local)
    return Federation(model, clients, test, cfg, device=device)


def fedavg(rounds: int, local: LocalConfig, device: str = "cpu") -> None:
    fed = federation(rounds, local=local, device=device)
    t = time.perf_counter()
    result = fed.run()
    seconds = time.perf_counter() - t
    accuracy = [round(100 * r.clean_accuracy, 2) for r in result.history]
    print(f"FedAvg, ResNet-8 (BN) width 8, {CLIENTS} iid MNIST clients, {rounds} rounds: accuracy by round {accuracy}")
    print(f"  final clean accuracy {accuracy[-1]:.2f}%  (target >= 95%)   wall time {seconds:.1f} s"
          f" ({seconds / rounds:.1f} s / round, evaluation included)")


def one_round(local: LocalConfig, device: str = "cpu") -> None:
    """Round 0's local training on both engines, from the same global model with the same batches."""
    out = {}
    for engine in ("reference", "vectorized"):
        fed = federation(1, engine, local, device)
        sampled = fed.sample(0)
        data = [fed.clients[int(c)] for c in sampled]
        t = time.perf_counter()
        trained = fed.train_clients(0, flat_params(fed.model), sampled, data)
        if fed.device.type == "cuda":
            torch.cuda.synchronize()
        out[engine] = (trained, time.perf_counter() - t)
    (ref, tr), (vec, tv) = out["reference"], out["vectorized"]
    du = float((ref.updates - vec.updates).abs().max())
    ru = float((ref.updates - vec.updates).norm() / ref.updates.norm())
    db = max(float((ref.buffers[n].double() - vec.buffers[n].double()).abs().max()) for n in ref.buffers)
    print(f"One round of local training ({CLIENTS} clients x 400 samples, E={local.epochs}, B={local.batch_size}):")
    print(f"  per-client reference loop : {tr:7.2f} s")
    print(f"  vectorized engine         : {tv:7.2f} s   ratio reference / vectorized {tr / tv:.2f}x")
    print(f"  max |difference|: updates {du:.2e} (relative, in norm: {ru:.2e}), buffers {db:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--only", choices=["fedavg", "round", "all"], default="all")
    parser.add_argument("--epochs", type=int, default=LOCAL.epochs)
    parser.add_argument("--batch-size", type=int, default=LOCAL.batch_size)
    parser.add_argument("--momentum", type=float, default=LOCAL.momentum)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    args = parser.parse_args()
    local = LOCAL.model_copy(update={"epochs": args.epochs, "batch_size": args.batch_size, "momentum": args.momentum})
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    if args.only in ("round", "all"):
        one_round(local, args.device)
    if args.only in ("fedavg", "all"):
        fedavg(args.rounds, local, args.device)


if __name__ == "__main__":
    main()
