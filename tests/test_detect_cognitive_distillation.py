"""Cognitive Distillation: the objective by hand, the distilled mask of a one-pixel model, poisoned training
samples and triggered inputs on a backdoored cnn."""

import pytest
import torch
from torch import nn

from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.cognitive_distillation import objective, total_variation
from poisonlab.errors import ConfigError, DataError
from patch_world import patch_world, triggered_inputs
from test_detect_common import single_thread  # noqa: F401 (autouse)

# gamma 0.1, not the paper's CIFAR-10 value 0.01: the L1 weight balances the output distance, whose scale is the
# logits'. On the 16x16 world (all 800 samples, 100 steps) the AUROC is 0.76 at 0.01, 0.82 at 0.05, 0.99 at 0.1.
FAST = {"gamma": 0.1, "steps": 50}


def summing_model(weights: list[float]) -> nn.Module:
    """1 output = weights . pixels of a 1x2x2 (or 1x3x3) image."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(len(weights), 1, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([weights]))
    return model


def test_total_variation_and_objective_by_hand():
    m = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    assert float(total_variation(m)[0]) == pytest.approx((1 + 1) / 4)  # one vertical, one horizontal jump; / c h w
    # theta = 0 -> m = 0.5; delta = 0 -> x_cd = 0.5 x; f = sum of pixels: 2 against 4 -> |2 - 4| = 2;
    # gamma ||m||_1 = 0.1 * 4 * 0.5 = 0.2; TV of a constant mask = 0
    x = torch.ones(1, 1, 2, 2)
    model = summing_model([1.0] * 4)
    loss = objective(model, x, model(x), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1), 0.1, 1.0)
    assert float(loss[0].detach()) == pytest.approx(2.2)


def test_the_mask_keeps_only_what_the_output_depends_on():
    x = torch.ones(1, 1, 3, 3)
    one_pixel = summing_model([10.0] + [0.0] * 8)
    every_pixel = summing_model([10.0 / 9] * 9)
    cd = get("cognitive_distillation", steps=50, gamma=0.1, beta=0.0)
    small, large = float(cd.mask_norms(one_pixel, x, "t")[0]), float(cd.mask_norms(every_pixel, x, "t")[0])
    assert small < 2.0 < 6.0 < large  # measured: 1.00 (the one pixel kept) against 9.00


def test_poisoned_training_samples_are_flagged():
    poisoned, mask, _, bad = patch_world()
    data, truth = poisoned.subset(torch.arange(400)), mask[:400]
    before = [(p.clone(), None if p.grad is None else p.grad.clone()) for p in bad.parameters()]
    det = get("cognitive_distillation", **FAST).scan(data=data, model=bad)
    ev = evaluate_detection(det, truth)
    assert ev.auroc > 0.75 and ev.tpr >= 0.5 and ev.fpr <= 0.1  # measured: 0.87, 0.65 at 0.017
    for (value, grad), p in zip(before, bad.parameters()):  # neither the weights nor their gradients change
        assert torch.equal(value, p) and (grad is None and p.grad is None or torch.equal(grad, p.grad))


def test_triggered_inputs_are_flagged_against_the_clean_norms():
    _, _, test_set, bad = patch_world()
    clean = test_set.subset(torch.arange(100))
    x, truth = triggered_inputs(test_set, start=300)
    detector = get("cognitive_distillation_input", calibration=100, **FAST)
    det = detector.scan(data=x, model=bad, clean=clean)
    ev = evaluate_detection(det, truth)
    assert ev.auroc > 0.8 and ev.tpr >= 0.6 and ev.fpr <= 0.2  # measured: 0.91, 0.79 at 0.09
    assert det.details["mean"] == pytest.approx(float(detector.fit(bad, clean).mean()))  # the clean norms, fitted once


def test_bad_inputs():
    with pytest.raises(ConfigError, match="steps=0"):
        get("cognitive_distillation", steps=0)
    with pytest.raises(ConfigError, match="gamma=-1"):
        get("cognitive_distillation_input", gamma=-1)
    with pytest.raises(DataError, match="needs images"):
        get("cognitive_distillation").scan(data=torch.zeros(3, 4), model=summing_model([1.0] * 4))
