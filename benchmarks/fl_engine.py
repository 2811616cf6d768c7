"""FL engine benchmark: the vectorized engine side by side with the plain per-client loop, one run.

    .venv/bin/python benchmarks/fl_engine.py                 # (a) MLP and (b) MNIST CNN
    .venv/bin/python benchmarks/fl_engine.py --only a --threads 1
    .venv/bin/python benchmarks/fl_engine.py --only fedavg   # FedAvg, 100 iid MNIST clients, 30 rounds

(a) 20 clients of synthetic data (32 features, 10 classes, 50-150 samples each), MLP 32-64-10,
    30 rounds, 3 local epochs, batch 32, SGD lr 0.01, all clients every round.
(b) seeded 8,000/2,000 split of the MNIST test set in ../shared/data/mnist, 100 iid clients, the
    cnn model, 1 local epoch, batch 20, lr 0.05, 10 rounds, all clients every round.
Both engines get the same batches (same seeds), so their final accuracies should agree up to float
rounding. Achieved GFLOP/s counts 3x the forward FLOPs (forward + backward) of the real samples,
against the best sgemm rate measured in the same run with the same thread count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from poisonlab.fl.federation import Federation, FederationConfig
from poisonlab.fl.local import LocalConfig
from poisonlab.fl.partition import partition
from poisonlab.data.synthetic import client_sizes, synthetic
from poisonlab.models import make_model

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def matmul_peak(n: int = 1024, repeat: int = 5) -> float:
    """Best achieved GFLOP/s of an n x n float32 matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def forward_flops(model: nn.Module, sample_shape: tuple[int, ...]) -> int:
    """Multiply-add FLOPs (2 per MAC) of one sample's forward through Linear and Conv2d layers."""
    total = [0]

    def hook(m, _inp, out):
        if isinstance(m, nn.Linear):
            total[0] += 2 * m.in_features * m.out_features
        elif isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total[0] += 2 * (m.in_channels // m.groups) * kh * kw * out[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *sample_shape))
    for h in handles:
        h.remove()
    return total[0]


def compare(title: str, model, clients, test, config: FederationConfig, peak: float) -> dict:
    """Run both engines on the same federation; print and return times, ratio, accuracies, GFLOP/s."""
    samples = config.rounds * config.local.epochs * sum(len(c) for c in clients)  # all clients sampled
    flops = 3 * forward_flops(model, tuple(test.x.shape[1:])) * samples
    out = {}
    for engine in ("reference", "vectorized"):
        fed = Federation(model, clients, test, FederationConfig(**{**config.__dict__, "engine": engine}))
        t = time.perf_counter()
        result = fed.run()
        seconds = time.perf_counter() - t
        out[engine] = (seconds, result.history[-1].clean_accuracy, flops / seconds / 1e9)
    (ts, accs, gs), (tv, accv, gv) = out["reference"], out["vectorized"]
    print(f"\n{title}")
    print(f"  per-client loop : {ts:8.2f} s   final accuracy {100 * accs:6.2f}%   {gs:6.2f} GFLOP/s"
          f" ({100 * gs / peak:.1f}% of peak)")
    print(f"  vectorized      : {tv:8.2f} s   final accuracy {100 * accv:6.2f}%   {gv:6.2f} GFLOP/s"
          f" ({100 * gv / peak:.1f}% of peak)")
    print(f"  speed-up        : {ts / tv:8.2f}x   |accuracy difference| {100 * abs(accs - accv):.2f} points")
    return out


def bench_mlp(peak: float, rounds: int = 30) -> dict:
    data = synthetic(num_samples=20000, seed=0)
    sizes = client_sizes(20, 50, 150, seed=0)
    train, test = data.subset(torch.arange(sum(sizes))), data.subset(torch.arange(sum(sizes), sum(sizes) + 2000))
    bounds = torch.tensor([0] + sizes).cumsum(0)
    clients = [train.subset(torch.arange(int(bounds[i]), int(bounds[i + 1]))) for i in range(20)]
    model = make_model("mlp", (32,), 10, seed=0, hidden=(64,))
    cfg = FederationConfig(rounds=rounds, sample=1.0, local=LocalConfig(epochs=3, batch_size=32, lr=0.01),
                           seed=0, quiet=True, eval_every=rounds)
    return compare(f"(a) MLP 32-64-10, 20 clients ({min(sizes)}-{max(sizes)} samples), {rounds} rounds, E=3, B=32",
                   model, clients, test, cfg, peak)


def mnist_split():
    from poisonlab.data import load

    data = load("mnist", data_dir=str(MNIST_DIR), part="test")
    return data.split(test_fraction=0.2, seed=0)  # seeded stratified 8,000 / 2,000


def bench_mnist(peak: float, rounds: int = 10) -> dict:
    train, test = mnist_split()
    clients = [train.subset(p) for p in partition("iid", train.y, 100, seed=0)]
    model = make_model("cnn", (1, 28, 28), 10, seed=0)
    cfg = FederationConfig(rounds=rounds, sample=1.0, local=LocalConfig(epochs=1, batch_size=20, lr=0.05),
                           seed=0, quiet=True, eval_every=rounds)
    return compare(f"(b) MNIST cnn, 100 iid clients of {len(clients[0])}, {rounds} rounds, E=1, B=20",
                   model, clients, test, cfg, peak)


def fedavg_mnist(rounds: int = 30) -> None:
    """FedAvg (vectorized), 100 iid clients, all sampled, E=2, B=10, lr 0.05, momentum 0.5: accuracy per round.

    (E=1, B=20, lr 0.1, momentum 0.5 -- 4 local steps a round -- reached only 92.6% after 30 rounds.)
    """
    train, test = mnist_split()
    clients = [train.subset(p) for p in partition("iid", train.y, 100, seed=0)]
    model = make_model("cnn", (1, 28, 28), 10, seed=0)
    cfg = FederationConfig(rounds=rounds, sample=1.0, seed=0, quiet=True,
                           local=LocalConfig(epochs=2, batch_size=10, lr=0.05, momentum=0.5))
    t = time.perf_counter()
    hist = Federation(model, clients, test, cfg).run().history
    first = next((r.round + 1 for r in hist if r.clean_accuracy >= 0.95), None)
    print(f"\nFedAvg MNIST 100 iid clients, {rounds} rounds: accuracy by round "
          f"{[round(100 * r.clean_accuracy, 2) for r in hist]}")
    print(f"  final {100 * hist[-1].clean_accuracy:.2f}%, first round >= 95%: {first}, {time.perf_counter() - t:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["a", "b", "fedavg", "all"], default="all")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak()
    print(f"torch {torch.__version__}, {args.threads} thread(s); sgemm peak measured now: {peak:.1f} GFLOP/s")
    if args.only in ("a", "all"):
        bench_mlp(peak)
    if args.only in ("b", "all"):
        bench_mnist(peak)
    if args.only == "fedavg":
        fedavg_mnist()


if __name__ == "__main__":
    main()
