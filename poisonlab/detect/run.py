"""Running a named detector: the one path shared by ``poisonlab run`` (detectors in an experiment's
``detect:`` section) and ``poisonlab scan`` (a dataset and model from files).

What a detector receives follows from what it inspects (``Detector.inspects``), never from its
name. ``held_out`` is the caller's held-out clean set; it is a data detector's validation set and
an input or model detector's clean set:

| inspects        | data                 | model     | clean                      | validation | sources    |
|-----------------|----------------------|-----------|----------------------------|------------|------------|
| data            | the training data    | the model | -                          | held_out   | -          |
| sources         | the training data    | the model | -                          | held_out   | source ids |
| inputs          | the inputs to check  | the model | held_out                   | -          | -          |
| model           | -                    | the model | held_out (default: data)   | -          | -          |

In an experiment (``run_in_experiment``): the training data is the poisoned training set (truth:
the poison mask); the inputs are the test inputs followed by triggered copies of those not of the
target class (truth: triggered); a model detector scans the poisoned model's labels (truth: the
backdoor target); held_out is the test set for data detectors and the clean part of the training
set for input and model detectors. Source ids and probe records are not part of an experiment.
"""

from __future__ import annotations

import time

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, Detector, check_inputs, detection_record
from poisonlab.detect.registry import DETECTORS
from poisonlab.device import host
from poisonlab.errors import ConfigError
from poisonlab.poison.targets import attacked_classes, target_map, targets_of
from poisonlab.rng import derive_seed

IN_EXPERIMENT = ("data", "inputs", "model")           # what `poisonlab run` can give a detector
FROM_FILES = ("data", "sources", "inputs", "model")   # what `poisonlab scan` can give a detector


def inspecting(kinds: Iterable[str]) -> list[str]:
    """Names of the registered detectors whose ``inspects`` is one of kinds (sorted)."""
    kinds = tuple(kinds)
    return [e.name for e in DETECTORS.entries() if getattr(e.factory, "inspects", None) in kinds]


def build(name: str, params: dict, kinds: Iterable[str], where: str = "", context: str = "here") -> Detector:
    """The detector name(**params), or a ConfigError when what it inspects is not one of kinds.

    where: a prefix for the message (e.g. the config key path); context: where it would run.
    """
    kinds = tuple(kinds)
    inspects = getattr(DETECTORS.entry(name).factory, "inspects", None)
    if inspects not in kinds:
        raise ConfigError(f"{where}'{name}' inspects {inspects} and does not run {context};"
                          f" accepted here: {', '.join(inspecting(kinds))}")
    return DETECTORS.get(name, **params)


def inputs_for(inspects: str, *, data: Any = None, model: nn.Module | None = None, held_out: Any = None,
               sources: Any = None) -> dict:
    """The scan keywords for a detector that inspects ``inspects`` (the table in the module docstring)."""
    if inspects in ("data", "sources"):
        return {"data": data, "model": model, "validation": held_out, "sources": sources}
    if inspects == "inputs":
        return {"data": data, "model": model, "clean": held_out}
    if inspects == "model":
        return {"model": model, "clean": held_out if held_out is not None else data}
    raise ConfigError(f"inspects='{inspects}' has no inputs from data, a model and a held-out set;"
                      f" accepted: data, sources, inputs, model")


def scan(name: str, detector: Detector, inputs: dict, how: dict | None = None) -> Detection:
    """detector.scan(**inputs), after checking its required inputs (how: what to pass for each, e.g. a flag)."""
    check_inputs(name, detector.requires, inputs, how)
    started = time.perf_counter()
    progress.step(f"detector {name}: scanning", last=True)
    with progress.phase(f"detector {name}"):
        det = detector.scan(**inputs)
    progress.step(f"detector {name}: {det.num_flagged} of {len(det)} flagged"
                  f" ({progress.duration(time.perf_counter() - started)})", last=True)
    return det


@dataclass(frozen=True)
class Experiment:
    """What an experiment offers its detectors.

    backdoor: builds the configured poison that stamps a trigger (None without one); called only
    for detectors that need it.
    """

    poisoned: Dataset
    mask: torch.Tensor
    model: nn.Module
    test_set: Dataset
    seed: int
    backdoor: Callable[[], Any]


def experiment_inputs(name: str, inspects: str, exp: Experiment, where: str = "") -> tuple[dict, torch.Tensor]:
    """(scan keywords, truth) for a detector that inspects ``inspects`` inside an experiment."""
    if inspects == "data":
        return inputs_for("data", data=exp.poisoned, model=exp.model, held_out=exp.test_set), exp.mask
    with host():  # building the poison and stamping its trigger is data preparation
        return _experiment_inputs(name, inspects, exp, where)


def _experiment_inputs(name: str, inspects: str, exp: Experiment, where: str) -> tuple[dict, torch.Tensor]:
    probe = exp.backdoor()
    if probe is None:
        raise ConfigError(f"{where}'{name}' needs a backdoor poison to check against")
    clean_pool = exp.poisoned.subset(~exp.mask)
    if inspects == "model":
        tmap = target_map(probe.target, exp.test_set.num_classes)
        return inputs_for("model", model=exp.model, held_out=clean_pool), attacked_classes(tmap)
    test = exp.test_set
    attacked = targets_of(test.y, target_map(probe.target, test.num_classes))
    triggered = probe.triggered(test.subset((attacked >= 0) & (attacked != test.y)), derive_seed(exp.seed, "triggered"))
    truth = torch.cat([torch.zeros(len(test), dtype=torch.bool), torch.ones(len(triggered), dtype=torch.bool)])
    return inputs_for("inputs", data=torch.cat([test.x, triggered.x]), model=exp.model, held_out=clean_pool), truth


def run_in_experiment(name: str, params: dict, exp: Experiment, where: str = "") -> dict:
    """One metrics.json "detections" record: detector name(**params) on what it inspects in exp, against the truth."""
    detector = build(name, params, IN_EXPERIMENT, where, "inside an experiment")
    inputs, truth = experiment_inputs(name, detector.inspects, exp, where)
    return detection_record(name, scan(name, detector, inputs), truth)
