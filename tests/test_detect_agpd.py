"""AGPD: activation gradients, the dispersion gap, the anomaly index and the closeness rate by hand; the target class
found and its poisons flagged on the backdoored cnn, nothing on the clean one; bad params refused; model unchanged."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab.detect import get
from poisonlab.detect.agpd import (activation_gradients, anomaly_index, best_window_start, closeness_rates,
                                   dispersion_gap, filter_class)
from poisonlab.detect.base import evaluate_detection
from poisonlab.errors import ConfigError
from test_detect_common import TARGET, backdoor_world, bars, single_thread  # noqa: F401 (autouse)


def test_activation_gradient_of_a_hidden_layer_by_hand():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    x, y = torch.tensor([[1.0, 2.0], [1.0, -3.0]]), torch.tensor([1, 0])
    g = activation_gradients(model.requires_grad_(False), x, y, ["1"])["1"]   # d logit_y / d ReLU output = W2[y]
    assert np.allclose(g, [[4.0, 5.0, 6.0], [1.0, 2.0, 3.0]])
    pre = activation_gradients(model, x, y, ["0"])["0"]                        # times relu'(h): h = (1, 2, -3), (1, -3, 2)
    assert np.allclose(pre, [[4.0, 5.0, 0.0], [1.0, 0.0, 3.0]])


def test_dispersion_gap_and_anomaly_index_by_hand():
    g, clean = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([1.0, 0.0])
    # cos to clean: 1, 0, 1/sqrt2 -> basis row 1; the others' cos to it: 0, 1/sqrt2; diffs (1, 0)
    gap, basis = dispersion_gap(g, clean)
    assert basis == 1 and gap == pytest.approx(1 / math.sqrt(3))
    # gaps (1, 2, 3, 4, 10): median 3, MAD 1
    j = anomaly_index(np.array([1.0, 2, 3, 4, 10]))
    assert np.allclose(j, [0, 0, 0, 1 / 1.4826 / (1 + 1e-6), 7 / 1.4826 / (1 + 1e-6)])


def test_closeness_rate_and_window_by_hand():
    # row (1, 1): cosine distance 1 - 1/sqrt2 to both bases -> 1/2; row on the poison mean -> 0; on the clean -> 1
    rates = closeness_rates(np.array([[1.0, 1.0], [0.0, 2.0], [3.0, 0.0]]), np.array([0.0, 1.0]), np.array([1.0, 0]))
    assert np.allclose(rates, [0.5, 0.0, 1.0])
    # windows of 2 over (5, 4, 1, 1, 3): mean + 5 std smallest at start 2
    assert best_window_start([5.0, 4.0, 1.0, 1.0, 3.0], 2) == 2


def test_filter_class_takes_the_poisoned_cluster_first():
    rng = np.random.default_rng(0)
    clean_dir, poison_dir = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.2])
    g = np.vstack([clean_dir + 0.05 * rng.standard_normal((60, 3)), poison_dir + 0.05 * rng.standard_normal((15, 3))])
    _, basis = dispersion_gap(g, clean_dir)
    flagged, info = filter_class(g, clean_dir, basis, 0.05, 10)
    # the poisons all go in round 1 (JS 0.27), then clean rows one by one (JS 0): the window starts at 1
    assert basis >= 60 and flagged[60:].all() and not flagged[:60].any() and info["start"] == 1


def test_target_class_found_on_the_backdoored_cnn_and_nothing_on_the_clean_one():
    poisoned, mask, _, bad, good = backdoor_world()
    base = bars(100, 7)
    before = [p.clone() for p in bad.parameters()]
    det = get("agpd").scan(data=poisoned, model=bad, validation=base)
    assert det.details["targets"] == [TARGET]
    ev = evaluate_detection(det, mask)
    assert ev.auroc > 0.97 and ev.tpr == 1.0 and not det.flagged[poisoned.y != TARGET].any()
    assert ev.fpr < 0.3                        # measured 0.24: the JS window stops late (docs/detection.md)
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters())) and not bad.training
    clean = get("agpd").scan(data=poisoned, model=good, validation=base)
    assert clean.details["targets"] == [] and not clean.flagged.any()


def test_bad_params_are_refused():
    for params, match in (({"tau": 1.5}, "tau"), ({"clean_per_class": 0}, "clean_per_class"), ({"window": 0}, "window"),
                          ({"layers": "conv"}, "layers"), ({"anomaly": 0}, "anomaly")):
        with pytest.raises(ConfigError, match=match):
            get("agpd", **params)
    poisoned, _, _, bad, _ = backdoor_world()
    with pytest.raises(ConfigError, match="layer 'nope' is not a module"):
        get("agpd", layers=["nope"]).scan(data=poisoned, model=bad, validation=bars(40, 7))
    with pytest.raises(ConfigError, match="validation"):
        get("agpd").scan(data=poisoned, model=bad)
