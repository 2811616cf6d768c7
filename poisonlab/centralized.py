"""The centralized poisoning pipeline: a clean baseline model versus a poisoned one, side by side.

run_centralized trains a clean model on the clean training set (the baseline), applies the
poisons in order, then obtains the poisoned model by the injection mode (concat: train from
scratch on the poisoned set; fine_tune: fine-tune the clean model on the poison, optionally
mixed with clean rows). Both are evaluated on the clean test set (accuracy, per-class accuracy,
confusion) and, for backdoor-style poisons, on the triggered test set (attack success rate and the
confusion matrix of triggered inputs, where the backdoor shows). For the report it also records which
classes the poison touched and a few clean vs poisoned examples (poisonlab/report/record.py).
"""

from __future__ import annotations

import copy
import time
from functools import partial
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.device import host, model_device, move_dataset, resolve
from poisonlab.divergence import collapse_warning
from poisonlab.errors import ConfigError
from poisonlab.metrics import attack_success_rate, confusion_matrix
from poisonlab.model_spec import ModelSpec, build_model, spec_label
from poisonlab.poison.injection import Injection, fine_tune_set, retrain_head
from poisonlab.poison.registry import make_poison
from poisonlab.poison.result import Poisoned
from poisonlab.poison.targets import asr_target
from poisonlab.report.record import poison_classes, poisoned_examples, triggered_examples
from poisonlab.training import TrainConfig, evaluate, fine_tune, predict, train


@dataclass
class CentralizedResult:
    """Clean and poisoned models' evaluations, ASR, flips, and the poisoned training data."""

    clean_accuracy: float
    clean_accuracy_clean_model: float
    loss: float
    per_class_accuracy: list[float]
    per_class_accuracy_clean_model: list[float]
    confusion: list[list[int]]
    confusion_clean_model: list[list[int]]
    attack_success_rate: float | None
    attack_success_rate_clean_model: float | None
    flips: dict[str, int]
    flips_clean_model: dict[str, int]
    class_names: list[str]
    poison_count: int
    train_size: int
    injection: dict
    poison_info: list[dict]
    wall_time: float
    probe: dict | None = None
    loss_clean_model: float | None = None
    confusion_triggered: list[list[int]] | None = None
    confusion_triggered_clean_model: list[list[int]] | None = None
    poison_classes: dict | None = None
    examples: dict | None = None
    attack_target: int | tuple[int, ...] | None = None  # a target map for all-to-all / per-source backdoors
    warnings: list[str] = field(default_factory=list)  # e.g. a model whose training collapsed (divergence.py)
    model: Any = field(default=None, repr=False)
    clean_model: Any = field(default=None, repr=False)
    poisoned: Poisoned | None = field(default=None, repr=False)
    poisons: list | None = field(default=None, repr=False)  # the poisons as applied (bound to the clean model)

    def _repr_html_(self) -> str:
        """Jupyter: clean vs poisoned model as a table, and the per-class accuracy change (poisonlab.notebook)."""
        from poisonlab.notebook import centralized_html

        return centralized_html(self)

    def to_dict(self) -> dict:
        """JSON-able dict; the keys of metrics.json "final" plus the clean-model counterparts."""
        skip = {"model", "clean_model", "poisoned", "poisons"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}


def apply_poisons(train_set: Dataset, poisons: Sequence[Any], seed: int, model=None,
                  test_set: Dataset | None = None) -> tuple[Poisoned, list]:
    """Apply each poison in order (seeds derived per position); the masks accumulate (or-ed, extended).

    Poisoning is data preparation and runs on the host (a poison that needs the model gets a CPU copy)."""
    with host():
        return _apply_poisons(train_set, poisons, seed, model, test_set)


def _apply_poisons(train_set, poisons, seed, model, test_set) -> tuple[Poisoned, list]:
    data, mask, infos, built = train_set, torch.zeros(len(train_set), dtype=torch.bool), [], []
    for i, spec in enumerate(poisons):
        poison = make_poison(spec)
        if poison.requires_model:
            poison = poison.bind(copy.deepcopy(model).cpu() if model is not None else None, test_set)
        from poisonlab.rng import derive_seed

        result = poison.apply(data, derive_seed(seed, "poison", i))
        old = torch.zeros(len(result.data), dtype=torch.bool)
        old[: len(mask)] = mask
        mask = old | result.mask
        data = result.data
        infos.append(result.info)
        built.append(poison)
    return Poisoned(data, mask, {"poisons": infos}), built


def source_target_pairs(poisons: Sequence[Any], num_classes: int) -> list[tuple[int, int]]:
    """The (source, target) pairs whose flip counts are reported: declared by the poisons."""
    return sorted({pair for p in poisons for pair in p.flip_pairs})


def _flips(confusion: list[list[int]], pairs) -> dict[str, int]:
    return {f"{s}->{t}": int(confusion[s][t]) for s, t in pairs}


