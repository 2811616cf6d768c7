"""The defense matrix's training floor: CPU seconds per cell-round of local training alone, in one stacked call.

    PYTHONPATH=. .venv/bin/python benchmarks/sweep_floor.py [--cells 14] [--repeats 3]

A stacked sweep (fl/cohort.py) trains the clients of --cells cells of configs/defense-matrix.yaml (MNIST, 50
clients, MLP 784-64-10, 1 epoch, batch 32, momentum 0.9) as rows of one engine call per round. This times that
call alone (fl/local.py's local_train over cells x 50 client datasets, the federation's own per-client
generators), best of --repeats, in CPU seconds of this process, and divides by --cells: what each cell-round
costs before its server does anything. Compare with benchmarks/sweep.py's CPU seconds per cell-round; the
difference is each cell's server work (attack, rule, evaluation, records) and the sweep's start-up.
Also printed: the floor's arithmetic (forward and backward FLOPs of the real samples) and the best
1024 x 1024 sgemm rate of this process, so the floor can be read as a fraction of the machine's peak.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from poisonlab.builders import build_federation, load_split
from poisonlab.config.load import load_config
from poisonlab.fl.local import local_train
from poisonlab.rng import generator

ROOT = Path(__file__).resolve().parents[1]


def sgemm_peak(n: int = 1024, repeat: int = 5) -> float:
    """Best CPU-time GFLOP/s of an n x n float32 matmul in this process."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * n ** 3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(ROOT / "configs" / "defense-matrix.yaml",
                         ["data.params.data_dir=" + str((ROOT.parent / "shared" / "data" / "mnist").resolve()),
                          "federated.server_data.root_size=0", "federated.server_data.validation_size=0"])
    train_set, test_set = load_split(config)
    fed = build_federation(config, train_set, test_set, None, quiet=True, device="cpu")
    clients = fed.clients * args.cells
    start = torch.cat([p.detach().flatten() for p in fed.model.parameters()])
    best = float("inf")
    for r in range(args.repeats):
        gens = [generator(config.seed, "client", r, i) for i in range(len(clients))]
        t = time.process_time()
        local_train(fed.model, start, clients, fed.config.local, gens)
        best = min(best, time.process_time() - t)
    samples = sum(len(c) for c in fed.clients)
    d_in, hidden, classes = train_set.x[0].numel(), 64, train_set.num_classes
    flops = 3 * 2 * samples * (d_in * hidden + hidden * classes)  # forward + 2x backward, per cell
    print(f"{args.cells} cells x {len(fed.clients)} clients ({samples} samples a cell), {torch.get_num_threads()} threads")
    print(f"local training, one stacked call: {best:.3f} CPU s = {best / args.cells:.4f} CPU s per cell-round")
    print(f"arithmetic: {flops / 1e9:.2f} GFLOP per cell-round; {flops * args.cells / best / 1e9:.1f} GFLOP/s achieved"
          f" (sgemm 1024: {sgemm_peak():.1f} GFLOP/s in CPU time)")
    print(f"140 cells x 20 rounds at this floor: {140 * 20 * best / args.cells:.0f} CPU s"
          f" (>= {140 * 20 * best / args.cells / 2:.0f} s of wall time on 2 cores)")


if __name__ == "__main__":
    main()
