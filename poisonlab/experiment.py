"""Running an experiment from its config: data -> (poison) -> train or federate -> evaluate -> run directory.

``run_experiment(config, out_dir)`` is what ``poisonlab run`` and every sweep cell call. It
writes, atomically: config.yaml (resolved), metrics.json (keys documented in docs/report.md),
history.csv, model.safetensors, report.html, and manifest.json (SHA-256 of every file).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save as save_safetensors

from poisonlab.config.schema import AdversarySpec, ExperimentConfig, FederatedSpec
from poisonlab.data import load
from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.rng import derive_seed, generator
from poisonlab.rundir import atomic_write_bytes, atomic_write_text, write_csv, write_json, write_manifest


def load_split(config: ExperimentConfig) -> tuple[Dataset, Dataset]:
    """The configured dataset, split into (train, test), stratified and seeded."""
    data = load(config.data.dataset, **config.data.params)
    return data.split(config.data.test_fraction, seed=derive_seed(config.seed, "split"))


def run_experiment(config: ExperimentConfig, out_dir: str | Path | None = None, *, resume: bool = False,
                   quiet: bool = False, report: bool | None = None, engine: str = "builtin",
                   memory_budget: int | None = None) -> dict:
    """Run the experiment, write its run directory (if out_dir), and return the metrics document.

    memory_budget: bytes; an experiment estimated above it is refused up front (default: 75% of RAM).
    """
    start = time.perf_counter()
    if engine not in ("builtin", "flower"):
        raise ConfigError(f"engine '{engine}' is not known; accepted: builtin, flower")
    if engine == "flower" and config.kind != "federated":
        raise ConfigError("--engine flower runs federated experiments; this config has no 'federated' section")
    out = Path(out_dir) if out_dir is not None else None
    train_set, test_set = load_split(config)
    from poisonlab.resources import check_budget, default_budget

    check_budget(config, default_budget() if memory_budget is None else memory_budget, data=train_set)
    if config.kind == "federated":
        metrics, model = run_federated(config, train_set, test_set, out, resume=resume, quiet=quiet, engine=engine)
    else:
        metrics, model = run_centralized_experiment(config, train_set, test_set)
    metrics["wall_time"] = time.perf_counter() - start
    if out is not None:
        write_run_dir(out, config, metrics, model, report=config.output.report if report is None else report)
    return metrics


# ------------------------------------------------------------------ centralized
def run_centralized_experiment(config: ExperimentConfig, train_set: Dataset, test_set: Dataset):
    """Clean baseline versus poisoned model (centralized.py), plus the configured detectors."""
    from poisonlab.centralized import run_centralized

    result = run_centralized(train_set, test_set, config.model.name,
                             [c.model_dump() for c in config.poison], config.injection.model_dump(),
                             config.train.model_dump(), seed=config.seed, model_params=config.model.params)
    metrics = base_metrics(config)
    metrics["final"] = result.to_dict()
    metrics["detections"] = run_detectors(config, result, test_set)
    return metrics, result.model


def run_detectors(config: ExperimentConfig, result, test_set: Dataset) -> list[dict]:
    """Each configured detector on what it inspects, scored against the truth (detect/run.py says what:
    data detectors scan the poisoned training set, input detectors the test inputs plus their triggered
    copies, model detectors the poisoned model's labels). provenance and canary need inputs an
    experiment does not have; run them with `poisonlab scan` and the Python API.
    """
    from poisonlab.detect.run import Experiment, run_in_experiment

    exp = Experiment(result.poisoned.data, result.poisoned.mask, result.model, test_set, config.seed,
                     backdoor=lambda: next((p for p in _built_poisons(config) if hasattr(p, "triggered")), None))
    return [run_in_experiment(spec.name, spec.params, exp, where=f"detect.{i}.name: ")
            for i, spec in enumerate(config.detect)]


def _built_poisons(config: ExperimentConfig) -> list:
    from poisonlab.poison.registry import make_poison

    return [make_poison(c.model_dump()) for c in config.poison]


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
        changed = _changed_keys(stored, current)
        if changed:
            raise ConfigError(f"{checkpoint_dir} was written under another config (it differs at {', '.join(changed[:3])});"
                              " accepted: the same config to resume, or another --out to start a new run")
    write_json(path, current)


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted key paths where two JSON documents differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new))
                for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".") or "(root)"]


def run_federated(config: ExperimentConfig, train_set: Dataset, test_set: Dataset, out: Path | None,
                  *, resume: bool = False, quiet: bool = False, engine: str = "builtin"):
    """Run the configured Federation (built-in engine or Flower's simulation) and evaluate the final model."""
    from poisonlab.training import evaluate

    federation = build_federation(config, train_set, test_set, out, quiet=quiet)
    if federation.config.checkpoint_dir:
        check_resumed_config(config, Path(federation.config.checkpoint_dir), resume)
    if engine == "flower":
        from poisonlab.flower.simulation import run_simulation

        flower = run_simulation(federation)
        history, model = flower["history"], flower["model"]
    else:
        result = federation.run(resume=resume)
        history, model = [r.to_dict() for r in result.history], result.model
    final_eval = evaluate(model, test_set)
    last = next((r for r in reversed(history) if r.get("clean_accuracy") is not None), None)
    metrics = base_metrics(config)
    metrics["engine"] = engine
    metrics["final"] = {"clean_accuracy": final_eval.accuracy, "loss": final_eval.loss,
                        "attack_success_rate": last.get("attack_success_rate") if last else None,
                        "per_class_accuracy": final_eval.per_class_accuracy, "confusion": final_eval.confusion,
                        "flips": (last.get("flips") or {}) if last else {}, "class_names": list(test_set.classes),
                        "attackers": federation.adversary_clients}
    metrics["history"] = history
    return metrics, model


def build_federation(config: ExperimentConfig, train_set: Dataset, test_set: Dataset, out: Path | None = None,
                     quiet: bool = True):
    """The Federation for a config: server data carved out, clients partitioned, adversaries, aggregator."""
    from poisonlab.fl.federation import Federation
    from poisonlab.models import make_model

    fed = config.federated
    train_set, root, validation = carve_server_data(fed, train_set, config.seed)
    clients = partition_clients(fed, train_set, config.seed)
    adversaries, probe = build_adversaries(fed, config.seed)
    target = getattr(probe, "target", None) if probe is not None and hasattr(probe, "triggered") else None
    triggered = probe.triggered(test_set, derive_seed(config.seed, "triggered")) if target is not None else None
    model = make_model(config.model.name, train_set.input_shape, train_set.num_classes, seed=config.seed,
                       **config.model.params)
    return Federation(model, clients, test_set, federation_config(config, out, quiet, target, probe),
                      aggregator=build_aggregator(fed), adversaries=adversaries, triggered_test=triggered,
                      root_data=root, validation_data=validation)


def carve_server_data(fed: FederatedSpec, train_set: Dataset, seed: int):
    """Take the server's root and validation sets (seeded) out of the training split before partitioning."""
    need = fed.server_data.root_size + fed.server_data.validation_size
    if need == 0:
        return train_set, None, None
    if need >= len(train_set):
        raise ConfigError(f"federated.server_data asks for {need} samples but the training split has {len(train_set)}")
    order = torch.randperm(len(train_set), generator=generator(seed, "server-data"))
    r, v = fed.server_data.root_size, fed.server_data.validation_size
    root = train_set.subset(order[:r]) if r else None
    validation = train_set.subset(order[r:r + v]) if v else None
    return train_set.subset(order[need:]), root, validation


def partition_clients(fed: FederatedSpec, train_set: Dataset, seed: int) -> list[Dataset]:
    """The K client datasets from the configured partitioner."""
    from poisonlab.fl.partition import partition

    parts = partition(fed.partition.name, train_set.y, fed.clients, seed=derive_seed(seed, "partition"),
                      **fed.partition.params)
    return [train_set.subset(idx) for idx in parts]


def build_adversaries(fed: FederatedSpec, seed: int):
    """poisonlab Adversary objects from the config, and the first poison with a trigger (for ASR) or flips."""
    from poisonlab.fl.adversary import Adversary

    adversaries, probe = [], None
    for i, spec in enumerate(fed.adversaries()):
        poison = make_poison_fn(spec, seed, i)
        if poison is not None and probe is None:
            probe = poison.poison
        adversaries.append(Adversary(
            clients=spec.clients, poison=poison, attack=make_attack(spec), schedule=make_schedule(spec),
            boost=None if spec.boost == 1.0 else spec.boost, force=spec.force_participation,
            name=_adversary_name(spec, i), omniscient=spec.omniscient))
    return adversaries, probe


class _ClientPoison:
    """callable(clean client Dataset, client id) -> poisoned Dataset, seeded per client."""

    def __init__(self, poison: Any, seed: int):
        self.poison, self.seed = poison, seed

    def __call__(self, data: Dataset, client_id: int) -> Dataset:
        return self.poison.apply(data, derive_seed(self.seed, "client-poison", client_id)).data


def make_poison_fn(spec: AdversarySpec, seed: int, index: int) -> _ClientPoison | None:
    if spec.poison is None:
        return None
    from poisonlab.poison.registry import make_poison

    return _ClientPoison(make_poison(spec.poison.model_dump()), derive_seed(seed, "adversary", index))


def make_attack(spec: AdversarySpec):
    if spec.attack is None:
        return None
    from poisonlab.fl.attacks import ATTACKS

    return ATTACKS.get(spec.attack.name, **spec.attack.params)


def make_schedule(spec: AdversarySpec):
    from poisonlab.fl.types import Schedule

    s = spec.schedule
    return Schedule(start=s.start, end=s.end, every=s.every, rounds=tuple(s.rounds) if s.rounds is not None else None)


def _adversary_name(spec: AdversarySpec, index: int) -> str:
    parts = [c.name for c in (spec.poison, spec.attack) if c is not None]
    return "+".join(parts) or f"adversary-{index}"


def build_aggregator(fed: FederatedSpec):
    """The configured rule, or a chain of steps (e.g. norm_clip then median)."""
    from poisonlab.fl.aggregators import AGGREGATORS, chain

    steps = [AGGREGATORS.get(c.name, **c.params) for c in fed.aggregator_chain()]
    return steps[0] if len(steps) == 1 else chain(*steps)


def federation_config(config: ExperimentConfig, out: Path | None, quiet: bool, target, probe):
    from poisonlab.fl.federation import FederationConfig
    from poisonlab.fl.local import LocalConfig

    fed = config.federated
    flips = tuple(sorted(_flip_pairs(probe))) if probe is not None else ()
    return FederationConfig(
        rounds=fed.rounds, sample=fed.sample, local=LocalConfig(**fed.local.model_dump()),
        server_lr=fed.server_lr, eval_every=fed.eval_every, seed=config.seed,
        checkpoint_every=fed.checkpoint_every if out is not None else 0,
        checkpoint_dir=str(out / "checkpoints") if out is not None and fed.checkpoint_every else None,
        target=target, flips=flips, quiet=quiet)


def _flip_pairs(poison) -> set[tuple[int, int]]:
    source, target = getattr(poison, "source", None), getattr(poison, "target", None)
    return {(int(source), int(target))} if source is not None and target is not None else set()


# ------------------------------------------------------------------ outputs
def base_metrics(config: ExperimentConfig) -> dict:
    """The metrics document's header: name, kind, seed, the resolved config; empty sections."""
    return {"name": config.name, "kind": config.kind, "seed": config.seed, "final": {}, "history": [],
            "detections": [], "config": config.model_dump(mode="json")}


def write_run_dir(out: Path, config: ExperimentConfig, metrics: dict, model, report: bool = True) -> None:
    """Write the run directory atomically: config, metrics, history, model, report, manifest."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    if model is not None:
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        atomic_write_bytes(out / "model.safetensors", save_safetensors(tensors))
    if metrics.get("history"):
        write_csv(out / "history.csv", [_flat_round(r) for r in metrics["history"]])
    if report:
        from poisonlab.report import write_report

        write_report(out / "report.html", [metrics], title=config.name)
    write_json(out / "metrics.json", metrics)
    write_manifest(out)


def _flat_round(record: dict) -> dict:
    """A history entry with list fields kept as JSON cells and flips spread into columns."""
    row = {k: v for k, v in record.items() if k != "flips"}
    row.update({f"flips {k}": v for k, v in (record.get("flips") or {}).items()})
    return row