def run_centralized(train_set: Dataset, test_set: Dataset, model: ModelSpec, poisons: Sequence[Any],
                    injection: Injection | dict | str | None = None, train_cfg: TrainConfig | dict | None = None,
                    seed: int = 0, model_params: dict | None = None, clean_model=None,
                    device: str | torch.device | None = None, precision: str = "fp32") -> CentralizedResult:
    """Train clean and poisoned models and compare them on the clean and triggered test sets.

    model: a registered name, 'package.module:factory', a factory (input_shape, num_classes, **params)
    -> nn.Module, or an nn.Module (deep-copied for each side; see poisonlab.model_spec.build_model).
    clean_model: an already trained baseline (same data, model and seed) to reuse instead of training one;
    with concat injection the poisoned model is built from the same spec, and must have its architecture.
    device: where the models train and are evaluated (auto | cpu | cuda | cuda:N | mps; None: where a given
    nn.Module is, else the CPU; the models are built on the CPU, seeded, then moved; the returned models stay
    there); precision: fp32 or bf16 autocast training.
    """
    start = time.perf_counter()
    dev = resolve(device) if device is not None else (model_device(model) if isinstance(model, torch.nn.Module)
                                                      else torch.device("cpu"))
    inj = Injection.from_spec(injection)
    cfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig(**(train_cfg or {}))
    params = model_params or {}
    build = partial(build_model, model, train_set.input_shape, train_set.num_classes, seed, **params)

    def fresh():
        with host():  # built on the CPU from the seed (the same weights on every device), then moved
            built = build()
        return built.to(dev)

    with host():  # poisons are built on the host (their triggers may hold tensors)
        training_attack([make_poison(p) for p in poisons], inj)  # refused before any training
    test_on_device = move_dataset(test_set, dev)  # evaluated several times: moved once
    if clean_model is None:
        clean_model = train_clean_model(train_set, model, cfg, seed, params, dev, precision)
    elif model_device(clean_model) != dev:  # a copy there: the caller's model is not moved
        clean_model = copy.deepcopy(clean_model).to(dev)
    poisoned, built = apply_poisons(train_set, poisons, seed, model=clean_model, test_set=test_set)
    progress.step(f"{poisoned.count} of {len(poisoned.data)} training samples poisoned; training the poisoned model",
                  last=True)
    trainer = training_attack(built, inj)
    if inj.mode == "concat":
        poisoned_model = fresh()
        check_same_architecture(clean_model, poisoned_model, spec_label(model))
        with progress.phase("poisoned model"):
            if trainer is None:
                train(poisoned_model, poisoned.data, cfg, seed=seed, precision=precision)
            else:
                trainer.train_model(poisoned_model, poisoned, cfg, seed=seed, precision=precision)
    else:
        ft_cfg = TrainConfig(epochs=inj.epochs, lr=inj.lr, batch_size=inj.batch_size or cfg.batch_size,
                             momentum=cfg.momentum if inj.momentum is None else inj.momentum,
                             weight_decay=cfg.weight_decay, optimizer=cfg.optimizer, lr_schedule=cfg.lr_schedule,
                             augment=None if inj.head_only else cfg.augment)  # a head trains on features, not images
        ft_data = fine_tune_set(poisoned, inj.clean_fraction, seed)
        with progress.phase("poisoned model (fine-tuned)"):
            poisoned_model = (retrain_head(clean_model, ft_data, ft_cfg, seed, inj.feature_layer) if inj.head_only
                              else fine_tune(clean_model, ft_data, ft_cfg, seed=seed, precision=precision))
    ev, ev0 = evaluate(poisoned_model, test_on_device), evaluate(clean_model, test_on_device)
    warnings = [w for w in (collapse_warning(ev.confusion, "poisoned model"),
                            collapse_warning(ev0.confusion, "clean model")) if w]
    for text in warnings:
        progress.warn(text)
    trig = _triggered(built, test_set, poisoned_model, clean_model, seed)
    pairs = source_target_pairs(built, train_set.num_classes)
    return CentralizedResult(
        clean_accuracy=ev.accuracy, clean_accuracy_clean_model=ev0.accuracy, loss=ev.loss,
        per_class_accuracy=ev.per_class_accuracy, per_class_accuracy_clean_model=ev0.per_class_accuracy,
        confusion=ev.confusion, confusion_clean_model=ev0.confusion,
        attack_success_rate=trig["asr"], attack_success_rate_clean_model=trig["asr_clean_model"],
        flips=_flips(ev.confusion, pairs), flips_clean_model=_flips(ev0.confusion, pairs),
        class_names=list(train_set.classes), poison_count=poisoned.count, train_size=len(poisoned.data),
        injection=inj.model_dump(), poison_info=poisoned.info["poisons"],
        probe=_probe(built, test_set, poisoned_model, clean_model), loss_clean_model=ev0.loss,
        confusion_triggered=trig["confusion"], confusion_triggered_clean_model=trig["confusion_clean_model"],
        poison_classes=poison_classes(train_set.y, poisoned.data.y, poisoned.mask, train_set.num_classes),
        examples={"poisoned": _poisoned_examples(train_set, poisoned), "triggered": trig["examples"]},
        attack_target=trig["target"], warnings=warnings,
        wall_time=time.perf_counter() - start, model=poisoned_model, clean_model=clean_model, poisoned=poisoned,
        poisons=built)


