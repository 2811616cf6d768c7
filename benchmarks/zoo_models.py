"""Model-zoo must-shows of issue 17 on real MNIST (the seeded 8,000 / 2,000 split of the MNIST test set).

Two sections:

- ``resnet18``: the zoo's ``resnet18`` (He et al. 2016, CIFAR variant: 3x3 stem, no max-pool, batch norm) trained
  centralized; prints clean test accuracy (target >= 98.5%) and wall time.
- ``ac``: activation clustering (Chen et al. 2018) with ``feature_layer`` on a ResNet-8 (``resnet20`` with
  ``blocks=1``, batch norm) trained under a 10% BadNets patch backdoor (3x3 white patch, bottom-right,
  all-to-one target 0); prints the poisoned model's clean accuracy and ASR, then TPR / FPR / AUROC of the
  detector for each feature layer (``fc``: the pooled penultimate features; ``layer3``: the spatial features
  entering the last stage), with ``orient=True`` (the target class is about half poison; docs/detection.md).

Run from the repository root (the full settings are meant for a GPU; ``--smoke`` is a tiny CPU check):

    PYTHONPATH=. .venv/bin/python benchmarks/zoo_models.py --device cuda
    PYTHONPATH=. .venv/bin/python benchmarks/zoo_models.py --smoke
    PYTHONPATH=. .venv/bin/python benchmarks/zoo_models.py --only ac

``--device``: poisonlab's training API has no device parameter yet, so this script moves the model and the
data there itself (``.to(device)``) and trains with the ordinary ``poisonlab.training.train``; the detector
runs on the CPU (the model is moved back), as its clustering is scikit-learn's.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from poisonlab.data import load
from poisonlab.data.dataset import Dataset
from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.metrics import attack_success_rate
from poisonlab.models import make_model
from poisonlab.poison.backdoor import Backdoor
from poisonlab.training import TrainConfig, evaluate, predict, train

SEED = 0
TARGET = 0
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
TRIGGER = {"name": "patch", "params": {"size": 3, "color": [1.0], "position": "bottom-right"}}
AC_LAYERS = ("fc", "layer3")


@dataclass(frozen=True)
class Setting:
    """One section's model and training: model params, the training config, and how many training samples
    (None: all 8,000)."""

    model: str
    params: dict
    train: TrainConfig
    train_samples: int | None = None


RESNET18 = Setting("resnet18", {"width": 64},
                   TrainConfig(epochs=15, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4,
                               lr_schedule="cosine", augment={"crop_padding": 2, "flip": False}))
"""Full setting: ResNet-18 at its paper width, SGD + cosine, random shifts of up to 2 pixels (no flip: digits)."""

AC = Setting("resnet20", {"width": 8, "blocks": 1},
             TrainConfig(epochs=5, batch_size=64, lr=0.02, momentum=0.9))
"""Full setting: the ResNet-8 of docs/detection.md (35 s on 2 CPU cores)."""

SMOKE = {"resnet18": replace(RESNET18, params={"width": 8}, train=RESNET18.train.model_copy(update={"epochs": 2}),
                             train_samples=2000),
         "ac": replace(AC, train=AC.train.model_copy(update={"epochs": 3}), train_samples=2000)}
"""Tiny CPU settings: the same code paths, in seconds; accuracies far below the targets."""


def split(data_dir: Path | str = DATA_DIR) -> tuple[Dataset, Dataset]:
    """The seeded, stratified 8,000 / 2,000 split of the real MNIST test set."""
    data = load("mnist", data_dir=str(data_dir), part="test")
    return data.split(0.2, seed=SEED)


def on(data: Dataset, device: str) -> Dataset:
    """data with x and y moved to device (the training API has no device parameter yet)."""
    return data.replace(x=data.x.to(device), y=data.y.to(device))


def head(data: Dataset, n: int | None) -> Dataset:
    """The first n samples of data (all when n is None); the split is already shuffled and stratified."""
    return data if n is None else data.subset(torch.arange(min(n, len(data))))


def trained(setting: Setting, data: Dataset, device: str) -> tuple[torch.nn.Module, float]:
    """(model built from setting, seeded, and trained on data on device; wall seconds of the training)."""
    model = make_model(setting.model, data.input_shape, data.num_classes, seed=SEED, **setting.params).to(device)
    start = time.perf_counter()
    train(model, on(data, device), setting.train, seed=SEED)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return model, time.perf_counter() - start


def resnet18_section(setting: Setting, device: str, data_dir: Path | str = DATA_DIR) -> dict:
    """resnet18 trained centralized on the split: clean test accuracy and wall time."""
    train_set, test_set = split(data_dir)
    train_set = head(train_set, setting.train_samples)
    model, seconds = trained(setting, train_set, device)
    acc = evaluate(model, on(test_set, device)).accuracy
    print(f"resnet18 {setting.params} on {len(train_set)} MNIST samples, {setting.train.epochs} epochs ({device}):"
          f" clean test accuracy {acc:.2%} (target >= 98.50%), training {seconds:.1f} s")
    return {"model": setting.model, "params": setting.params, "train_samples": len(train_set),
            "train": setting.train.model_dump(mode="json"), "device": device, "clean_accuracy": acc,
            "train_seconds": seconds}


def ac_section(setting: Setting, device: str, data_dir: Path | str = DATA_DIR, layers=AC_LAYERS) -> dict:
    """A ResNet trained on a 10% patch-backdoored split; activation clustering (orient) per feature layer."""
    train_set, test_set = split(data_dir)
    attack = Backdoor(trigger=TRIGGER, target=TARGET, rate=0.1)
    poisoned = attack.apply(head(train_set, setting.train_samples), seed=SEED)
    model, seconds = trained(setting, poisoned.data, device)
    model = model.cpu()
    acc = evaluate(model, test_set).accuracy
    asr = attack_success_rate(predict(model, attack.triggered(test_set, seed=SEED).x), test_set.y, TARGET)
    print(f"{setting.model} {setting.params}, {len(poisoned.data)} samples ({poisoned.count} poisoned),"
          f" {setting.train.epochs} epochs ({device}): clean accuracy {acc:.2%}, ASR {asr:.2%}, training {seconds:.1f} s")
    result = {"model": setting.model, "params": setting.params, "train_samples": len(poisoned.data),
              "poisoned": poisoned.count, "train": setting.train.model_dump(mode="json"), "device": device,
              "clean_accuracy": acc, "asr": asr, "train_seconds": seconds, "detection": {}}
    for layer in layers:
        start = time.perf_counter()
        det = get("activation_clustering", feature_layer=layer, orient=True).scan(data=poisoned.data, model=model)
        ev = evaluate_detection(det, poisoned.mask)
        took = time.perf_counter() - start
        print(f"  activation_clustering feature_layer={layer} orient=True: TPR {ev.tpr:.2%} FPR {ev.fpr:.2%}"
              f" AUROC {ev.auroc:.3f} (flagged {det.num_flagged}), {took:.1f} s")
        result["detection"][layer] = {"tpr": ev.tpr, "fpr": ev.fpr, "auroc": ev.auroc,
                                      "flagged": det.num_flagged, "seconds": took}
    return result


def overridden(setting: Setting, args) -> Setting:
    """setting with the command line's --epochs, --width and --train-samples applied."""
    if args.epochs is not None:
        setting = replace(setting, train=setting.train.model_copy(update={"epochs": args.epochs}))
    if args.width is not None:
        setting = replace(setting, params={**setting.params, "width": args.width})
    if args.train_samples is not None:
        setting = replace(setting, train_samples=args.train_samples)
    return setting


SECTIONS = {"resnet18": (RESNET18, resnet18_section), "ac": (AC, ac_section)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device for training, e.g. cpu, cuda, cuda:1")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="folder with the MNIST test-set idx files")
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run one section")
    parser.add_argument("--smoke", action="store_true", help="tiny settings (seconds on a CPU), not the targets")
    parser.add_argument("--epochs", type=int, help="override the setting's epochs")
    parser.add_argument("--width", type=int, help="override the model's width")
    parser.add_argument("--train-samples", type=int, help="train on the first N samples of the split only")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = {}
    for name, (full, section) in SECTIONS.items():
        if args.only in (None, name):
            results[name] = section(overridden(SMOKE[name] if args.smoke else full, args), args.device, args.data_dir)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
