"""CPU time of update attacks on one (k, d) round, beside a trivial attack (sign flip), as ratios.

    PYTHONPATH=. python benchmarks/fl_attacks_speed.py                       # k = 100, d = 1e6, the default list
    PYTHONPATH=. python benchmarks/fl_attacks_speed.py --d 100000 stale alie
    PYTHONPATH=. python benchmarks/fl_attacks_speed.py --rule median sign_flip fang_trim agr_tailored alie_opt ipm_opt

Each attack runs on the same float32 round (N(0, 1) rows, 20% malicious, omniscient), once to warm up and
then --repeat times; the table shows the median process CPU time per call (time.process_time, so other
jobs on a shared host do not inflate it; torch's threads are summed) and its ratio to sign_flip's.
A stateful attack runs with the state its previous call returned (as the engine passes it). The
aggregator-aware attacks (fang_*, agr_tailored, alie_opt, ipm_opt) play against --rule (the guarded rule
a config builds, passed as ctx.extras["aggregator"] as the Federation does): their searches call it
repeatedly, so their time is mostly the rule's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from poisonlab.fl.aggregators import build_rule
from poisonlab.fl.attacks import get
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator

DEFAULT = ["sign_flip", "alie", "ipm", "min_max", "stale", "permutation", "signguard_adaptive",
           "clustering_adaptive", "alt_min", "threedfed"]


def timed(name: str, x: torch.Tensor, mal: torch.Tensor, repeat: int, rule=None) -> float:
    """Median CPU seconds of one call of the named attack on (x, mal); rule: the deployed rule, if any."""
    attack, state, times = get(name), None, []
    extras = {} if rule is None else {"aggregator": rule}
    for r in range(repeat + 1):
        ctx = RoundContext(num_clients=len(x), round=r, seed=0, global_params=torch.zeros(x.shape[1]),
                           attack_state=state, extras=extras)
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
    parser.add_argument("--rule", help="the deployed rule the aggregator-aware attacks play (a registered name)")
    args = parser.parse_args(argv)
    rule = None if args.rule is None else build_rule(args.rule, {})
    x = torch.randn(args.k, args.d, generator=generator(0, "benchmark", "attacks"))
    mal = torch.arange(args.k) < args.k // 5
    base = timed("sign_flip", x, mal, args.repeat)
    print(f"k = {args.k}, d = {args.d}, {int(mal.sum())} malicious, {torch.get_num_threads()} torch threads,"
          f" rule {args.rule}\n")
    print("| attack | CPU s per call | x sign_flip |\n|---|---|---|")
    for name in args.names:
        seconds = base if name == "sign_flip" else timed(name, x, mal, args.repeat, rule)
        print(f"| `{name}` | {seconds:.3f} | {seconds / base:.1f} |")


if __name__ == "__main__":
    main()
