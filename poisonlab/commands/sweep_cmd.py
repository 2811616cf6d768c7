"""``poisonlab sweep CONFIG``: every cell of the config's grid (attacks x defenses x seeds), resumable.

Cells run stacked by default (--stack N cells at a time train their clients in one engine call per round,
poisonlab/sweep_exec.py), or one after another (--stack 1), or as Ray tasks (--executor ray, poisonlab/sweep_ray.py).
"""

from __future__ import annotations

from poisonlab.config import apply_overrides, read_yaml
from poisonlab.commands._device import chosen_device
from poisonlab.commands._options import add_config_arguments, add_track, memory_budget_bytes
from poisonlab.console import console
from poisonlab.errors import ConfigError
from poisonlab.outdir import output_dir

NAME = "sweep"
HELP = "Run the grid of a YAML config (e.g. attacks x defenses x seeds); finished cells are skipped on rerun."

EXECUTORS = ("local", "ray")
DEFAULT_STACK = 14
"""Cells trained together by default (the defense matrix's 14 rules of one attack; benchmarks/sweep.py)."""
MAX_STACK = 1000


def add_arguments(parser) -> None:
    add_config_arguments(parser, "experiment YAML file with a 'grid:' section",
                         "sweep directory (default: output.dir or runs/<name>)",
                         "override a base config value before the grid is applied (repeatable)")
    parser.add_argument("--cell-reports", action="store_true",
                        help="write each cell's report.html too (off by default: the sweep's report.html and"
                             " summary compare the cells)")
    parser.add_argument("--no-report", action="store_true", help="no per-cell HTML reports (the default)")
    parser.add_argument("--stack", type=int, default=DEFAULT_STACK, metavar="N",
                        help=f"local executor: train up to N compatible cells together (default {DEFAULT_STACK};"
                             " 1: one cell after another)")
    parser.add_argument("--executor", default="local", metavar="NAME",
                        help="where cells run: local (default) or ray (needs poisonlab[flower]'s ray)")
    parser.add_argument("--address", metavar="ADDRESS",
                        help="with --executor ray: an existing Ray cluster (e.g. ray://head:10001 or auto);"
                             " default: a local Ray")
    parser.add_argument("--cpus-per-cell", type=float, default=1.0, metavar="N",
                        help="with --executor ray: CPUs each cell reserves (default 1)")
    parser.add_argument("--gpus-per-cell", type=float, default=0.0, metavar="N",
                        help="with --executor ray: GPUs each cell reserves (default 0)")
    parser.add_argument("--force", action="store_true",
                        help="replace cells run under another config (a user's own files are kept)")
    add_track(parser)  # cells finished in an earlier invocation are not logged again


def check_executor_options(args) -> None:
    """One-line ConfigErrors for an unknown executor, Ray-only options without Ray, or a bad --stack."""
    if args.executor not in EXECUTORS:
        raise ConfigError(f"--executor {args.executor!r} is not known; accepted: {', '.join(EXECUTORS)}")
    if args.executor != "ray" and args.address is not None:
        raise ConfigError(f"--address {args.address!r} needs --executor ray")
    if not 1 <= args.stack <= MAX_STACK:
        raise ConfigError(f"--stack {args.stack} is not valid; accepted: 1 to {MAX_STACK} cells")
    if args.executor == "ray":
        from poisonlab.sweep_ray import check_address, require_ray

        require_ray()
        check_address(args.address)
    for name in ("cpus_per_cell", "gpus_per_cell"):
        value = getattr(args, name)
        if not 0 <= value <= 1024 or (name == "cpus_per_cell" and value == 0):
            raise ConfigError(f"--{name.replace('_', '-')} {value} is not valid; accepted: a number in"
                              f" {'(0' if name == 'cpus_per_cell' else '[0'}, 1024]")


def run(args) -> int:
    from poisonlab.sweep import run_sweep, summarize, write_summary
    from poisonlab.sweep_exec import sequential, stacked
    from poisonlab.tracking import check_tracker

    check_executor_options(args)
    check_tracker(args.track)
    budget = memory_budget_bytes(args.memory_budget)
    doc = apply_overrides(read_yaml(args.config), args.overrides)
    output = doc.get("output") if isinstance(doc.get("output"), dict) else {}
    out = output_dir(args.out, output.get("dir"), str(doc.get("name", "sweep")))
    options = {"report": bool(args.cell_reports), "memory_budget": budget, "force": args.force,
               "device": args.device}

    def run_one(config, cell_dir):
        from poisonlab.experiment import run_experiment

        return run_experiment(config, cell_dir, quiet=True, **options)

    chosen_device(args.device or doc.get("device", "auto"))  # printed once; each cell records its own in metrics.json
    if args.executor == "ray":
        from poisonlab.sweep_ray import ray_executor

        executor = ray_executor(options, args.address, args.cpus_per_cell, args.gpus_per_cell)
    else:
        executor = sequential if args.stack == 1 else stacked(args.stack)
    if args.track:
        executor = _tracked(executor, args.track, str(doc.get("name", out.name)))
    rows = run_sweep(doc, out, run_one, log=console.print, executor=executor)
    csv_path, md_path = write_summary(out, summarize(rows))
    print(md_path.read_text())
    console.print(f"summary: {md_path} and {csv_path}")
    from poisonlab.leaderboard import write_leaderboard

    board = write_leaderboard(doc, out)
    if board:
        console.print(f"leaderboard: {', '.join(str(p) for p in board)}")
    return 0


def _tracked(executor, track: str, sweep: str):
    """The executor with each finished cell logged to the tracker, in the sweep's thread, as it finishes."""
    from poisonlab.tracking import track_run

    def run(run_one, tasks):
        for i, metrics in executor(run_one, tasks):
            config, cell_dir = tasks[i]
            tags = {"poisonlab.sweep": sweep, "poisonlab.cell": cell_dir.name}
            where = track_run(track, cell_dir, config.model_dump(mode="json"), metrics, tags, cell_dir.name)
            console.print(f"  tracked: {where}")
            yield i, metrics

    return run
