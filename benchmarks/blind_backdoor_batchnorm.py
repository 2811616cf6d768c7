"""Why the blind backdoor cost resnet20 its clean accuracy: batch-norm statistics of an all-triggered batch.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/blind_backdoor_batchnorm.py [--rows 8000] [--epochs 5]
      [--model resnet20] [--data mnist|digits]
The zoo's resnet20 row (MNIST split, SGD lr 0.05, momentum 0.9, batch 64, 3x3 patch -> class 0, seed 0) for
the blind backdoor's two forward forms: ``separate`` (backdoors101: L_main and L_backdoor from one
train-mode forward pass each, so the backdoor pass normalises an all-triggered batch by its own statistics
and folds them into the running statistics) and ``joint`` (one pass of [x; x*]). For each: clean accuracy,
ASR, the clean accuracy and ASR after the running statistics are recomputed on the clean training rows (a
diagnostic: if that restores clean accuracy, the running statistics were the damage), the mean MGDA weight
of the main task per epoch, and the process CPU time (wall time is inflated by load). Prints JSON lines.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import poisonlab.poison.blind_backdoor as blind
from poisonlab.data import load
from poisonlab.metrics import attack_success_rate
from poisonlab.model_spec import build_model
from poisonlab.poison import POISONS
from poisonlab.training import TrainConfig, predict, train

CFG = TrainConfig(epochs=5, batch_size=64, lr=0.05, momentum=0.9)  # benchmarks/backdoor_zoo.py's
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def recalibrated(model, data):
    """A copy whose batch-norm running statistics are the exact averages over data (clean rows)."""
    m = copy.deepcopy(model)
    for layer in m.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average
    m.train()
    with torch.no_grad():
        for start in range(0, len(data), 256):
            m(data.x[start:start + 256])
    return m.eval()


def scores(model, poison, test_set) -> tuple[float, float]:
    """(clean accuracy, ASR) of model."""
    trig = poison.triggered(test_set, 0)
    return (float((predict(model, test_set.x) == test_set.y).float().mean()),
            attack_success_rate(predict(model, trig.x), trig.y, 0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mnist", choices=("mnist", "digits"))
    ap.add_argument("--rows", type=int, default=8000, help="training rows (the split's first)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--forms", nargs="*", default=["clean", "separate", "joint"])
    args = ap.parse_args()
    if args.data == "mnist":
        train_set, test_set = load("mnist", data_dir=str(DATA), part="test").split(0.2, seed=0)
    else:
        train_set, test_set = load("digits").split(0.3, seed=0)
    train_set = train_set.subset(torch.arange(min(args.rows, len(train_set))))
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": args.epochs})
    size = 3 if args.data == "mnist" else 2
    weights: list[float] = []
    mgda = blind.mgda_weight
    blind.mgda_weight = lambda *a, **k: weights.append(mgda(*a, **k)) or weights[-1]  # record each batch's alpha
    for form in args.forms:
        start = time.process_time()
        model = build_model(args.model, train_set.input_shape, train_set.num_classes, 0)
        poison = POISONS.get("blind_backdoor", trigger={"name": "patch", "params": {"size": size}}, target=0,
                             forward="joint" if form == "clean" else form)
        weights.clear()
        if form == "clean":
            train(model, train_set, cfg, seed=0)
        else:
            poison.train_model(model, poison.apply(train_set), cfg, seed=0)
        cpu = time.process_time() - start
        clean, asr = scores(model, poison, test_set)
        clean_r, asr_r = scores(recalibrated(model, train_set), poison, test_set)
        per = max(1, len(weights) // args.epochs)
        alpha = [round(sum(weights[i:i + per]) / len(weights[i:i + per]), 3) for i in range(0, len(weights), per)]
        print(json.dumps({"form": form, "model": args.model, "data": args.data, "rows": len(train_set),
                          "epochs": args.epochs, "clean_accuracy": round(clean, 4), "asr": round(asr, 4),
                          "clean_accuracy_recalibrated": round(clean_r, 4), "asr_recalibrated": round(asr_r, 4),
                          "main_weight_per_epoch": alpha, "cpu_seconds": round(cpu, 1)}), flush=True)


if __name__ == "__main__":
    main()
