"""``poisonlab sweep CONFIG``: every cell of the config's grid (attacks x defenses x seeds), resumable."""

from __future__ import annotations

from poisonlab.config import apply_overrides, read_yaml
from poisonlab.commands._device import chosen_device
from poisonlab.commands._options import add_config_arguments, add_track, memory_budget_bytes
from poisonlab.console import console
from poisonlab.outdir import output_dir

NAME = "sweep"
HELP = "Run the grid of a YAML config (e.g. attacks x defenses x seeds); finished cells are skipped on rerun."


def add_arguments(parser) -> None:
    add_config_arguments(parser, "experiment YAML file with a 'grid:' section",
                         "sweep directory (default: output.dir or runs/<name>)",
                         "override a base config value before the grid is applied (repeatable)")
    parser.add_argument("--no-report", action="store_true", help="skip the per-cell HTML reports")
    parser.add_argument("--force", action="store_true",
                        help="replace cells run under another config (a user's own files are kept)")
    add_track(parser)  # cells finished in an earlier invocation are not logged again


def run(args) -> int:
    from poisonlab.experiment import run_experiment
    from poisonlab.sweep import run_sweep, summarize, write_summary
    from poisonlab.tracking import check_tracker, track_run

    check_tracker(args.track)
    budget = memory_budget_bytes(args.memory_budget)
    doc = apply_overrides(read_yaml(args.config), args.overrides)
    output = doc.get("output") if isinstance(doc.get("output"), dict) else {}
    out = output_dir(args.out, output.get("dir"), str(doc.get("name", "sweep")))

    def run_one(config, cell_dir):
        metrics = run_experiment(config, cell_dir, quiet=True, report=not args.no_report, memory_budget=budget,
                                 force=args.force, device=args.device)
        if args.track:
            tags = {"poisonlab.sweep": str(doc.get("name", out.name)), "poisonlab.cell": cell_dir.name}
            console.print(f"  tracked: {track_run(args.track, cell_dir, config.model_dump(mode='json'), metrics, tags, cell_dir.name)}")
        return metrics

    chosen_device(args.device or doc.get("device", "auto"))  # printed once; each cell records its own in metrics.json
    rows = run_sweep(doc, out, run_one, log=console.print)
    csv_path, md_path = write_summary(out, summarize(rows))
    print(md_path.read_text())
    console.print(f"summary: {md_path} and {csv_path}")
    return 0
