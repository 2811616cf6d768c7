"""BEATRIX: Gram features, MAD bounds and deviations by hand, triggered inputs flagged on a backdoored cnn."""

import math

import pytest
import torch

from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.beatrix import bounds, deviations, fold_threshold, gram_features
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
    assert ev.auroc > 0.95 and ev.tpr >= 0.9 and ev.fpr <= 0.12  # measured: 1.0, 1.0 at 0.045
    assert det.details["unscored"] == 0 and set(det.details["thresholds"]) == {0, 1, 2, 3}
    again = detector.scan(data=x[:4], model=bad, clean=clean).scores  # fitted once (a batch of 4 rounds differently)
    assert torch.allclose(again, det.scores[:4], rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))


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
