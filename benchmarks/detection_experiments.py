"""The detection must-show on real MNIST: seeded 8,000/2,000 split of the MNIST test set, cnn,
BadNets 3x3 white patch (bottom-right) on 10% of the training set, all-to-one target 0.

Run: ``.venv/bin/python benchmarks/detection_experiments.py --out runs/detection`` (from /work/main).
Writes results.json, figures (PNG) and model checkpoints (safetensors) under --out; a second run
reuses the checkpoints. Prints every figure it measures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from poisonlab.data import load
from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection, tpr_at_fpr
from poisonlab.detect.mitigation import fine_prune, prune_trigger_neurons, retrain_without, unlearn

from poisonlab.metrics import attack_success_rate
from poisonlab.model_checkpoint import load_checkpoint, save_checkpoint
from poisonlab.models import make_model
from poisonlab.poison.backdoor import Backdoor
from poisonlab.report.plots import detection as detection_png
from poisonlab.rundir import atomic_write_bytes
from poisonlab.training import TrainConfig, evaluate, predict, train

SEED = 0
TARGET = 0


def plot_detection(det, truth, path: Path, title: str) -> Path:
    """The score histogram and ROC figure of one detection, written to path."""
    return atomic_write_bytes(path, detection_png(det.scores.numpy(), det.flagged.numpy(), truth.numpy(), title))
TRIGGER = {"name": "patch", "params": {"size": 3, "color": [1.0], "position": "bottom-right"}}
CFG = TrainConfig(epochs=5, batch_size=64, lr=0.05, momentum=0.9)
NC_PARAMS = {"steps": 800, "batch_size": 32}  # the defaults, spelled out


def setup(data_dir: str):
    """(clean train, poisoned Poisoned, test, attack) for the must-show."""
    data = load("mnist", data_dir=data_dir, part="test")
    train_set, test_set = data.split(0.2, seed=SEED)
    attack = Backdoor(trigger=TRIGGER, target=TARGET, rate=0.1)
    return train_set, attack.apply(train_set, seed=SEED), test_set, attack


def trained(out: Path, tag: str, data, seed: int = SEED):
    """A cnn trained on data, cached as a safetensors checkpoint under out."""
    path = out / f"{tag}.safetensors"
    if path.exists():
        return load_checkpoint(path)
    model = make_model("cnn", data.input_shape, data.num_classes, seed=seed)
    t = time.time()
    train(model, data, CFG, seed=seed)
    print(f"trained {tag} in {time.time() - t:.0f}s")
    save_checkpoint(model, path, "cnn", data.input_shape, data.num_classes)
    return model


def clean_and_asr(model, test_set, attack) -> dict:
    """Clean accuracy and attack success rate on the test split."""
    trig = attack.triggered(test_set, seed=SEED)
    return {"clean_accuracy": evaluate(model, test_set).accuracy,
            "asr": attack_success_rate(predict(model, trig.x), test_set.y, TARGET)}


DATA_RUNS = (("activation_clustering", {"orient": True}), ("activation_clustering", {}),
             ("spectral_signatures", {"orient": True}), ("spectral_signatures", {}),
             ("spectral_signatures", {"epsilon": 0.5}))


def data_detectors(poisoned, model, out: Path) -> tuple[dict, dict]:
    """Activation clustering and spectral signatures (paper rule and orient extension) on the poisoned train set."""
    results, detections = {}, {}
    for name, params in DATA_RUNS:
        key = name + "".join(f" {k}={v}" for k, v in params.items())
        t = time.time()
        det = get(name, **params).scan(data=poisoned.data, model=model)
        ev = evaluate_detection(det, poisoned.mask)
        tpr5, fpr5 = tpr_at_fpr(det.scores, poisoned.mask, 0.05)
        results[key] = {"params": params, **ev.as_dict(), "roc_tpr_at_fpr_le_0.05": tpr5, "roc_fpr": fpr5,
                        "seconds": time.time() - t, "details": det.details}
        detections[key] = det
        plot_detection(det, poisoned.mask, out / (key.replace(" ", "_").replace("=", "-") + ".png"), key)
        print(f"{key}: flags TPR {ev.tpr:.4f} FPR {ev.fpr:.4f} (flagged {det.num_flagged}) AUROC {ev.auroc:.4f}"
              f" | ROC: TPR {tpr5:.4f} at FPR {fpr5:.4f}")
    return results, detections


def strip_experiment(bad, test_set, attack, out: Path) -> dict:
    """STRIP on the test split: half the clean test inputs are the held-out pool; the rest clean + triggered."""
    perm = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(SEED))
    pool, held = test_set.subset(perm[:1000]), test_set.subset(perm[1000:])
    trig = attack.triggered(held, seed=SEED).subset(held.y != TARGET)
    x = torch.cat([held.x, trig.x])
    truth = torch.cat([torch.zeros(len(held), dtype=torch.bool), torch.ones(len(trig), dtype=torch.bool)])
    det = get("strip").scan(data=x, model=bad, clean=pool)
    ev = evaluate_detection(det, truth)
    plot_detection(det, truth, out / "strip.png", "STRIP: -mean entropy on the test split")
    res = {"false_rejection": ev.fpr, "false_acceptance": 1 - ev.tpr, "auroc": ev.auroc,
           "boundary": det.details["boundary"], "clean_n": len(held), "triggered_n": len(trig)}
    print(f"STRIP: FRR {ev.fpr:.4f} FAR {1 - ev.tpr:.4f} AUROC {ev.auroc:.4f} boundary {res['boundary']:.4f}")
    return res


def neural_cleanse_experiment(models: dict, test_set) -> dict:
    """Neural Cleanse on the backdoored and the clean model, clean sample from the test split."""
    res = {}
    for tag, model in models.items():
        t = time.time()
        det = get("neural_cleanse", **NC_PARAMS).scan(model=model, clean=test_set)
        res[tag] = {"flagged_labels": det.details["flagged_labels"], "anomaly_index": det.scores.tolist(),
                    "mask_l1": det.details["mask_l1"], "seconds": time.time() - t}
        print(f"Neural Cleanse on {tag}: flagged {det.details['flagged_labels']},"
              f" index {[round(v, 2) for v in det.scores.tolist()]}, L1 {[round(v, 1) for v in det.details['mask_l1']]}")
        res[tag]["_det"] = det
    return res


def nc_mitigation(bad, det, poisoned, test_set, attack) -> dict:
    """Neural Cleanse unlearning and pruning with the reversed trigger of the flagged label; fine-pruning.

    The defender's clean sample: 1,000 clean training samples (the paper assumes a small clean set).
    """
    clean = poisoned.clean.subset(torch.arange(1000))
    res = {"before": clean_and_asr(bad, test_set, attack)}
    if det.details["flagged_labels"]:
        label = det.details["flagged_labels"][0]
        mask, pattern = det.details["masks"][label], det.details["patterns"][label]
        res["unlearn"] = clean_and_asr(unlearn(bad, clean, mask, pattern), test_set, attack)
        for fraction in (0.1, 0.3):
            res[f"prune_{fraction}"] = clean_and_asr(prune_trigger_neurons(bad, clean, mask, pattern, fraction),
                                                     test_set, attack)
    res["fine_prune_0.5"] = clean_and_asr(fine_prune(bad, clean, 0.5), test_set, attack)
    print("Neural Cleanse / fine-pruning mitigation:", res)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/work/shared/data/mnist")
    parser.add_argument("--out", default="runs/detection")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_set, poisoned, test_set, attack = setup(args.data_dir)
    print(f"train {len(train_set)}, test {len(test_set)}, poisoned {poisoned.count}")
    bad = trained(out, "backdoored", poisoned.data)
    good = trained(out, "clean", train_set)
    results = {"backdoored": clean_and_asr(bad, test_set, attack), "clean": clean_and_asr(good, test_set, attack)}
    print(results)
    results["data_detectors"], dets = data_detectors(poisoned, bad, out)
    results["strip"] = strip_experiment(bad, test_set, attack, out)
    nc = neural_cleanse_experiment({"backdoored": bad, "clean": good}, test_set)
    det = nc["backdoored"].pop("_det")
    nc["clean"].pop("_det")
    results["neural_cleanse"] = nc
    results["nc_mitigation"] = nc_mitigation(bad, det, poisoned, test_set, attack)
    flagged = dets["spectral_signatures orient=True"].flagged
    retrained = retrain_without(poisoned.data, flagged, "cnn", CFG, seed=SEED)
    results["retrain_without_spectral"] = {"removed": int(flagged.sum()), **clean_and_asr(retrained, test_set, attack)}
    print("retrained without spectral flags:", results["retrain_without_spectral"])
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=1, default=float).encode())


if __name__ == "__main__":
    main()
