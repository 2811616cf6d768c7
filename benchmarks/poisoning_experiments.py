"""The must-show data-poisoning experiments on a seeded 8,000/2,000 split of the real MNIST test set (cnn).

Run:  .venv/bin/python benchmarks/poisoning_experiments.py [--data-dir ../shared/data] [--out docs/poisoning]
Writes <out>/results.json (updated atomically after every experiment) and gallery PNGs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from poisonlab.centralized import run_centralized
from poisonlab.data import load
from poisonlab.models import make_model
from poisonlab.poison import TRIGGERS
from poisonlab.poison.gallery import render_gallery
from poisonlab.rundir import atomic_write_text
from poisonlab.training import TrainConfig, train

SEED = 0
CFG = TrainConfig(epochs=5, batch_size=64, lr=0.05, momentum=0.9)


def save(results: dict, out: Path) -> None:
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))


def per_class_change(r) -> list[float]:
    """Per-class test accuracy of the poisoned model minus the clean model's, in points."""
    return [100 * (a - b) for a, b in zip(r.per_class_accuracy, r.per_class_accuracy_clean_model)]


def summary(r) -> dict:
    d = r.to_dict()
    d.pop("confusion", None)
    d.pop("confusion_clean_model", None)
    return d


def flip_over_seeds(train_set, test_set, flip: list, seeds: int, cfg: TrainConfig = CFG) -> dict:
    """Clean and flipped models trained in pairs (same seed: same initial weights and batch order) for
    seeds 0..seeds-1; the per-class accuracy change of each pair, their mean and standard error.

    One pair's per-class change mixes the flip's effect with training noise: a test class has ~200
    images, so one image is 0.5 points. The mean over pairs keeps the effect and shrinks the noise.
    """
    changes, flips, flips0, confusion = [], [], [], []
    for seed in range(seeds):
        r = run_centralized(train_set, test_set, "cnn", flip, None, cfg, seed)
        changes.append(per_class_change(r))
        flips.append(r.flips["7->1"])
        flips0.append(r.flips_clean_model["7->1"])
        confusion.append(torch.tensor(r.confusion) - torch.tensor(r.confusion_clean_model))
        print(f"flip seed {seed}: 7->1 {flips0[-1]} -> {flips[-1]}; per-class change {[round(v, 2) for v in changes[-1]]}",
              flush=True)
    c = torch.tensor(changes, dtype=torch.float64)
    mean, se = c.mean(0), c.std(0) / len(changes) ** 0.5 if len(changes) > 1 else torch.zeros(c.shape[1])
    print(f"flip over {seeds} seeds: mean per-class change {[round(v, 2) for v in mean.tolist()]}"
          f" (standard error {[round(v, 2) for v in se.tolist()]})", flush=True)
    moved = torch.stack(confusion).double().mean(0)  # mean change of each (true, predicted) count
    print(f"mean change of test images predicted as 7, by true class: {[round(v, 1) for v in moved[:, 7].tolist()]}",
          flush=True)
    return {"seeds": seeds, "train": cfg.model_dump(), "confusion_change_mean": moved.tolist(),
            "per_class_change_points": changes, "mean_change_points": mean.tolist(),
            "standard_error_points": se.tolist(), "flips_7_to_1": flips, "flips_7_to_1_clean_model": flips0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "poisoning"))
    ap.add_argument("--only", nargs="*", default=None,
                    help="subset of: backdoor flip flip_ft flip_seeds external collision hidden")
    ap.add_argument("--seeds", type=int, default=5, help="training seeds for flip_seeds (default 5)")
    ap.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"],
                    help="learning-rate schedule of the flip_seeds trainings (default cosine)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the flip_seeds trainings (default 5)")
    args = ap.parse_args()
    data_dir, out = Path(args.data_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    todo = set(args.only or ["backdoor", "flip", "external", "collision", "hidden"])

    mnist = load("mnist", data_dir=str(data_dir / "mnist"), part="test")
    train_set, test_set = mnist.split(0.2, seed=SEED)
    t0 = time.perf_counter()
    clean = make_model("cnn", train_set.input_shape, 10, seed=SEED)
    train(clean, train_set, CFG, seed=SEED)
    print(f"clean model trained in {time.perf_counter() - t0:.0f}s", flush=True)

    def run(poisons, injection=None):
        return run_centralized(train_set, test_set, "cnn", poisons, injection, CFG, SEED, clean_model=clean)

    if "backdoor" in todo:
        patch = {"name": "patch", "params": {"size": 3, "color": [1.0], "position": "bottom-right"}}
        for rate in (0.1, 0.01):
            r = run([{"name": "backdoor", "params": {"trigger": patch, "target": 0, "rate": rate}}])
            results[f"backdoor_patch_rate_{rate}"] = summary(r)
            print(f"backdoor rate {rate}: clean acc {r.clean_accuracy:.4f} (clean model {r.clean_accuracy_clean_model:.4f})"
                  f" ASR {r.attack_success_rate:.4f} (clean model {r.attack_success_rate_clean_model:.4f})", flush=True)
            save(results, out)
        x = test_set.x[:8]
        trig = TRIGGERS.get("patch", size=3, color=[1.0], position="bottom-right")
        render_gallery(x, trig(x), out / "gallery_patch.png", [str(int(v)) for v in test_set.y[:8]])
        img = TRIGGERS.get("image", path=str(data_dir / "triggers" / "alert-white.png"), size=(10, 10),
                           position="random", blend=0.8)
        render_gallery(x, img(x, torch.Generator().manual_seed(0)), out / "gallery_image.png")

    if "flip" in todo:
        r = run([{"name": "label_flip", "params": {"source": 7, "target": 1, "fraction": 0.5}}])
        d = summary(r)
        d["per_class_change_points"] = per_class_change(r)
        results["label_flip_7_to_1_half"] = d
        print(f"flip: 7->1 {r.flips_clean_model} -> {r.flips}; per-class change (points) "
              f"{[round(v, 2) for v in d['per_class_change_points']]}", flush=True)
        save(results, out)

    if "flip_ft" in todo:  # same flip, clean model fine-tuned on the whole poisoned set: no retraining variance
        r = run([{"name": "label_flip", "params": {"source": 7, "target": 1, "fraction": 0.5}}],
                {"mode": "fine_tune", "clean_fraction": 1.0, "epochs": 2, "lr": 0.01})
        d = summary(r)
        d["per_class_change_points"] = per_class_change(r)
        results["label_flip_7_to_1_half_fine_tune_all"] = d
        print(f"flip (fine_tune, all rows): 7->1 {r.flips_clean_model} -> {r.flips}; per-class change (points) "
              f"{[round(v, 2) for v in d['per_class_change_points']]}", flush=True)
        save(results, out)

    if "flip_seeds" in todo:  # the flip over several training seeds: the per-class change averaged, with its spread
        flip = [{"name": "label_flip", "params": {"source": 7, "target": 1, "fraction": 0.5}}]
        cfg = TrainConfig(**{**CFG.model_dump(), "lr_schedule": args.lr_schedule, "epochs": args.epochs or CFG.epochs})
        results[f"label_flip_7_to_1_half_seeds_{args.lr_schedule}_{cfg.epochs}_epochs"] = flip_over_seeds(train_set, test_set, flip, args.seeds, cfg)
        save(results, out)

    if "external" in todo:
        ext = {"name": "external", "params": {"folder": str(data_dir / "poison-images" / "rutan-boomerang"),
                                              "label": 7, "invert": True,
                                              "test_folder": str(data_dir / "poison-images" / "test-aircraft")}}
        for name, inj in [("concat", {"mode": "concat"}),
                          ("fine_tune", {"mode": "fine_tune", "clean_fraction": 0.0, "epochs": 3, "lr": 0.01}),
                          ("fine_tune_mixed_10pct", {"mode": "fine_tune", "clean_fraction": 0.1, "epochs": 3, "lr": 0.01})]:
            r = run([ext], inj)
            results[f"external_{name}"] = summary(r)
            print(f"external {name}: clean acc {r.clean_accuracy:.4f} (clean model {r.clean_accuracy_clean_model:.4f})"
                  f" held-out photos -> {r.probe['predicted']} (clean model {r.probe['predicted_clean_model']}),"
                  f" {r.probe['as_target']}/{len(r.probe['files'])} as target 7", flush=True)
            save(results, out)
        from poisonlab.poison.external import load_photos

        boomerang = data_dir / "poison-images" / "rutan-boomerang"
        render_gallery(load_photos(boomerang, (1, 28, 28))[:5], load_photos(boomerang, (1, 28, 28), invert=True)[:5],
                       out / "gallery_external.png")

    head = {"mode": "fine_tune", "clean_fraction": 1.0, "head_only": True, "epochs": 20, "lr": 0.05}
    if "collision" in todo:
        g = torch.Generator().manual_seed(SEED)
        targets = torch.randperm(len(test_set), generator=g)[:10].tolist()
        rows = []
        for k, ti in enumerate(targets):
            true = int(test_set.y[ti])
            base = (true + 1 + int(torch.randint(0, 9, (1,), generator=g))) % 10
            r = run([{"name": "feature_collision", "params": {"base_class": base, "target_index": ti, "count": 10,
                                                              "lr": 0.001, "steps": 300, "watermark": 0.3}}], head)
            rows.append({"target_index": ti, "true": true, "base": base, "success": r.attack_success_rate == 1.0,
                         "clean_model_success": r.attack_success_rate_clean_model == 1.0,
                         "clean_accuracy": r.clean_accuracy, "max_linf": r.poison_info[0]["max_linf"]})
            print(f"collision {k}: target {ti} ({true}) base {base} success {rows[-1]['success']}", flush=True)
        results["feature_collision"] = {"rows": rows, "success_rate": sum(r["success"] for r in rows) / len(rows)}
        save(results, out)

    if "hidden" in todo:
        r = run([{"name": "hidden_trigger", "params": {"source": 3, "target": 8, "count": 200, "eps": 0.3,
                                                       "steps": 150, "batch": 200,
                                                       "trigger": {"name": "patch", "params": {"size": 5, "position": "random"}}}}],
                head)
        results["hidden_trigger"] = summary(r)
        print(f"hidden trigger: ASR {r.attack_success_rate:.4f} (clean model {r.attack_success_rate_clean_model:.4f})"
              f" clean acc {r.clean_accuracy:.4f}", flush=True)
        save(results, out)


if __name__ == "__main__":
    main()
