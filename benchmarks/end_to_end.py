"""End to end, whole processes: `poisonlab run configs/fl-tutorial-backdoor.yaml` beside the same workload
written as a plain PyTorch per-client loop (benchmarks/tutorial_loop.py), with the floor `python -c 'import torch'`,
`poisonlab --help` and `poisonlab list aggregators`, run in turns (the machine's load moves between runs).

Each command is run --repeats times, interleaved; the table shows the best and the median wall time and the
best CPU time (user + system of the child, less sensitive to other processes on a shared machine).
Target (issue #24): poisonlab >= 3x faster than the loop; its time beyond `import torch` < 0.5 s;
--help and list <= 0.3 s.

    python benchmarks/end_to_end.py [--repeats 5] [--before DIR] [--threads N]

--before DIR adds --help, list and run from an older source tree (`git archive COMMIT | tar -x -C DIR`).
Every command runs once untimed first, with its bytecode cached under a temporary PYTHONPYCACHEPREFIX (as an
installed package's is; with PYTHONDONTWRITEBYTECODE set, every process would recompile poisonlab's ~180 modules).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fl-tutorial-backdoor.yaml"


def commands(tmp: Path, before: Path | None) -> dict[str, tuple[list[str], Path]]:
    """name -> (command, the source tree on its PYTHONPATH)."""
    py = sys.executable
    out = {
        "python -c 'import torch'": ([py, "-c", "import torch"], ROOT),
        "poisonlab --help": ([py, "-m", "poisonlab", "--help"], ROOT),
        "poisonlab list aggregators": ([py, "-m", "poisonlab", "list", "aggregators"], ROOT),
        "plain per-client loop": ([py, str(ROOT / "benchmarks" / "tutorial_loop.py"), "--out", str(tmp / "loop.json")],
                                  ROOT),
        "poisonlab run (tutorial)": ([py, "-m", "poisonlab", "run", str(CONFIG), "--out", str(tmp / "run"), "--quiet"],
                                     ROOT),
    }
    if before is not None:  # the same commands on an older source tree, e.g. `git archive <commit> | tar -x -C DIR`
        out.update({
            "before: poisonlab --help": ([py, "-m", "poisonlab", "--help"], before),
            "before: poisonlab list aggr.": ([py, "-m", "poisonlab", "list", "aggregators"], before),
            "before: poisonlab run": ([py, "-m", "poisonlab", "run", str(CONFIG), "--out", str(tmp / "run"),
                                       "--quiet"], before),
        })
    return out


def timed(cmd: list[str], root: Path, env: dict, prepare=None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run of cmd in root (`python -m` puts the working directory
    first on sys.path, so root is the tree that runs); a failing command stops the benchmark."""
    if prepare:
        prepare()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env={**env, "PYTHONPATH": str(root)}, cwd=root, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return wall, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", type=Path, help="an older source tree to time beside this one")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every command (on a loaded machine 1 "
                                                    "keeps PyTorch's threads from spinning against each other)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="e2e-"))
    base = {**os.environ, "POISONLAB_CACHE": str(tmp / "cache"), "PYTHONPYCACHEPREFIX": str(tmp / "pycache"),
            **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    base.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode compiled; so do these runs
    cmds = commands(tmp, args.before)
    fresh_run = lambda: shutil.rmtree(tmp / "run", ignore_errors=True)  # noqa: E731 - every run starts empty
    for name, (cmd, root) in cmds.items():  # once untimed: compiles the bytecode and builds list's catalog cache,
        timed(cmd, root, base, fresh_run if " run" in name else None)  # as a user's first command does
    walls: dict[str, list[float]] = {name: [] for name in cmds}
    cpus: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(args.repeats):
        for name, (cmd, root) in cmds.items():
            wall, cpu = timed(cmd, root, base, fresh_run if " run" in name else None)
            walls[name].append(wall)
            cpus[name].append(cpu)
            print(f"  {name:30s} {wall:6.2f} s wall {cpu:6.2f} s CPU", flush=True)
    print(f"{'command':30s} {'best wall':>10s} {'median':>8s} {'best CPU':>9s}   ({args.repeats} runs each, interleaved)")
    for name in cmds:
        print(f"{name:30s} {min(walls[name]):9.2f}s {statistics.median(walls[name]):7.2f}s {min(cpus[name]):8.2f}s")
    names = ("plain per-client loop", "poisonlab run (tutorial)", "python -c 'import torch'")
    (loop, run, floor), (loop_cpu, run_cpu, floor_cpu) = ([min(t[n]) for n in names] for t in (walls, cpus))
    print(f"\nloop / poisonlab run: {loop / run:.2f}x (best wall), {loop_cpu / run_cpu:.2f}x (best CPU)")
    print(f"poisonlab run beyond import torch: {run - floor:.2f} s wall, {run_cpu - floor_cpu:.2f} s CPU")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
