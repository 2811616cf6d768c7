"""Shared constructed data for the detector tests, and tests of detect.base (Detection, evaluation, ROC).

``backdoor_world()`` builds 8x8 synthetic images where the answer is known: class k is a bright
horizontal bar in row 2k (plus noise); a backdoor stamps a 2x2 white patch in the bottom-right
corner on 10% of the training samples of classes 1..3 and relabels them 0. A small cnn trained
on it (seeded, a few seconds) learns the task and the backdoor.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import pytest
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, evaluate_detection, flag_top_fraction, tpr_at_fpr
from poisonlab.metrics import roc_curve
from poisonlab.errors import DataError
from poisonlab.models import make_model
from poisonlab.rng import generator
from poisonlab.training import TrainConfig, train

TARGET = 0


def bars(n: int, seed: int, classes: int = 4) -> Dataset:
    """n noisy 1x8x8 images; class k has a bright bar in row 2k (some columns dropped at random)."""
    g = generator(seed, "bars")
    y = torch.randint(classes, (n,), generator=g)
    x = 0.15 * torch.rand(n, 1, 8, 8, generator=g)
    keep = (torch.rand(n, 8, generator=g) > 0.25).float()
    x[torch.arange(n), 0, 2 * y, :] = 0.6 + 0.4 * keep
    return Dataset(x.clamp(0, 1), y, tuple(str(i) for i in range(classes)), "bars")


def stamp(x: torch.Tensor) -> torch.Tensor:
    """A copy of x with a 2x2 white patch in the bottom-right corner."""
    x = x.clone()
    x[..., 6:, 6:] = 1.0
    return x


def poison(data: Dataset, rate: float, seed: int) -> tuple[Dataset, torch.Tensor]:
    """(poisoned dataset, mask): a rate share of the non-target samples stamped and relabeled TARGET."""
    candidates = torch.nonzero(data.y != TARGET).flatten()
    pick = candidates[torch.randperm(len(candidates), generator=generator(seed, "poison"))[: int(rate * len(data))]]
    mask = torch.zeros(len(data), dtype=torch.bool)
    mask[pick] = True
    x, y = data.x.clone(), data.y.clone()
    x[mask] = stamp(x[mask])
    y[mask] = TARGET
    return data.replace(x=x, y=y), mask


@contextmanager
def one_thread():
    """Run torch on one thread inside the block (ten times faster on a loaded 2-core machine), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def single_thread():
    """Autouse in every detector test module that imports it: torch on one thread during each test."""
    with one_thread():
        yield


@lru_cache(maxsize=None)
def backdoor_world(rate: float = 0.1):
    """(poisoned train set, mask, clean test set, backdoored cnn, clean cnn), built once per session."""
    with one_thread():
        return _build_world(rate)


def _build_world(rate: float):
    train_set, test_set = bars(800, 1), bars(400, 2)
    poisoned, mask = poison(train_set, rate, 3)
    cfg = TrainConfig(epochs=8, batch_size=32, lr=0.05)
    bad = make_model("cnn", (1, 8, 8), 4, seed=0, channels=(8, 16), hidden=32)
    train(bad, poisoned, cfg, seed=0)
    good = make_model("cnn", (1, 8, 8), 4, seed=0, channels=(8, 16), hidden=32)
    train(good, train_set, cfg, seed=0)
    for m in (bad, good):
        m.requires_grad_(False)
    return poisoned, mask, test_set, bad, good


def test_world_is_backdoored():
    poisoned, _, test_set, bad, good = backdoor_world()
    from poisonlab.training import predict

    assert (predict(bad, test_set.x) == test_set.y).float().mean() > 0.95
    keep = test_set.y != TARGET
    assert (predict(bad, stamp(test_set.x[keep])) == TARGET).float().mean() > 0.95
    assert (predict(good, stamp(test_set.x[keep])) == TARGET).float().mean() < 0.2


def test_detection_validates_lengths():
    with pytest.raises(DataError, match="3 scores but 2 flags"):
        Detection(torch.zeros(3), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(DataError, match="truth mask has 2"):
        evaluate_detection(Detection(torch.zeros(3), torch.zeros(3, dtype=torch.bool)), [True, False])


def test_evaluate_detection_by_hand():
    det = Detection(torch.tensor([0.9, 0.8, 0.1, 0.7, 0.2]), torch.tensor([1, 1, 0, 1, 0], dtype=torch.bool))
    ev = evaluate_detection(det, [True, True, True, False, False])
    # tp=2 fp=1 fn=1 tn=1; AUROC: positives {.9,.8,.1} vs negatives {.7,.2}: 5 of 6 pairs ordered
    assert (ev.tp, ev.fp, ev.fn, ev.tn) == (2, 1, 1, 1)
    assert ev.tpr == pytest.approx(2 / 3) and ev.fpr == pytest.approx(0.5)
    assert ev.precision == pytest.approx(2 / 3) and ev.f1 == pytest.approx(2 / 3)
    assert ev.auroc == pytest.approx(4 / 6)


def test_roc_and_tpr_at_fpr():
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    truth = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    fpr, tpr = roc_curve(scores, truth)
    assert np.allclose(fpr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert np.allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert tpr_at_fpr(scores, truth, 0.0) == (pytest.approx(2 / 3), 0.0)
    assert tpr_at_fpr(scores, truth, 0.4) == (pytest.approx(1.0), pytest.approx(1 / 3))
    # the area under the returned curve is the Mann-Whitney AUROC
    assert np.trapezoid(tpr, fpr) == pytest.approx(evaluate_detection(Detection(scores, scores > 9), truth).auroc)


def test_flag_top_fraction_counts():
    s = torch.tensor([0.1, 0.5, 0.3, 0.9])
    assert flag_top_fraction(s, 0.5).tolist() == [False, True, False, True]
    assert flag_top_fraction(s, 0.3).sum() == 2  # ceil(1.2)
    assert flag_top_fraction(s, 0.0).sum() == 0


def test_detection_record_is_a_metrics_json_entry():
    from poisonlab.detect.base import detection_record

    det = Detection(torch.tensor([0.9, 0.1, 0.8]), torch.tensor([True, False, False]))
    rec = detection_record("x", det, [True, False, True])
    assert rec["detector"] == "x" and rec["flagged"] == [True, False, False] and rec["truth"] == [True, False, True]
    assert rec["tpr"] == 0.5 and rec["fpr"] == 0.0 and rec["precision"] == 1.0 and rec["auroc"] == 1.0
    assert detection_record("x", det)["tpr"] is None
