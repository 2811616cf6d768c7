"""Metrics computed by hand on tiny inputs; AUROC against scikit-learn on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from poisonlab.metrics import (accuracy, attack_success_rate, auroc, confusion_matrix, detection_scores, flip_count,
                               per_class_accuracy)
from poisonlab.rng import generator

Y = torch.tensor([0, 0, 1, 1, 1, 2])
P = torch.tensor([0, 1, 1, 1, 2, 2])


def test_accuracy_confusion_per_class_by_hand():
    assert accuracy(P, Y) == pytest.approx(4 / 6)
    assert confusion_matrix(P, Y, 3).tolist() == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert per_class_accuracy(P, Y, 3).tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    # a class with no samples has nan recall; an empty set has nan accuracy
    assert math.isnan(per_class_accuracy(P, Y, 4)[3])
    assert math.isnan(accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)))


def test_attack_success_rate_excludes_target_class():
    y = torch.tensor([0, 1, 2, 2, 3])
    pred = torch.tensor([2, 2, 2, 0, 1])  # target 2: the two true-2 samples do not count
    assert attack_success_rate(pred, y, target=2) == pytest.approx(2 / 3)
    assert attack_success_rate(torch.tensor([2, 2]), torch.tensor([2, 2]), 2) != attack_success_rate(
        torch.tensor([2, 2]), torch.tensor([2, 2]), 2)  # nan: no eligible input


def test_flip_count():
    y = torch.tensor([7, 7, 7, 1, 7])
    pred = torch.tensor([1, 7, 1, 1, 2])
    assert flip_count(pred, y, 7, 1) == 2 and flip_count(pred, y, 1, 7) == 0 and flip_count(pred, y, 7, 2) == 1


def test_detection_scores_by_hand():
    flagged = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)
    truth = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.bool)
    s = detection_scores(flagged, truth, scores=torch.tensor([0.9, 0.8, 0.1, 0.2, 0.7, 0.3]))
    assert (s.tp, s.fp, s.tn, s.fn) == (2, 1, 2, 1)
    assert s.tpr == pytest.approx(2 / 3) and s.fpr == pytest.approx(1 / 3)
    assert s.precision == pytest.approx(2 / 3) and s.f1 == pytest.approx(2 / 3)
    # positives scored 0.9, 0.1, 0.7; negatives 0.8, 0.2, 0.3: pairs won = 3 + 0 + 2 = 5 of 9
    assert s.auroc == pytest.approx(5 / 9)
    assert set(s.as_dict()) >= {"tpr", "fpr", "auroc"}
    none_true = detection_scores(flagged, torch.zeros(6, dtype=torch.bool))
    assert math.isnan(none_true.recall) and none_true.precision == 0.0 and none_true.fpr == 0.5


def test_auroc_ties_and_edge_cases():
    # one tie between a positive and a negative counts 1/2
    assert auroc(torch.tensor([1.0, 0.5, 0.5]), torch.tensor([1, 1, 0])) == pytest.approx(0.75)
    assert auroc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0
    assert auroc(torch.tensor([0.9, 0.1]), torch.tensor([0, 1])) == 0.0
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])))


def test_non_finite_scores_keep_their_order():
    # NaN ranks below everything (below -inf); +-inf are the extremes; scikit-learn never sees them
    t = torch.tensor([1, 0, 1, 0])
    assert auroc(torch.tensor([float("inf"), 5.0, float("nan"), float("-inf")]), t) == 0.5  # pos: top, bottom
    assert auroc(torch.tensor([float("-inf"), float("nan")]), torch.tensor([1, 0])) == 1.0  # NaN below -inf
    assert auroc(torch.tensor([float("-inf"), float("nan"), 1.0, 0.0]), t) == 0.75  # -inf loses only to 0.0
    assert auroc(torch.tensor([float("nan"), float("nan"), 1.0, 1.0]), t) == 0.5  # ties count 1/2


def test_roc_curve_points_and_one_class():
    from poisonlab.metrics import roc_curve

    fpr, tpr = roc_curve(torch.tensor([0.9, 0.8, 0.8, 0.1]), torch.tensor([1, 0, 1, 0]))
    assert fpr.tolist() == [0, 0, 0.5, 1] and tpr.tolist() == [0, 0.5, 1, 1]
    fpr, tpr = roc_curve(torch.tensor([0.3, 0.1]), torch.tensor([0, 0]))  # no positives: TPR stays 0
    assert fpr.tolist() == [0, 0.5, 1] and tpr.tolist() == [0, 0, 0]


@pytest.mark.parametrize("seed", range(3))
def test_auroc_matches_sklearn(seed):
    g = generator(seed, "auroc")
    truth = torch.rand(300, generator=g) < 0.3
    scores = torch.randn(300, generator=g) + truth.float()
    scores = (scores * 4).round() / 4  # coarse values: many ties
    assert auroc(scores, truth) == pytest.approx(roc_auc_score(truth.numpy(), scores.numpy()), abs=1e-12)
