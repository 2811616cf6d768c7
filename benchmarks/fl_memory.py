"""Measured peak memory of one chunk of vectorized local training against the engine's estimate.

    .venv/bin/python benchmarks/fl_memory.py

`poisonlab.fl.local.bytes_per_client` estimates what one client of a chunk needs (4 parameter-sized
tensors plus 3x a batch's activations); `chunk_size` divides the memory budget by it. This script
trains k clients as ONE chunk (4 local steps each, random data of the model's input shape) in a fresh
process per case and reports the growth of the process's peak resident memory during that call,
next to k x the estimate, the (k, d) update matrix and the concatenated client data (both of which
exist for the whole round, whatever the chunking). Ratios are the figure to read (RSS counts pages,
and glibc keeps freed memory), so each case runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASES = [("mlp", 100, 32), ("mlp", 1000, 32), ("cnn", 4, 20), ("cnn", 32, 20), ("cnn", 100, 20),
         ("cnn32", 4, 32), ("cnn32", 32, 32)]
SHAPES = {"mlp": (32,), "cnn": (1, 28, 28), "cnn32": (3, 32, 32)}


def measure(name: str, k: int, batch: int) -> dict:
    """One case, in this process: peak RSS growth of one chunk of k clients, and the estimates (bytes)."""
    import resource

    import torch

    import poisonlab.fl.local as local
    from poisonlab.data.dataset import Dataset
    from poisonlab.models import make_model

    torch.set_num_threads(1)
    shape = SHAPES[name]
    model = make_model(name, shape, 10, seed=0)
    g = torch.Generator().manual_seed(0)
    n = 4 * batch  # 4 local steps per client
    data = [Dataset(torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g),
                    tuple(map(str, range(10)))) for _ in range(k)]
    start = local.flat_params(model)
    cfg = local.LocalConfig(epochs=1, batch_size=batch, lr=0.01)
    gens = [torch.Generator().manual_seed(i) for i in range(k)]
    local.CONV_CHUNK = k  # one chunk of all k clients, also for conv models
    local.local_updates(model, start, data[:1], cfg, gens[:1])  # warm-up: lazy imports and caches
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    local.local_updates(model, start, data, cfg, gens, memory_budget=1 << 40)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"model": name, "k": k, "batch": batch, "measured": peak - before,
            "estimate": k * local.bytes_per_client(model, shape, batch),
            "updates": k * start.numel() * 4, "data": k * n * (torch.Size(shape).numel() + 1) * 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs=3, metavar=("MODEL", "K", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # the child process: one measurement, printed as JSON
        print(json.dumps(measure(args.case[0], int(args.case[1]), int(args.case[2]))))
        return
    mib = 2 ** 20
    print("| model | k | B | measured peak growth | k x estimate | measured / estimate | update matrix | client data |")
    print("|---|---|---|---|---|---|---|---|")
    for name, k, batch in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", name, str(k), str(batch)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {name} | {k} | {batch} | {r['measured'] / mib:.1f} MiB | {r['estimate'] / mib:.1f} MiB |"
              f" {r['measured'] / r['estimate']:.2f} | {r['updates'] / mib:.1f} MiB | {r['data'] / mib:.1f} MiB |")


if __name__ == "__main__":
    main()
