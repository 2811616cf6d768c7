"""BEATRIX: Gram features, MAD bounds and deviations by hand, triggered inputs flagged on a backdoored cnn."""

import math

import pytest
import torch

from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.beatrix import bounds, deviations, fold_threshold, gram_features, last_feature_map
from poisonlab.errors import ConfigError
from patch_world import patch_world, triggered_inputs
from test_detect_common import single_thread  # noqa: F401 (autouse)


def test_gram_features_by_hand():
    a = torch.tensor([[[1.0, 2.0], [0.0, 1.0]]], dtype=torch.float64)  # one sample, 2 channels x 2 positions
    # order 1: A A^T = [[5, 2], [2, 1]], upper triangle; order 2: A^2 = [[1, 4], [0, 1]], G = [[17, 4], [4, 1]], sqrt
    assert gram_features(a, 1).tolist() == [[5.0, 2.0, 0.0, 1.0]]
    assert torch.allclose(gram_features(a, 2), torch.tensor([[math.sqrt(17), 2.0, 0.0, 1.0]], dtype=torch.float64))
    neg = torch.tensor([[[-2.0]]], dtype=torch.float64)  # order 3: (-8)(-8) = 64 -> 64^(1/3) = 4
    assert float(gram_features(neg, 3)[0, 0]) == pytest.approx(4.0)


def test_bounds_and_deviation_by_hand():
    g = {1: torch.tensor([[1.0], [2.0], [3.0], [10.0]], dtype=torch.float64)}
    lo, hi = bounds(g)[1]
    assert (float(lo), float(hi)) == (-8.0, 12.0)  # median 2 (the lower middle), MAD 1: 2 -/+ 10
    # 15 is 3 above hi: 3 / 12; divided by c^2 / 2 = 0.5 (one channel) and by one order
    dev = deviations({1: torch.tensor([[15.0], [5.0]], dtype=torch.float64)}, {1: (lo, hi)}, channels=1)
    assert dev.tolist() == pytest.approx([0.5, 0.0])
    # 10 rows 0..8 and 100, 5 folds of 2: the last fold (8, 100) against rows 0..7: median 3, MAD 2 -> hi = 23;
    # 100 deviates by 77 / 23 / 0.5; every other held-out row lies inside its bounds; the 95th-percentile element
    # of the 10 sorted deviations is the largest
    rows = {1: torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 100], dtype=torch.float64).view(-1, 1)}
    assert fold_threshold(rows, 1) == pytest.approx(2 * 77 / 23)


def test_triggered_inputs_are_flagged_on_a_backdoored_cnn():
    _, _, test_set, bad = patch_world()
    clean = test_set.subset(torch.arange(200))
    x, truth = triggered_inputs(test_set)
    before = [p.clone() for p in bad.parameters()]
    detector = get("beatrix")
    det = detector.scan(data=x, model=bad, clean=clean)
    ev = evaluate_detection(det, truth)
    assert ev.auroc > 0.95 and ev.tpr >= 0.9 and ev.fpr <= 0.12  # measured: 1.0, 1.0 at 0.085
    assert det.details["unscored"] == 0 and set(det.details["thresholds"]) == {0, 1, 2, 3}
    again = detector.scan(data=x[:4], model=bad, clean=clean).scores  # fitted once (a batch of 4 rounds differently)
    assert torch.allclose(again, det.scores[:4], rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))


def test_the_default_layer_is_the_last_spatial_map():
    from torch import nn

    from poisonlab.models import make_model

    cnn = make_model("cnn", (1, 8, 8), 4, seed=0, channels=(8, 16), hidden=32)
    # conv, ReLU, pool (4x4), conv, ReLU, pool (2x2), flatten, ...: the second pool's 2x2 map is the last one
    assert last_feature_map(cnn, torch.zeros(1, 1, 8, 8)) is cnn[5]
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    assert last_feature_map(pooled, torch.zeros(1, 1, 5, 5)) is pooled[1]  # a 1x1 map is not spatial
    with pytest.raises(ConfigError, match="spatial feature map"):
        last_feature_map(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.zeros(1, 1, 2, 2))


def test_bad_parameters():
    with pytest.raises(ConfigError, match="orders=\\[0"):
        get("beatrix", orders=[0, 1])
    with pytest.raises(ConfigError, match="per_class=2"):
        get("beatrix", per_class=2)
    with pytest.raises(ConfigError, match="quantile=1"):
        get("beatrix", quantile=1)


def test_as_an_input_filter_it_refuses_triggered_inputs():
    from poisonlab.defend import get as get_defense

    _, _, test_set, bad = patch_world()
    clean = test_set.subset(torch.arange(200))
    x, truth = triggered_inputs(test_set)
    guarded = get_defense("input_filter", detector={"name": "beatrix"}).defend(model=bad, clean=clean)
    refused = guarded.reject(x)
    assert refused[truth].float().mean() >= 0.9 and refused[~truth].float().mean() <= 0.12