def train_clean_model(train_set: Dataset, model: ModelSpec, cfg: TrainConfig, seed: int, model_params: dict,
                      device: torch.device, precision: str = "fp32"):
    """The clean baseline exactly as run_centralized trains it: built on the CPU from the seed, moved to device,
    trained on the clean training set. Runs that differ only in their poisons can share it (experiment.py)."""
    with host():
        clean_model = build_model(model, train_set.input_shape, train_set.num_classes, seed, **model_params)
    clean_model = clean_model.to(device)
    with progress.phase("clean model"):
        train(clean_model, train_set, cfg, seed=seed, precision=precision)
    return clean_model


def training_attack(poisons, inj: Injection):
    """The one poison that trains the model itself (poison/base.py's trains_model), or None; refuses two, or one
    with an injection other than concat (its training replaces the from-scratch training of the poisoned model)."""
    trainers = [p for p in poisons if p.trains_model]
    if len(trainers) > 1:
        raise ConfigError(f"poisons {', '.join(p.name for p in trainers)} each train the model; accepted: at most one")
    if trainers and inj.mode != "concat":
        raise ConfigError(f"poison '{trainers[0].name}' trains the model itself; accepted: injection mode concat")
    return trainers[0] if trainers else None


def check_same_architecture(clean_model, model, label: str) -> None:
    """Refuse a given clean_model whose parameters (names, shapes) differ from the model built from the spec:
    the comparison is only honest between two models of one architecture."""
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in (clean_model, model)]
    if shapes[0] != shapes[1]:
        raise ConfigError(f"clean_model ({type(clean_model).__name__}) does not have the architecture of model"
                          f" '{label}' (parameter names or shapes differ); accepted: a clean_model built from the"
                          " same model spec and params")


# Poisons whose triggered set carries placeholder labels, not the inputs' true classes (edge-case photos):
# their ASR is defined, a confusion matrix by "true class" of those inputs is not.
PLACEHOLDER_LABELS = frozenset({"edge_case"})


def _triggered(poisons, test_set: Dataset, model, clean_model, seed: int) -> dict:
    """Both models on the triggered test set of the first poison that has a trigger: ASR, confusion matrix
    (rows: true class, None for placeholder labels), a few examples and the target; all None without a trigger."""
    none = {"asr": None, "asr_clean_model": None, "confusion": None, "confusion_clean_model": None, "examples": [],
            "target": None}
    p = next((p for p in poisons if p.has_trigger), None)
    if p is None:
        return none
    with host():  # stamping the trigger is data preparation
        trig = p.triggered(test_set, seed)
    if len(trig) == 0:
        return none
    pred, pred0 = predict(model, trig.x), predict(clean_model, trig.x)
    k = test_set.num_classes
    target = asr_target(p, k)
    confusions = ((None, None) if p.name in PLACEHOLDER_LABELS
                  else (confusion_matrix(pred, trig.y, k).tolist(), confusion_matrix(pred0, trig.y, k).tolist()))
    examples = (triggered_examples(test_set.x, test_set.y, trig.x, trig.y, target, pred, pred0)
                if trig.is_image else [])
    if p.name in PLACEHOLDER_LABELS:
        examples = [{**e, "label": None} for e in examples]
    return {"asr": attack_success_rate(pred, trig.y, target), "asr_clean_model": attack_success_rate(pred0, trig.y, target),
            "confusion": confusions[0], "confusion_clean_model": confusions[1], "examples": examples, "target": target}


def _poisoned_examples(train_set: Dataset, poisoned: Poisoned) -> list[dict]:
    """A few poisoned training rows next to their clean originals (images only)."""
    if not poisoned.data.is_image:
        return []
    return poisoned_examples(train_set.x, train_set.y, poisoned.data.x, poisoned.data.y, poisoned.mask)


def _probe(poisons, test_set: Dataset, model, clean_model) -> dict | None:
    """Predictions of both models on held-out probe inputs (e.g. external test photos), or None."""
    for p in poisons:
        with host():
            probe = p.probe(test_set)
        if probe is not None:
            pred, pred0 = predict(model, probe["x"]).tolist(), predict(clean_model, probe["x"]).tolist()
            t = probe["target"]
            return {"files": probe["files"], "target": t, "predicted": pred, "predicted_clean_model": pred0,
                    "as_target": sum(v == t for v in pred), "as_target_clean_model": sum(v == t for v in pred0)}
    return None
