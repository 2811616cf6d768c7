"""CPU time of update attacks on one (k, d) round, beside a trivial attack (sign flip), as ratios.

    PYTHONPATH=. python benchmarks/fl_attacks_speed.py                       # k = 100, d = 1e6, the default list
    PYTHONPATH=. python benchmarks/fl_attacks_speed.py --d 100000 stale alie

Each attack runs on the same float32 round (N(0, 1) rows, 20% malicious, omniscient), once to warm up and
then --repeat times; the table shows the median process CPU time per call (time.process_time, so other
jobs on a shared host do not inflate it; torch's threads are summed) and its ratio to sign_flip's.
A stateful attack runs with the state its previous call returned (as the engine passes it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from poisonlab.fl.attacks import get
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator

DEFAULT = ["sign_flip", "alie", "ipm", "min_max", "stale", "permutation", "signguard_adaptive",
           "clustering_adaptive", "alt_min", "threedfed"]


def timed(name: str, x: torch.Tensor, mal: torch.Tensor, repeat: int) -> float:
    """Median CPU seconds of one call of the named attack on (x, mal)."""
    attack, state, times = get(name), None, []
    for r in range(repeat + 1):
        ctx = RoundContext(num_clients=len(x), round=r, seed=0, global_params=torch.zeros(x.shape[1]),
                           attack_state=state)
        start = time.process_time()
        out = attack(x, mal, ctx)
        if hasattr(attack, "next_state"):
            state = attack.next_state(x, out, mal, ctx)
        if r:
            times.append(time.process_time() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=DEFAULT)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--d", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    x = torch.randn(args.k, args.d, generator=generator(0, "benchmark", "attacks"))
    mal = torch.arange(args.k) < args.k // 5
    base = timed("sign_flip", x, mal, args.repeat)
    print(f"k = {args.k}, d = {args.d}, {int(mal.sum())} malicious, {torch.get_num_threads()} torch threads\n")
    print("| attack | CPU s per call | x sign_flip |\n|---|---|---|")
    for name in args.names:
        seconds = base if name == "sign_flip" else timed(name, x, mal, args.repeat)
        print(f"| `{name}` | {seconds:.3f} | {seconds / base:.1f} |")


if __name__ == "__main__":
    main()
