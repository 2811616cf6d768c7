"""Time per call of every aggregation rule, and Krum/Bulyan against per-pair Python loops.

    .venv/bin/python benchmarks/aggregators.py                 # the full grid
    .venv/bin/python benchmarks/aggregators.py --k 100 --d 1000000 --reps 2

k in {20, 100, 500}, d in {1e5, 1e6} (combinations whose inputs plus working memory would
exceed --max-gb are skipped). The loop baselines are what common FL frameworks do: the
distance matrix filled pair by pair with torch.norm(x_i - x_j) ** 2, Bulyan re-running that
Krum on the shrinking set. The matmul peak is measured in the same run (a square float32
matmul), and Krum is compared with the ideal time of its Gram product 2 k^2 d / peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from poisonlab.fl.aggregators import build_rule
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator

RULES = {
    "mean": {}, "median": {}, "trimmed_mean": {"beta": 0.1}, "krum": "f", "multi_krum": "f",
    "bulyan": "f", "geometric_median": {}, "centered_clipping": {"tau": 1.0}, "norm_clip": {"bound": 1.0},
    "fltrust": {}, "foolsgold": {}, "dp_gaussian": {"bound": 1.0, "sigma": 0.01}, "flame": {},
    "bucketing": {"s": 2}, "nnm": "f", "arc": "f", "meamed": "f", "mda": {"f": 2}, "smea": {"f": 2}, "monna": "f",
    "caf": "f", "dnc": "f", "gm_of_means": {"groups": 5}, "autogm": {},
    # rules2 (issue 21): residual_reweight with the flat median line (the paper's repeated median costs k^2 d)
    "signguard": {}, "clustering": {}, "clipped_clustering": {}, "majority_cluster": {}, "signsgd_vote": {},
    "robust_lr": {"threshold": 4}, "residual_reweight": {"line": "median"}, "three_sigma": {},
    "dp_adaptive_clipping": {"noise_multiplier": 0.5}, "dp_adaptive_client": {"noise_multiplier": 0.5},
    "local_dp": {"clip": 1.0, "sigma": 0.01},
    # stateful detectors over rounds (issue 21): timed per round, each round given the previous state
    "lazy_workers": {}, "freqfed": {}, "auror": {}, "crfl": {}, "fldetector": {"window": 3},
    "flanders": {"window": 2}, "deepsight": {"classes": 10, "features": 84}, "fl_wbc": {},
}


WARM = {"fldetector": 5, "flanders": 3, "lazy_workers": 5, "fl_wbc": 1}
"""Rounds run before timing: from then on each round does the detector's full work (fldetector: pairs and a
window of 3 scores; flanders: 2 stored rounds; lazy_workers: a full window of sketches; fl_wbc: a previous aggregate)."""


def loop_krum_scores(x: torch.Tensor, f: int) -> torch.Tensor:
    """Baseline: the distance matrix filled pair by pair (as common FL frameworks do), then Krum scores."""
    n = x.shape[0]
    dist = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            dist[i, j] = torch.norm(x[i] - x[j]) ** 2
    q = n - f - 2
    return torch.stack([torch.sort(dist[i][torch.arange(n) != i]).values[:max(q, 0)].sum() for i in range(n)])


def loop_krum(x: torch.Tensor, f: int) -> int:
    """Baseline Krum: the index of the lowest loop score."""
    return int(torch.argmin(loop_krum_scores(x, f)))


def loop_bulyan(x: torch.Tensor, f: int) -> torch.Tensor:
    """Baseline Bulyan: Krum re-run (distances recomputed) on the shrinking set, then the coordinate stage."""
    remaining = list(range(x.shape[0]))
    chosen = []
    while len(chosen) < x.shape[0] - 2 * f:
        best = remaining[loop_krum(x[remaining], f)]
        chosen.append(best)
        remaining.remove(best)
    s = x[chosen]
    beta = len(chosen) - 2 * f
    med = torch.quantile(s, 0.5, dim=0) if s.numel() < 2**24 else s.median(dim=0).values
    idx = torch.topk((s - med).abs(), beta, dim=0, largest=False).indices
    return torch.gather(s, 0, idx).mean(dim=0)


def rounds(rule, x: torch.Tensor, w: torch.Tensor, ctx: RoundContext):
    """A call of rule per round, each given the state the previous one returned (as the engine does)."""
    state = {"round": 0}

    def call():  # the global model moves each round (detectors over rounds need w_t - w_{t-1} != 0)
        r = state["round"]
        step = dataclasses.replace(ctx, state=state.get("last"), round=r, global_params=ctx.global_params + 1e-3 * r)
        state["last"], state["round"] = rule(x, w, step).state, r + 1

    return call


def timed(fn, reps: int) -> float:
    """Best wall time of reps calls (the machine is shared; the minimum is the least disturbed)."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(reps: int = 3, n: int = 2048) -> float:
    """Measured float32 matmul throughput (FLOP/s) of an n x n product on this machine now."""
    a = torch.randn(n, n, generator=generator(0, "bench", "peak"))
    return 2 * n**3 / timed(lambda: a @ a, reps)


