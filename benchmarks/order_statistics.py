"""Median and trimmed mean against peer implementations, side by side in one run (issue #24, target 4).

    .venv/bin/python benchmarks/order_statistics.py                    # k = 100 and 1000, d = 1e6
    .venv/bin/python benchmarks/order_statistics.py --k 100 --d 200000 --reps 2   # quick

For each k (d = --d float32 coordinates per row) the same matrix goes through poisonlab's coordinate_median /
coordinate_trimmed_mean (what the peers compute), the whole rule as a config builds it (the non-finite guard, the
rule, its scores ||x_i - update||), poisonlab's previous implementation (torch.kthvalue / torch.sort
on 256 MiB column chunks), plain torch.median(dim=0), a torch.sort-based one, numpy's np.median, and Flower's
aggregate_median / aggregate_trimmed_avg (flwr.server.strategy.aggregate; numpy partition over the whole
matrix). Each is timed as its best of --reps calls (the machine is shared; the minimum is the least disturbed),
and the table gives each peer's time over poisonlab's (> 1: poisonlab is faster). The previous
implementation's results are checked bitwise equal to the current one's before timing.
"""

from __future__ import annotations

import argparse
import importlib

import numpy as np
import torch

from aggregators import timed  # benchmarks/aggregators.py: the best of reps calls
from poisonlab.fl.aggregators import build_rule
from poisonlab.fl.aggregators.base import CHUNK_BYTES, column_chunks
from poisonlab.rng import generator

ORDER = importlib.import_module("poisonlab.fl.aggregators.median")
BETA = 0.1


def previous_median(x: torch.Tensor) -> torch.Tensor:
    """poisonlab's median before this benchmark: torch.kthvalue along dim 0 on 256 MiB column chunks."""
    k, d = x.shape
    out = torch.empty(d, dtype=x.dtype)
    lo_rank, hi_rank = (k + 1) // 2, k // 2 + 1
    for cols in column_chunks(k, d, 3 * x.element_size() + 8, CHUNK_BYTES):
        lo = torch.kthvalue(x[:, cols], lo_rank, dim=0).values
        out[cols] = lo if lo_rank == hi_rank else (
            (lo.double() + torch.kthvalue(x[:, cols], hi_rank, dim=0).values.double()) / 2).to(x.dtype)
    return out


def previous_trimmed(x: torch.Tensor, cut: int) -> torch.Tensor:
    """poisonlab's trimmed mean before this benchmark: torch.sort on 256 MiB column chunks."""
    k, d = x.shape
    out = torch.empty(d, dtype=x.dtype)
    for cols in column_chunks(k, d, 2 * x.element_size() + 8, CHUNK_BYTES):
        out[cols] = torch.sort(x[:, cols], dim=0).values[cut:k - cut].double().mean(dim=0).to(x.dtype)
    return out


def flower():
    """Flower's numpy implementations, or None without flwr."""
    try:
        from flwr.server.strategy.aggregate import aggregate_median, aggregate_trimmed_avg
    except ImportError:
        return None
    return aggregate_median, aggregate_trimmed_avg


def candidates(x: torch.Tensor) -> dict[str, dict]:
    """rule -> implementation name -> callable, poisonlab's first."""
    k = x.shape[0]
    cut = int(BETA * k)
    w = torch.ones(k)
    rows = [([row], 1) for row in x.numpy()]  # Flower's results: one layer per client
    median_rule, trimmed_rule = build_rule("median"), build_rule("trimmed_mean", {"beta": BETA})
    out = {
        "median": {"poisonlab median": lambda: ORDER.coordinate_median(x),
                   "poisonlab before": lambda: previous_median(x),
                   "poisonlab rule (guard + scores)": lambda: median_rule(x, w).update,
                   "torch.median": lambda: torch.median(x, dim=0).values,
                   "torch.sort": lambda: torch.sort(x, dim=0).values[(k - 1) // 2:k // 2 + 1].mean(dim=0),
                   "numpy median": lambda: np.median(x.numpy(), axis=0)},
        "trimmed_mean": {"poisonlab trimmed_mean": lambda: ORDER.coordinate_trimmed_mean(x, cut),
                         "poisonlab before": lambda: previous_trimmed(x, cut),
                         "poisonlab rule (guard + scores)": lambda: trimmed_rule(x, w).update,
                         "torch.sort": lambda: torch.sort(x, dim=0).values[cut:k - cut].mean(dim=0)},
    }
    peers = flower()
    if peers is not None:
        out["median"]["Flower aggregate_median"] = lambda: peers[0](rows)
        out["trimmed_mean"]["Flower aggregate_trimmed_avg"] = lambda: peers[1](rows, BETA)
    return out


def check_same(x: torch.Tensor) -> None:
    """The current selection path gives the previous implementation's results, bitwise."""
    cut = int(BETA * x.shape[0])
    assert torch.equal(ORDER.coordinate_median(x), previous_median(x)), "median differs from before"
    assert torch.equal(ORDER.coordinate_trimmed_mean(x, cut), previous_trimmed(x, cut)), "trimmed mean differs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--d", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; d = {args.d}; best of {args.reps}\n")
    print("| rule | k | implementation | seconds | ratio to poisonlab |")
    print("|---|---|---|---|---|")
    for k in args.k:
        x = torch.randn(k, args.d, generator=generator(0, "bench", "order-statistics", k))
        check_same(x[:, :20_000])
        for rule, impls in candidates(x).items():
            times = {name: timed(fn, args.reps) for name, fn in impls.items()}
            ours = next(iter(times.values()))
            for name, seconds in times.items():
                print(f"| {rule} | {k} | {name} | {seconds:.3f} | {seconds / ours:.2f}x |", flush=True)
        del x


if __name__ == "__main__":
    main()
