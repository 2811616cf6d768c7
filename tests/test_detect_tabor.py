"""TABOR: its regularisers and trigger-quality metric by hand; on a digits backdoor the target is the one
label flagged, a clean model has none; bad parameters refused."""

import math

import pytest
import torch
from torch import nn

from inspect_support import digits_pair
from poisonlab.detect import get
from poisonlab.detect.tabor import elastic, total_variation, trigger_quality
from poisonlab.errors import ConfigError
from test_detect_common import TARGET, single_thread  # noqa: F401 (autouse)

# 300 steps on 200 clean digits. Threshold 3, not the paper's 2: measured anomaly indices of the clean digits
# cnn's labels reach 2.1-2.2 (label 2; the quality metrics of a clean model sit within 0.5 log units, a tight
# MAD), the backdoored cnn's target 10.0 (Neural Cleanse's mask-L1 test: 2.1)
TABOR = {"steps": 300, "batch_size": 24, "samples": 200, "threshold": 3.0}


def test_regularisers_by_hand():
    m = torch.tensor([[[[1.0, 0.0], [0.5, 0.0]]]])      # one label, a 2x2 mask
    # vertical pairs: (1, .5), (0, 0) -> .25; horizontal: (1, 0), (.5, 0) -> 1 + .25
    assert total_variation(m).tolist() == [1.5]
    assert elastic(m).tolist() == [1.5 + 1.25]           # |m|_1 + |m|_2^2
    p = torch.ones(1, 1, 2, 2)
    # outside the mask, (1 - m) p = [[0, 1], [.5, 1]]: |.|_1 = 2.5, |.|_2^2 = 2.25
    det = get("tabor", weights=(1.0, 10.0, 100.0, 1000.0, 0.0, 0.0))
    got = det.regulariser(None, torch.zeros(3, 1, 2, 2), m, p)
    # tv(outside): vertical (0, .5), (1, 1) -> .25; horizontal (0, 1), (.5, 1) -> 1 + .25
    assert got.tolist() == [pytest.approx(2.75 + 10 * 4.75 + 100 * 1.5 + 1000 * 1.5)]


def test_overlaying_term_is_the_trigger_alone_classified_as_its_label():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()                          # logits 0, 0: CE = log 2 for either label
    m, p = torch.ones(2, 1, 2, 2) * 0.5, torch.ones(2, 1, 2, 2)
    only = get("tabor", weights=(0, 0, 0, 0, 0, 1.0)).regulariser(model, torch.zeros(1, 1, 2, 2), m, p)
    assert only.tolist() == [pytest.approx(math.log(2))] * 2


def test_trigger_quality_by_hand():
    # l1 = 4 on a 4x4 image (16 pixels), tv = 6 over 2*16 - 8 = 24 pairs, acc_att = 1, acc_crop = .5
    a = trigger_quality(torch.tensor([4.0]), torch.tensor([6.0]), torch.tensor([1.0]), torch.tensor([0.5]), 4, 4, 1e-12)
    assert float(a) == pytest.approx(math.log(4 / 16) + math.log(6 / 24) - 0.0 - math.log(0.5))


def test_finds_the_digits_backdoor_target_and_passes_a_clean_model():
    clean, _, bad, good = digits_pair()
    before = [p.clone() for p in bad.parameters()]
    det_bad = get("tabor", **TABOR).scan(model=bad, clean=clean)
    det_good = get("tabor", **TABOR).scan(model=good, clean=clean)
    assert det_bad.details["flagged_labels"] == [TARGET]
    assert int(torch.argmin(torch.tensor(det_bad.details["quality"]))) == TARGET
    assert det_good.details["flagged_labels"] == []
    assert det_bad.details["acc_att"][TARGET] > 0.95                 # the reversed trigger works
    mask = det_bad.details["masks"][TARGET, 0]
    assert mask[6:, 6:].mean() > 4 * mask.mean()                      # and sits on the planted corner
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))


def test_bad_parameters():
    with pytest.raises(ConfigError, match="weights="):
        get("tabor", weights=(1, 2, 3))
    with pytest.raises(ConfigError, match="weights="):
        get("tabor", weights=(1, 2, 3, 4, 5, -1))
    with pytest.raises(ConfigError, match="steps=0"):
        get("tabor", steps=0)
