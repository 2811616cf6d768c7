"""Running an experiment from its config: data -> (poison) -> train or federate -> evaluate -> run directory.

``run_experiment(config, out_dir)`` is what ``poisonlab run`` and every sweep cell call. The objects
come from the config through builders.py; the run directory is written by outputs.py, atomically:
config.yaml (resolved), metrics.json (keys documented in docs/report.md), history.csv,
model.safetensors, report.html, and manifest.json (SHA-256 of every file).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from poisonlab import progress
from poisonlab.builders import built_poisons, build_federation, load_split
from poisonlab.config.ignored import never_firing_adversaries
from poisonlab.config.schema import ExperimentConfig
from poisonlab.data.dataset import Dataset
from poisonlab.device import check_spec, describe, deterministic, resolve
from poisonlab.errors import ConfigError
from poisonlab.outputs import base_metrics, write_run_dir
from poisonlab.rerun import changed_keys, prepare_run_dir, stored_metrics
from poisonlab.rundir import write_json
from poisonlab.shared_builds import shared


def run_experiment(config: ExperimentConfig, out_dir: str | Path | None = None, *, resume: bool = False,
                   quiet: bool = False, report: bool | None = None, engine: str = "builtin",
                   memory_budget: int | None = None, force: bool = False, device: str | None = None) -> dict:
    """Run the experiment, write its run directory (if out_dir), and return the metrics document.

    memory_budget: bytes; an experiment estimated above it is refused up front (default: 75% of RAM).
    An existing out_dir is handled by rerun.prepare_run_dir: the same config resumes (or, complete,
    returns its stored metrics without recomputing), another config is refused unless force.
    quiet: no progress lines on stderr. $POISONLAB_THREADS is honoured as by the CLI (threads.py).
    device: overrides config.device (auto | cpu | cuda | cuda:N | mps); the device the run computes on is
    printed at start (unless quiet) and recorded as metrics["device"].
    """
    from poisonlab.threads import apply_threads

    apply_threads()
    with progress.shown(not quiet):
        return _run(config, out_dir, resume=resume, quiet=quiet, report=report, engine=engine,
                    memory_budget=memory_budget, force=force, device=device)


def _run(config: ExperimentConfig, out_dir, *, resume: bool, quiet: bool, report: bool | None, engine: str,
         memory_budget: int | None, force: bool, device: str | None) -> dict:
    start = time.perf_counter()
    if engine not in ("builtin", "flower"):
        raise ConfigError(f"engine '{engine}' is not known; accepted: builtin, flower")
    if engine == "flower" and config.kind != "federated":
        raise ConfigError("--engine flower runs federated experiments; this config has no 'federated' section")
    if device is not None:
        config = config.model_copy(update={"device": check_spec(device)})
    dev = run_device(config, engine)
    if not quiet:
        from poisonlab.console import console

        console.print(f"device: {describe(dev)}" + (f", precision {config.precision}" if config.precision != "fp32"
                                                      else ""))
    if dev.type == "cuda":
        deterministic()
    out = Path(out_dir) if out_dir is not None else None
    warnings = never_firing_adversaries(config)
    if out is not None:
        state = prepare_run_dir(out, config, engine, force)
        if state == "complete":
            progress.step(f"{out} holds this config's finished run; nothing to recompute (--force runs it again)",
                          last=True)
            return stored_metrics(out)
        resume = resume_decision(config, out, resume, state)
    for text in warnings:
        progress.warn(text)
    train_set, test_set = load_split(config)
    from poisonlab.resources import check_budget, default_budget

    check_budget(config, default_budget() if memory_budget is None else memory_budget, data=train_set, device=dev)
    if config.kind == "federated":
        metrics, model = run_federated(config, train_set, test_set, out, resume=resume, quiet=quiet, engine=engine,
                                       device=dev)
    else:
        metrics, model = run_centralized_experiment(config, train_set, test_set, device=dev)
    if warnings or metrics.get("warnings"):
        metrics["warnings"] = warnings + list(metrics.get("warnings") or [])
    metrics["device"], metrics["precision"] = describe(dev), config.precision
    metrics["wall_time"] = time.perf_counter() - start
    if out is not None:
        write_run_dir(out, config, metrics, model, report=config.output.report if report is None else report,
                      input_shape=train_set.input_shape, num_classes=train_set.num_classes)
    return metrics


def resume_decision(config: ExperimentConfig, out: Path, resume: bool, state: str) -> bool:
    """Whether the federated run continues from out/checkpoints; says so, or warns that --resume cannot.

    A same-config run that did not finish resumes from its checkpoint by itself; --resume with no
    checkpoint to resume from (or on a centralized run, which has none) is a warning line, not a
    silent restart (issue #23.7).
    """
    has_checkpoint = config.kind == "federated" and checkpoint_exists(out / "checkpoints")
    if has_checkpoint and (resume or state == "resume"):
        progress.step(f"resuming the unfinished run in {out} from its last checkpoint", last=True)
        return True
    if resume:
        why = "centralized runs have no checkpoints" if config.kind != "federated" else (
            "federated.checkpoint_every is 0: set it to write them" if not config.federated.checkpoint_every
            else "none was written yet")
        progress.warn(f"--resume: no checkpoint in {out / 'checkpoints'} ({why}); starting from round 0")
    return False


def checkpoint_exists(directory: Path) -> bool:
    """True when a federated round checkpoint (fl/checkpoint.py's files) is in directory."""
    from poisonlab.fl.checkpoint import TENSORS

    return (directory / TENSORS).is_file()


# ------------------------------------------------------------------ centralized
def run_device(config: ExperimentConfig, engine: str = "builtin") -> torch.device:
    """The device the experiment computes on: config.device resolved; with the Flower engine and no GPUs per
    client (federated.client_gpus 0), 'auto' means the CPU (a ClientApp without a GPU cannot read CUDA tensors)."""
    if engine == "flower" and config.device == "auto" and not config.federated.client_gpus:
        return resolve("cpu")
    return resolve(config.device)


def run_centralized_experiment(config: ExperimentConfig, train_set: Dataset, test_set: Dataset,
                               device: torch.device | str | None = None):
    """Clean baseline versus poisoned model (centralized.py), plus the configured detectors."""
    from poisonlab.centralized import run_centralized

    dev = resolve(config.device if device is None else device)

    def clean_model():  # shared by a sweep's cells that differ in their poisons only (the same deterministic training)
        from poisonlab.centralized import train_clean_model

        return train_clean_model(train_set, config.model.name, config.train, config.seed, config.model.params, dev,
                                 config.precision)

    clean_key = ("clean model", json.dumps(config.model_dump(mode="json", include={"seed", "data", "model", "train",
                                                                                     "precision"}), sort_keys=True),
                 id(train_set), str(dev))

    def trained():
        return run_centralized(train_set, test_set, config.model.name, [c.model_dump() for c in config.poison],
                               config.injection, config.train, seed=config.seed, model_params=config.model.params,
                               device=dev, precision=config.precision,
                               clean_model=shared(clean_key, clean_model, train_set))

    # Sweep cells that differ only in their defenses (a leaderboard) share the trained clean and poisoned models:
    # the same config without `defend`/`output`/`name`, on the same data and device, is the same deterministic run.
    same_run = json.dumps(config.model_dump(mode="json", exclude={"defend", "output", "name"}), sort_keys=True)
    key = ("centralized", same_run,
           id(train_set), id(test_set), str(device))
    result = shared(key, trained, train_set, test_set)
    metrics = base_metrics(config)
    metrics["final"] = result.to_dict()
    if result.warnings:
        metrics["warnings"] = list(result.warnings)
    metrics["detections"] = run_detectors(config, result, test_set)
    if config.defend.defenses:
        metrics["defense"] = run_configured_defenses(config, result, train_set, test_set, device)
    return metrics, result.model


def run_configured_defenses(config: ExperimentConfig, result, train_set: Dataset, test_set: Dataset,
                            device: torch.device | str | None = None) -> dict:
    """Each configured defense on the poisoned model and data, scored beside the undefended model (defend/run.py)."""
    from poisonlab.defend.run import run_defenses
    from poisonlab.device import host, model_device
    from poisonlab.model_spec import build_model

    dev = model_device(result.model)

    def fresh():
        with host():  # built on the CPU from the seed, then moved (as the experiment's models are)
            built = build_model(config.model.name, train_set.input_shape, train_set.num_classes, config.seed,
                                **config.model.params)
        return built.to(dev)

    return run_defenses([(c.name, c.params) for c in config.defend.defenses], model=result.model,
                        poisoned=result.poisoned.data, mask=result.poisoned.mask, test_set=test_set,
                        poisons=result.poisons, build=fresh, train_cfg=config.train, seed=config.seed,
                        clean_fraction=config.defend.clean_fraction)


def run_detectors(config: ExperimentConfig, result, test_set: Dataset) -> list[dict]:
    """Each configured detector on what it inspects, scored against the truth (detect/run.py says what:
    data detectors scan the poisoned training set, input detectors the test inputs plus their triggered
    copies, model detectors the poisoned model's labels). provenance and canary need inputs an
    experiment does not have; run them with `poisonlab scan` and the Python API.
    """
    from poisonlab.detect.run import Experiment, run_in_experiment

    exp = Experiment(result.poisoned.data, result.poisoned.mask, result.model, test_set, config.seed,
                     backdoor=lambda: next((p for p in built_poisons(config) if p.has_trigger), None))
    return [run_in_experiment(spec.name, spec.params, exp, where=f"detect.{i}.name: ")
            for i, spec in enumerate(config.detect)]


# ------------------------------------------------------------------ federated
def check_resumed_config(config: ExperimentConfig, checkpoint_dir: Path, resume: bool) -> None:
    """Refuse to resume checkpoints written under another config, then record this run's config beside them.

    A checkpoint holds parameters and history, not the settings that produced them: resuming it with
    other rounds, clients, attacks or seeds would silently splice two experiments into one history.
    The config (without its `output` section, which does not change results) is stored as
    checkpoints/config.json when the run starts and compared on --resume.
    """
    current = config.model_dump(mode="json", exclude={"output"})
    path = checkpoint_dir / "config.json"
    if resume and path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path} is unreadable ({type(err).__name__}); delete {checkpoint_dir} to start over") from None
        changed = changed_keys(stored, current)
        if changed:
            raise ConfigError(f"{checkpoint_dir} was written under another config (it differs at {', '.join(changed[:3])});"
                              " accepted: the same config to resume, or another --out to start a new run")
    write_json(path, current)


def run_federated(config: ExperimentConfig, train_set: Dataset, test_set: Dataset, out: Path | None,
                  *, resume: bool = False, quiet: bool = False, engine: str = "builtin",
                  device: torch.device | str | None = None):
    """Run the configured Federation (built-in engine or Flower's simulation) and evaluate the final model."""
    from poisonlab.training import evaluate

    federation = build_federation(config, train_set, test_set, out, quiet=quiet,
                                  device=run_device(config, engine) if device is None else device)
    if federation.config.checkpoint_dir:
        check_resumed_config(config, Path(federation.config.checkpoint_dir), resume)
    faults: list[str] = []
    if engine == "flower":
        from poisonlab.flower.simulation import run_simulation

        from poisonlab.flower.strategy import fault_lines

        flower = run_simulation(federation, resume=resume)
        history, model = flower["history"], flower["model"]
        faults = fault_lines(history)  # dropped clients and skipped rounds: warnings, shown in the report's banner
        for line in faults:
            progress.warn(line)
    else:
        result = federation.run(resume=resume)
        history, model = [r.to_dict() for r in result.history], result.model
    final_eval = evaluate(model, federation.test)
    last = next((r for r in reversed(history) if r.get("clean_accuracy") is not None), None)
    metrics = base_metrics(config)
    metrics["engine"] = engine
    metrics["local_engine"] = federation.engine_used or federation.config.engine  # federated.engine, auto resolved
    metrics["final"] = {"clean_accuracy": final_eval.accuracy, "loss": final_eval.loss,
                        "attack_success_rate": last.get("attack_success_rate") if last else None,
                        "per_class_accuracy": final_eval.per_class_accuracy, "confusion": final_eval.confusion,
                        "flips": (last.get("flips") or {}) if last else {}, "class_names": list(test_set.classes),
                        "attackers": federation.adversary_clients}
    metrics["history"] = history
    if faults:
        metrics["warnings"] = faults
    return metrics, model
