"""Peak memory of every aggregation rule against the size of its (k, d) float32 input.

    .venv/bin/python benchmarks/aggregator_memory.py                       # k=1000, d=1e6 (4 GB input)
    .venv/bin/python benchmarks/aggregator_memory.py --k 100 --d 11000000 --rules foolsgold
    .venv/bin/python benchmarks/aggregator_memory.py --k 50 --d 100000     # a quick check

Each rule runs in its own process (peaks of different rules must not mix; RSS counts pages and glibc
keeps freed memory, so a process is the unit). In that process: the rule is built as a config builds it
(the non-finite guard first), warmed up on a tiny input, then the (k, d) input is drawn; a stateful rule
(FoolsGold) also gets its steady-state (K, d) history in ctx.state, K = --clients (default k), drawn
before the call like the input. ``peak / input`` is (peak RSS during the call - RSS before the input was
drawn) / input bytes, the figure the target (<= 1.5x) is about; for FoolsGold the history it is handed
is state the run holds anyway (listed in its own column) and the ratio is taken over input + history.
Results are written as JSON lines (--json) and a markdown table (stdout).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

RULES = {
    "mean": {}, "median": {}, "trimmed_mean": {"beta": 0.1}, "krum": {"f": 10}, "multi_krum": {"f": 10},
    "bulyan": {"f": 10}, "geometric_median": {}, "centered_clipping": {"tau": 1.0}, "norm_clip": {"bound": 1.0},
    "fltrust": {}, "foolsgold": {}, "dp_gaussian": {"bound": 1.0, "sigma": 0.01}, "flame": {},
    "validation": {},
}


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        import os

        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(name: str, k: int, d: int, clients: int) -> dict:
    """One rule, in this process: bytes of input, state and the peak growth during the call."""
    import time

    import torch

    from poisonlab.fl.aggregators import build_rule
    from poisonlab.rng import generator

    params = RULES[name]
    rule = build_rule(name, params)
    ctx = context(name, 64, 8, 64)
    rule(torch.randn(64, 8, generator=generator(0, "warm")), torch.ones(64), ctx)  # libraries loaded, pools made
    before = rss_bytes()
    updates = torch.randn(k, d, generator=generator(0, "memory", name))
    ctx = context(name, k, d, clients)
    state_bytes = sum(v.numel() * v.element_size() for v in (ctx.state or {}).values())
    start = time.perf_counter()
    rule(updates, torch.ones(k), ctx)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes() - before
    input_bytes = updates.numel() * updates.element_size()
    return {"rule": name, "k": k, "d": d, "clients": clients, "input_bytes": input_bytes, "state_bytes": state_bytes,
            "peak_bytes": peak, "ratio": peak / (input_bytes + state_bytes), "seconds": seconds,
            "threads": torch.get_num_threads()}


def context(name: str, k: int, d: int, clients: int):
    """The round's context: rows are clients 0..k-1; FoolsGold's history of `clients` rows, FLTrust's root
    update and validation's server data as extras."""
    import torch

    from poisonlab.fl.types import RoundContext
    from poisonlab.rng import generator

    state, extras = None, {}
    if name == "foolsgold":  # the chain's FoolsGold is step 1 (the guard is step 0): its state key is '1.history'
        state = {"1.history": torch.randn(clients, d, generator=generator(0, "history"))}
    if name == "fltrust":
        extras["server_update"] = torch.randn(d, generator=generator(0, "root"))
    if name == "validation":  # a stand-in accuracy per candidate (what matters here is the rule's memory)
        extras["validate"] = lambda candidates: candidates[:, :10].sum(dim=1).sigmoid()
        extras["base_accuracy"] = 0.5
    return RoundContext(round=1, num_clients=max(k, clients), sampled=torch.arange(k), seed=0, state=state,
                        extras=extras)


def run_in_subprocess(name: str, k: int, d: int, clients: int, threads: int) -> dict:
    """measure() in a fresh interpreter (its own peak RSS)."""
    code = (f"import json, torch; torch.set_num_threads({threads}); import benchmarks.aggregator_memory as m;"
            f" print(json.dumps(m.measure({name!r}, {k}, {d}, {clients})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"rule": name, "k": k, "d": d, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict]) -> str:
    lines = ["| rule | k | d | input | state | peak growth | peak / (input + state) | time |",
             "|---|---|---|---|---|---|---|---|"]
    gib = 2**30
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['rule']} | {r['k']} | {r['d']:.0e} | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['rule']} | {r['k']} | {r['d']:.0e} | {r['input_bytes'] / gib:.2f} GiB |"
                     f" {r['state_bytes'] / gib:.2f} GiB | {r['peak_bytes'] / gib:.2f} GiB | {r['ratio']:.2f}x |"
                     f" {r['seconds']:.1f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--d", type=float, default=1e6)
    parser.add_argument("--clients", type=int, default=None, help="FoolsGold's K (default k)")
    parser.add_argument("--rules", nargs="*", default=list(RULES))
    parser.add_argument("--parallel", type=int, default=1, help="rules measured at once (each in its process)")
    parser.add_argument("--threads", type=int, default=4, help="torch threads per process")
    parser.add_argument("--json", help="append the rows here as JSON lines")
    args = parser.parse_args()
    d, clients = int(args.d), args.clients or args.k
    rows = []
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run_in_subprocess, n, args.k, d, clients, args.threads) for n in args.rules]
        for future in as_completed(futures):  # each row is kept as soon as its rule is done
            rows.append(future.result())
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
    print(markdown(sorted(rows, key=lambda r: args.rules.index(r["rule"]))))


if __name__ == "__main__":
    main()
