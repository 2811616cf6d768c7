"""STRIP: entropy and superimposition by hand, the normal-fit boundary, trojaned inputs on a backdoored model."""

from statistics import NormalDist

import math

import pytest
import torch
from torch import nn

from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.strip import entropy_bits, superimpose
from poisonlab.errors import ConfigError, DataError
from poisonlab.rng import generator
from test_detect_common import TARGET, backdoor_world, one_thread, stamp, single_thread  # noqa: F401 (autouse)


def test_entropy_in_bits_by_hand():
    assert float(entropy_bits(torch.zeros(1, 8))) == pytest.approx(3.0)  # uniform over 8 -> log2 8
    p = torch.tensor([0.5, 0.25, 0.25])
    assert float(entropy_bits(p.log().unsqueeze(0))) == pytest.approx(1.5)


def test_superimpose_add_saturates_and_blend_mixes():
    x = torch.full((1, 1, 2, 2), 0.7)
    o = torch.full((1, 3, 1, 2, 2), 0.6)
    assert torch.allclose(superimpose(x, o, "add"), torch.ones(1, 3, 1, 2, 2))
    assert torch.allclose(superimpose(x, o, "blend", 0.5), torch.full((1, 3, 1, 2, 2), 0.65))


def test_boundary_is_the_normal_quantile_at_the_frr():
    s = get("strip", frr=0.05)
    h = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    bound, mu, sigma = s.boundary(h)
    assert mu == 2.5 and sigma == pytest.approx(float(h.std()))
    assert bound == pytest.approx(2.5 + sigma * NormalDist().inv_cdf(0.05))


def trojaned_linear_model():
    """A hand-made 'backdoored' linear model on 1x4x4 images: pixel (3, 3) drives class 0 with weight 40."""
    g = generator(0, "strip-model")
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(4, 16, generator=g) * 0.7)
        model[1].bias.zero_()
        model[1].weight[:, 15] = 0.0
        model[1].weight[0, 15] = 40.0
    return model


def test_trojaned_inputs_have_low_entropy_and_are_flagged():
    g = generator(0, "strip-data")
    clean = 0.5 * torch.rand(600, 1, 4, 4, generator=g)
    clean[..., 3, 3] = 0.0  # clean images never light the trigger pixel
    trojaned = clean[400:].clone()
    trojaned[..., 3, 3] = 1.0
    pool, x = clean[:200], torch.cat([clean[200:400], trojaned])
    truth = torch.cat([torch.zeros(200, dtype=torch.bool), torch.ones(200, dtype=torch.bool)])
    det = get("strip", n_overlays=20, frr=0.05).scan(data=x, model=trojaned_linear_model(), clean=pool)
    ev = evaluate_detection(det, truth)
    assert ev.tpr == 1.0 and ev.fpr <= 0.1  # about frr of the clean inputs are rejected
    assert max(det.details["entropy"][200:]) < 0.01 < min(det.details["entropy"][:200])
    assert det.details["boundary"] == pytest.approx(
        det.details["clean_mean"] + det.details["clean_std"] * NormalDist().inv_cdf(0.05))
    assert math.isclose(-float(det.scores[0]), det.details["entropy"][0])


def test_backdoored_cnn_separates_trojaned_inputs_better_than_a_clean_cnn():
    _, _, test_set, bad, good = backdoor_world()
    pool, held = test_set.subset(torch.arange(200)), test_set.subset(torch.arange(200, 400))
    keep = held.y != TARGET
    x = torch.cat([held.x, stamp(held.x[keep])])
    truth = torch.cat([torch.zeros(len(held), dtype=torch.bool), torch.ones(int(keep.sum()), dtype=torch.bool)])
    with one_thread():
        on_bad = evaluate_detection(get("strip", n_overlays=8).scan(data=x, model=bad, clean=pool), truth).auroc
        on_good = evaluate_detection(get("strip", n_overlays=8).scan(data=x, model=good, clean=pool), truth).auroc
    assert on_bad > 0.8 > on_good


def test_bad_inputs():
    with pytest.raises(ConfigError, match="mode='mix'"):
        get("strip", mode="mix")
    _, _, test_set, bad, _ = backdoor_world()
    with pytest.raises(DataError, match="needs images"):
        get("strip").scan(data=torch.zeros(3, 64), model=bad, clean=test_set)
