"""Report rendering time: importing poisonlab.report and writing one run's report.html, in a fresh process
that has already imported torch (as `poisonlab run` has when it writes the report).

With --before DIR the same is timed on an older source tree (`git archive COMMIT | tar -x -C DIR`), e.g.
the matplotlib report, in turns with this one. Target (issue #24): <= 0.3 s for the demo-sized run.

    python benchmarks/report_render.py [--metrics runs/fl-tutorial-backdoor/metrics.json] [--repeats 5] [--before DIR]

Without --metrics the tutorial run (configs/fl-tutorial-backdoor.yaml) is run once into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys, time
import torch  # noqa: F401 - a run has it loaded before it writes the report
w0, c0 = time.perf_counter(), time.process_time()
from poisonlab.report import write_report
w1, c1 = time.perf_counter(), time.process_time()
write_report(sys.argv[2], [json.load(open(sys.argv[1]))], "tutorial")
w2, c2 = time.perf_counter(), time.process_time()
print(json.dumps([w1 - w0, c1 - c0, w2 - w1, c2 - c1]))
"""


def probe(tree: Path, metrics: Path, out: Path) -> list[float]:
    """[import wall, import CPU, render wall, render CPU] seconds in a fresh process on tree."""
    done = subprocess.run([sys.executable, "-c", PROBE, str(metrics), str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="report-bench-"))
    metrics = args.metrics
    if metrics is None:
        subprocess.run([sys.executable, "-m", "poisonlab", "run", str(ROOT / "configs" / "fl-tutorial-backdoor.yaml"),
                        "--out", str(tmp / "run"), "--quiet"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       check=True, stdout=subprocess.DEVNULL)
        metrics = tmp / "run" / "metrics.json"
    trees = {"this tree": ROOT, **({"before": args.before} if args.before else {})}
    times: dict[str, list[list[float]]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            times[name].append(probe(tree, metrics, tmp / f"{name.replace(' ', '_')}.html"))
    print(f"{'tree':10s} {'import wall':>12s} {'import CPU':>11s} {'render wall':>12s} {'render CPU':>11s}  (best of "
          f"{args.repeats}; median total wall)")
    for name, rows in times.items():
        best = [min(col) for col in zip(*rows)]
        total = statistics.median(r[0] + r[2] for r in rows)
        size = (tmp / f"{name.replace(' ', '_')}.html").stat().st_size
        print(f"{name:10s} {best[0]:11.3f}s {best[1]:10.3f}s {best[2]:11.3f}s {best[3]:10.3f}s  "
              f"(median total {total:.3f} s; report {size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
