"""ABS: the stimulation analysis and the elevation ranking by hand; on a digits backdoor the reversed trigger of a
compromised neuron reaches a high REASR for the target only, a clean model has none; bad parameters refused."""

import pytest
import torch
from torch import nn

from inspect_support import digits_pair
from poisonlab.detect import get
from poisonlab.detect.abs_stimulation import elevation
from poisonlab.errors import ConfigError
from test_detect_common import TARGET, single_thread  # noqa: F401 (autouse)

# the 2x2 corner trigger is 6.25% of an 8x8 digit: the bound is 8% here (the paper's 6% is for larger images)
ABS = {"max_size": 0.08}


def test_elevation_by_hand():
    # two images, two levels, three labels; per image the peaks per label are the max over the levels
    logits = torch.tensor([[[1.0, 0.0, 0.0], [5.0, 2.0, 0.0]],      # peaks 5, 2, 0 -> label 0, gap 3
                           [[0.0, 3.0, 0.0], [4.0, 0.0, 1.0]]])     # peaks 4, 3, 1 -> label 0, gap 1
    assert elevation(logits) == (0, 1.0)
    assert elevation(logits[:, :1]) == (-1, 0.0)                  # at the first level alone the images disagree


def test_stimulation_by_hand():
    # hidden h = relu(first three pixels) = 0.5 each on the all-0.5 images; max activation 0.5, max_scale 2 ->
    # values v in 0, 0.5, 1; head logits (2 h0 + h2, 3 h1 + h2). Neuron 0 at v: (2v + .5, 2): peaks 2.5, 2 -> label
    # 0, gap .5; neuron 1: (1.5, 3v + .5): peaks 1.5, 3.5 -> label 1, gap 2; neuron 2: (1 + v, 1.5 + v): peaks 2, 2.5
    # -> label 1, gap .5
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(3, 4))
        model[3].weight.copy_(torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]]))
    labels, elevations = get("abs", levels=3, max_scale=2.0).stimulate(model, torch.full((2, 1, 2, 2), 0.5))
    assert labels.tolist() == [0, 1, 1]
    assert elevations.tolist() == pytest.approx([0.5, 2.0, 0.5])


def test_finds_the_digits_backdoor_and_passes_a_clean_model():
    clean, _, bad, good = digits_pair()
    before = [p.clone() for p in bad.parameters()]
    det_bad, det_good = get("abs", **ABS).scan(model=bad, clean=clean), get("abs", **ABS).scan(model=good, clean=clean)
    assert det_bad.details["flagged_labels"] == [TARGET] and det_bad.scores[TARGET] >= 0.95   # measured: REASR 1.0
    assert det_good.details["flagged_labels"] == [] and det_good.details["max_reasr"] < 0.6  # measured: 0.36
    assert any(c["label"] == TARGET for c in det_bad.details["candidates"])
    mask = det_bad.details["masks"][TARGET, 0]
    assert mask[6:, 6:].mean() > 4 * mask.mean()                      # the reversed trigger sits on the corner
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))


def test_bad_parameters():
    with pytest.raises(ConfigError, match="levels=1"):
        get("abs", levels=1)
    with pytest.raises(ConfigError, match="max_size=0"):
        get("abs", max_size=0)
    with pytest.raises(ConfigError, match="threshold=2"):
        get("abs", threshold=2)