def build(name: str, k: int):
    params = RULES[name]
    f = (k - 3) // 4  # the largest f Bulyan accepts (n >= 4f + 3); Krum uses the same f
    if params == "f":
        params = {"f": f, "m": k - f} if name == "multi_krum" else {"f": f}
    return build_rule(name, params), f  # as a config builds it: after the non-finite guard


def pair_time(x: torch.Tensor, pairs: int) -> float:
    """Measured seconds per torch.norm(x_i - x_j) ** 2 of the loop baselines (mean over pairs)."""
    n = x.shape[0]
    t0 = time.perf_counter()
    for p in range(pairs):
        float(torch.norm(x[p % n] - x[(p * 7 + 1) % n]) ** 2)
    return (time.perf_counter() - t0) / pairs


def bench(k: int, d: int, reps: int, loops: bool, peak: float, loop_budget: float,
          names: list[str] | None = None) -> list[tuple]:
    x = torch.randn(k, d, generator=generator(0, "bench", k, d))
    w = torch.ones(k)
    ctx = RoundContext(sampled=torch.arange(k), num_clients=k, global_params=torch.zeros(d),
                       extras={"server_update": torch.randn(d, generator=generator(1, "bench", d))})
    rows = []
    for name in names or RULES:
        rule, f = build(name, k)
        call = rounds(rule, x, w, ctx)
        for _ in range(WARM.get(name, 0)):  # a detector's first rounds skip its work (no history yet)
            call()
        rows.append((k, d, name, timed(call, reps), None))
    gram = timed(lambda: x @ x.T, reps)
    ideal = 2 * k * k * d / peak
    rows.append((k, d, "(gram x @ x.T alone)", gram, None))
    rows.append((k, d, "(gram at measured peak 2k^2d/peak)", ideal, None))
    if loops:
        f = (k - 3) // 4
        mine = {r[2]: r[3] for r in rows}
        krum_pairs = k * k
        bulyan_pairs = sum(r * r for r in range(2 * f + 1, k + 1))  # Krum re-run on sets of size k .. 2f + 1
        per_pair = pair_time(x, pairs=200)
        if per_pair * bulyan_pairs <= loop_budget:
            loop_k, loop_b, how = timed(lambda: loop_krum(x, f), 1), timed(lambda: loop_bulyan(x, f), 1), "run"
        else:  # too long to run on a shared machine: measured per-pair time x the exact pair count
            loop_k, loop_b, how = per_pair * krum_pairs, per_pair * bulyan_pairs, "extrapolated"
        rows.append((k, d, f"krum per-pair loop ({how}, {krum_pairs} pairs)", loop_k, loop_k / mine["krum"]))
        rows.append((k, d, f"bulyan per-pair loop ({how}, {bulyan_pairs} pairs)", loop_b, loop_b / mine["bulyan"]))
        rows.append((k, d, "krum / ideal gram", mine["krum"], mine["krum"] / ideal))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, nargs="*", default=[20, 100, 500])
    p.add_argument("--d", type=int, nargs="*", default=[100_000, 1_000_000])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rules", nargs="*", default=None, help="only these rules (default: all of RULES)")
    p.add_argument("--max-gb", type=float, default=4.0)
    p.add_argument("--loop-budget", type=float, default=120.0,
                   help="run the loop baselines when they would take at most this many seconds, else extrapolate")
    p.add_argument("--loops", default="100x1000000",
                   help="k x d combos (comma separated) that also run the per-pair loop baselines; 'all' or ''")
    args = p.parse_args()
    only = [r for name in args.rules or [] for r in name.split(",") if r]  # names space- or comma-separated
    unknown = sorted(set(only) - set(RULES))
    if unknown:
        p.error(f"--rules: {unknown} not in RULES; accepted: {', '.join(RULES)}")
    peak = matmul_peak()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'k':>4} {'d':>8}  {'rule':48} {'seconds':>9}  ratio")
    for k in args.k:
        for d in args.d:
            if 3 * k * d * 4 / 2**30 > args.max_gb:  # input + sort/copy temporaries
                print(f"{k:>4} {d:>8}  skipped: about {3 * k * d * 4 / 2**30:.1f} GB > {args.max_gb} GB")
                continue
            loops = ((args.loops == "all" or f"{k}x{d}" in args.loops.split(","))
                     and {"krum", "bulyan"} <= set(only or RULES))
            for k_, d_, name, sec, ratio in bench(k, d, args.reps, loops, peak, args.loop_budget, only):
                extra = f"{ratio:6.1f}x" if ratio is not None else ""
                print(f"{k_:>4} {d_:>8}  {name:48} {sec:9.4f}  {extra}", flush=True)


if __name__ == "__main__":
    main()
