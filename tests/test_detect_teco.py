"""TeCo: corruptions and flip severities by hand, triggered inputs separated on a backdoored cnn."""

import math

import pytest
import torch
from torch import nn

from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.teco import SEVERITIES, consistency_scores, corrupt, flip_severities, gaussian_kernel
from poisonlab.errors import ConfigError, DataError
from patch_world import patch_world, triggered_inputs
from test_detect_common import single_thread  # noqa: F401 (autouse)


def mean_threshold_model(threshold: float) -> nn.Module:
    """logit_1 - logit_0 = mean(x) - threshold on 1x4x4 images."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(16), torch.full((16,), 1 / 16)]))
        model[1].bias.copy_(torch.tensor([0.0, -threshold]))
    return model


def test_corruptions_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    assert torch.allclose(corrupt(x, "contrast", 1), torch.tensor([[[[0.3, 0.7], [0.3, 0.7]]]]))  # (x - .5) 0.4 + .5
    assert torch.allclose(corrupt(x, "brightness", 2), torch.tensor([[[[0.2, 1.0], [0.2, 1.0]]]]))  # + 0.2, clipped
    flat = torch.full((1, 1, 5, 5), 0.4)
    assert torch.allclose(corrupt(flat, "gaussian_blur", 5), flat)  # a normalised kernel keeps a constant image
    assert float(gaussian_kernel(1.0).sum()) == pytest.approx(1.0) and len(gaussian_kernel(1.0)) == 7
    assert torch.equal(corrupt(flat, "gaussian_noise", 3, seed=1), corrupt(flat, "gaussian_noise", 3, seed=1))


def test_flip_severities_and_their_spread_by_hand():
    # constant 0.3 image, class 1 when the mean exceeds 0.45: brightness (+0.1, +0.2, ...) flips it at severity 2;
    # contrast and pixelate leave a constant image unchanged: never (6)
    x = torch.full((1, 1, 4, 4), 0.3)
    flips = flip_severities(mean_threshold_model(0.45), x, ("brightness", "contrast", "pixelate"))
    assert flips.tolist() == [[2.0, 6.0, 6.0]]
    assert float(consistency_scores(flips)[0]) == pytest.approx(math.sqrt(32) / 3)  # population std of 2, 6, 6


def test_a_high_frequency_trigger_is_flagged_on_a_backdoored_cnn():
    # a checkerboard patch: blur and pixelation flip a triggered input at once, noise and brightness never do
    _, _, test_set, bad = patch_world("checker")
    clean = test_set.subset(torch.arange(200))
    x, truth = triggered_inputs(test_set, trigger="checker")
    before = [p.clone() for p in bad.parameters()]
    detector = get("teco", fpr=0.05)
    det = detector.scan(data=x, model=bad, clean=clean)
    ev = evaluate_detection(det, truth)
    assert ev.auroc > 0.7 and ev.tpr >= 0.5 and ev.fpr <= 0.12  # measured: 0.808, 0.68 at 0.06
    assert det.scores[truth].mean() > det.scores[~truth].mean() + 0.4  # measured: 1.80 against 1.13
    assert detector.scan(data=x[:4], model=bad, clean=clean).flagged.tolist() == det.flagged[:4].tolist()
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))


def test_bad_inputs():
    with pytest.raises(ConfigError, match="corruptions=\\['fog'"):
        get("teco", corruptions=["fog", "jpeg"])
    with pytest.raises(ConfigError, match="at least two"):
        get("teco", corruptions=["jpeg"])
    with pytest.raises(ConfigError, match="fpr=1"):
        get("teco", fpr=1)
    model = mean_threshold_model(0.5)
    with pytest.raises(DataError, match="values in \\[0, 1\\]"):
        get("teco").scan(data=torch.full((2, 1, 4, 4), 2.0), model=model, clean=torch.zeros(3, 1, 4, 4))
    with pytest.raises(DataError, match="jpeg corruption needs 1- or 3-channel"):
        get("teco").scan(data=torch.zeros(2, 2, 4, 4), model=model, clean=torch.zeros(3, 2, 4, 4))
    assert set(SEVERITIES) >= {"gaussian_noise", "gaussian_blur", "contrast", "brightness", "jpeg"}
