"""``poisonlab run CONFIG``: one experiment from a YAML file, into a run directory."""

from __future__ import annotations

from poisonlab.config import load_config
from poisonlab.config.ignored import check_resume, ignored_settings, warn
from poisonlab.commands._options import add_config_arguments, add_track, memory_budget_bytes
from poisonlab.console import console, percent, table
from poisonlab.outdir import output_dir

NAME = "run"
HELP = "Run one experiment from a YAML config and write its run directory (metrics, history, report)."


def add_arguments(parser) -> None:
    add_config_arguments(parser, "experiment YAML file (see configs/)",
                         "run directory (default: output.dir or runs/<name>)",
                         "override a config value, e.g. --set federated.rounds=5 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    parser.add_argument("--force", action="store_true",
                        help="replace a run of another config in the run directory (a user's own files are kept)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    parser.add_argument("--engine", choices=["builtin", "flower"], default="builtin",
                        help="federated engine: poisonlab's vectorized one, or Flower's simulation (needs poisonlab[flower])")
    add_track(parser)


def run(args) -> int:
    from poisonlab.experiment import run_experiment
    from poisonlab.tracking import check_tracker, track_run

    check_tracker(args.track)
    config = load_config(args.config, args.overrides)
    check_resume(config, args.resume, "flower" if args.engine == "flower" else "builtin")
    warn(ignored_settings(config, resume=args.resume))
    out = output_dir(args.out, config.output.dir, config.name)
    metrics = run_experiment(config, out, resume=args.resume, quiet=args.quiet, engine=args.engine,
                             memory_budget=memory_budget_bytes(args.memory_budget), force=args.force,
                             device=args.device)
    print_summary(metrics)
    report = out / "report.html"
    console.print(f"run directory: {out}" + (f"  (report: {report})" if report.is_file() else ""))
    if args.track:
        console.print(f"tracked: {track_run(args.track, out, config.model_dump(mode='json'), metrics)}")
    return 0


def print_summary(metrics: dict) -> None:
    """The final figures of a run as a small table."""
    final = metrics["final"]
    rows = [("clean accuracy", percent(final.get("clean_accuracy", float("nan"))))]
    if final.get("clean_accuracy_clean_model") is not None:
        rows.append(("clean accuracy, clean model", percent(final["clean_accuracy_clean_model"])))
    if final.get("attack_success_rate") is not None:
        rows.append(("attack success rate", percent(final["attack_success_rate"])))
    if final.get("attack_success_rate_clean_model") is not None:
        rows.append(("attack success rate, clean model", percent(final["attack_success_rate_clean_model"])))
    for pair, count in (final.get("flips") or {}).items():
        before = (final.get("flips_clean_model") or {}).get(pair)
        rows.append((f"{pair} on the test split", f"{count}" + (f" (clean model: {before})" if before is not None else "")))
    for det in metrics.get("detections", []):
        rows.append((f"{det['detector']} TPR / FPR", f"{percent(det['tpr'])} / {percent(det['fpr'])}"))
    for d in (metrics.get("defense") or {}).get("defenses", []):
        if d.get("refused"):
            rows.append((f"defense {d['defense']}", f"refused: {d['refused']}"))
            continue
        asr = "" if d.get("attack_success_rate") is None else f", ASR {percent(d['attack_success_rate'])}"
        der = "" if d.get("der") is None else f", DER {percent(d['der'])}"
        rows.append((f"defense {d['defense']}", f"clean acc. {percent(d['clean_accuracy'])}{asr}{der}"))
    rows.append(("wall time", f"{metrics['wall_time']:.1f} s"))
    console.print(table(f"{metrics['name']} ({metrics['kind']}, seed {metrics['seed']})", ["metric", "value"], rows))
