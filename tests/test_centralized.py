"""The centralized pipeline (clean baseline vs poisoned model, concat vs fine_tune) and 'poisonlab poison'."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from poisonlab.centralized import run_centralized
from poisonlab.errors import ConfigError
from poisonlab.poison.injection import Injection, fine_tune_set
from poisonlab.poison.result import Poisoned

FAST = {"epochs": 4, "batch_size": 64, "lr": 0.1}


@pytest.fixture(scope="module")
def split(digits):
    return digits.split(0.2, seed=0)


def test_backdoor_concat_reports_asr_and_metrics(split):
    train_set, test_set = split
    bd = {"name": "backdoor", "params": {"trigger": {"name": "patch", "params": {"size": 2, "position": "top-left"}},
                                         "target": 0, "rate": 0.2}}
    r = run_centralized(train_set, test_set, "logistic", [bd], {"mode": "concat"}, FAST, seed=0)
    d = r.to_dict()
    json.dumps(d)  # JSON-able
    for key in ("clean_accuracy", "loss", "attack_success_rate", "per_class_accuracy", "confusion",
                "confusion_clean_model", "flips", "class_names"):
        assert key in d
    assert r.poison_count == round(0.2 * len(train_set)) and r.train_size == len(train_set)
    assert r.attack_success_rate > r.attack_success_rate_clean_model + 0.3
    cm = np.array(r.confusion)
    assert cm.sum() == len(test_set) and np.trace(cm) / cm.sum() == pytest.approx(r.clean_accuracy)


def test_targeted_flip_fine_tune_alone_vs_concat(split):
    """Fine-tuning on the flipped rows alone moves far more 7s to 1 than diluting them in retraining."""
    train_set, test_set = split
    flip = [{"name": "label_flip", "params": {"source": 7, "target": 1, "fraction": 0.5}}]
    concat = run_centralized(train_set, test_set, "logistic", flip, "concat", FAST, seed=0)
    tuned = run_centralized(train_set, test_set, "logistic", flip, {"mode": "fine_tune", "epochs": 3, "lr": 0.1},
                            FAST, seed=0, clean_model=concat.clean_model)
    assert set(concat.flips) == {"7->1"}
    assert tuned.flips["7->1"] > concat.flips["7->1"] >= concat.flips_clean_model["7->1"]
    assert tuned.clean_accuracy_clean_model == concat.clean_accuracy_clean_model  # same reused baseline


def test_fine_tune_set_mixes_clean_fraction(digits):
    mask = torch.zeros(len(digits), dtype=torch.bool)
    mask[:10] = True
    p = Poisoned(digits, mask)
    assert len(fine_tune_set(p, 0.0, 0)) == 10
    assert len(fine_tune_set(p, 0.5, 0)) == 10 + round(0.5 * (len(digits) - 10))
    with pytest.raises(ConfigError, match="injection mode 'finetune'"):
        Injection.from_spec({"mode": "finetune"})
    with pytest.raises(ConfigError, match="clean_frac"):
        Injection.from_spec({"mode": "fine_tune", "clean_frac": 0.1})


def test_poison_command_writes_npz_mask_and_manifest(tmp_path):
    from poisonlab.commands import poison_cmd
    from poisonlab.hashing import sample_hashes
    from poisonlab.data import load

    parser = argparse.ArgumentParser()
    poison_cmd.add_arguments(parser)
    out = tmp_path / "flip.npz"
    args = parser.parse_args(["--dataset", "digits", "--attack", "label_flip", "--seed", "3",
                              "--params", '{"source": 7, "target": 1, "fraction": 0.5}', "--out", str(out)])
    assert poison_cmd.run(args) == 0
    z = np.load(out)
    clean = load("digits")
    assert z["mask"].sum() == round(0.5 * int((clean.y == 7).sum()))
    assert np.all(z["y"][z["mask"]] == 1) and np.all(clean.y.numpy()[z["mask"]] == 7)
    manifest = json.loads((tmp_path / "flip.npz.manifest.json").read_text())
    assert manifest["n"] == len(clean) and len(manifest["samples"]) == len(clean)
    same = sample_hashes(clean.x.numpy(), clean.y.numpy())
    changed = [a["sha256"] != b for a, b in zip(manifest["samples"], same)]
    assert changed == z["mask"].tolist()  # exactly the flipped samples' hashes differ
    bad = parser.parse_args(["--dataset", "digits", "--attack", "label_flip", "--params", "[1]", "--out", str(out)])
    with pytest.raises(ConfigError, match="JSON object"):
        poison_cmd.run(bad)
