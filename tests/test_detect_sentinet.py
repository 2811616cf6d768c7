"""SentiNet: Grad-CAM and the boundary curve by hand, triggered inputs flagged on a backdoored cnn."""

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.sentinet import fit_boundary, grad_cam
from poisonlab.errors import ConfigError, DataError
from patch_world import patch_world, triggered_inputs
from test_detect_common import single_thread  # noqa: F401 (autouse)


def test_grad_cam_by_hand():
    # A = 2 x (a 1x1 conv), logit_0 = sum(A): dlogit/dA = 1 everywhere, alpha = 1, cam = ReLU(A) / max
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[2].weight.copy_(torch.tensor([[1.0, 1, 1, 1], [1, -1, 0, 0]]))
    x = torch.tensor([[[[1.0, 0.0], [0.0, 0.5]]]])
    assert torch.allclose(grad_cam(model, model[0], x, torch.tensor([0])), torch.tensor([[[1.0, 0.0], [0.0, 0.5]]]))
    # label 1: alpha = mean(1, -1, 0, 0) = 0 -> an all-zero map (no division by zero)
    assert torch.equal(grad_cam(model, model[0], x, torch.tensor([1])), torch.zeros(1, 2, 2))


def test_boundary_is_the_quadratic_through_the_bin_maxima():
    conf = np.array([0.1, 0.2, 0.4, 0.5, 0.7, 0.8])
    fooled = np.array([0.0, 0.2, 0.1, 0.3, 0.6, 0.5])
    # 3 bins of 2: centres 0.15, 0.45, 0.75, maxima 0.2, 0.3, 0.6 -> the quadratic through these three points
    curve = fit_boundary(conf, fooled, 3)
    assert np.allclose(np.polyval(curve, [0.15, 0.45, 0.75]), [0.2, 0.3, 0.6])
    assert len(fit_boundary(np.array([0.5, 0.5]), np.array([0.1, 0.3]), 2)) == 1  # one distinct centre: a constant


def test_triggered_inputs_are_flagged_on_a_backdoored_cnn():
    _, _, test_set, bad = patch_world()
    clean = test_set.subset(torch.arange(200))
    x, truth = triggered_inputs(test_set)
    before = [p.clone() for p in bad.parameters()]
    detector = get("sentinet", n_targets=16, calibration=100, fpr=0.05)
    det = detector.scan(data=x, model=bad, clean=clean)
    ev = evaluate_detection(det, truth)
    assert ev.auroc > 0.9 and ev.tpr >= 0.8 and ev.fpr <= 0.1  # measured: 1.0, 1.0 at 0.025
    fooled = torch.tensor(det.details["fooled"])
    assert fooled[truth].mean() > 0.3 > fooled[~truth].mean()  # the pasted trigger fools the targets, a bar does not
    assert detector.scan(data=x[:4], model=bad, clean=clean).scores.tolist() == det.scores[:4].tolist()  # fitted once
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))


def test_bad_inputs():
    with pytest.raises(ConfigError, match="mask_threshold=0"):
        get("sentinet", mask_threshold=0)
    with pytest.raises(ConfigError, match="n_targets=0"):
        get("sentinet", n_targets=0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="no nn.Conv2d"):
        get("sentinet").scan(data=torch.zeros(2, 1, 2, 2), model=mlp, clean=torch.zeros(4, 1, 2, 2))
    with pytest.raises(DataError, match="needs images"):
        get("sentinet").scan(data=torch.zeros(3, 4), model=mlp, clean=torch.zeros(4, 1, 2, 2))
