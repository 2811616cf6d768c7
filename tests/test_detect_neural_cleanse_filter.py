"""Neural Cleanse input filtering: the trigger's neurons by hand, triggered inputs refused at a clean FPR."""

import pytest
import torch
from torch import nn

from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.neural_cleanse_filter import trigger_neurons
from poisonlab.errors import ConfigError
from test_detect_common import TARGET, backdoor_world, one_thread, single_thread, stamp  # noqa: F401 (autouse)

NC = {"steps": 150, "batch_size": 24, "samples": 200, "threshold": 1.0}  # as tests/test_detect_neural_cleanse.py


def test_trigger_neurons_by_hand():
    # features = ReLU(W x) with x of 4 pixels; unit 2 reads pixel 3 (the trigger pixel), unit 0 pixel 0
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 2]]))
    x = torch.tensor([[[[0.5, 0.5], [0.5, 0.0]]]]).repeat(3, 1, 1, 1)
    mask = torch.tensor([[[0.0, 0], [0, 1]]])
    pattern = torch.ones(1, 2, 2)
    # stamped: pixel 3 -> 1, so unit 2 rises by 2, units 0 and 1 by 0
    assert trigger_neurons(model, x, mask, pattern, 1).tolist() == [2]


def test_triggered_inputs_are_flagged_at_the_clean_fpr():
    _, _, test, bad, good = backdoor_world()
    clean, held = test.subset(torch.arange(200)), test.subset(torch.arange(200, 400))
    keep = held.y != TARGET
    x = torch.cat([held.x, stamp(held.x[keep])])
    truth = torch.cat([torch.zeros(len(held), dtype=torch.bool), torch.ones(int(keep.sum()), dtype=torch.bool)])
    before = [p.clone() for p in bad.parameters()]
    # the label as Neural Cleanse names it on the full test set (tests/test_detect_neural_cleanse.py); this 200-row
    # clean set is too small for the MAD test on 4 labels to be reliable, so the filter is given it
    f = get("neural_cleanse_filter", fpr=0.05, label=TARGET, **NC)
    det = f.scan(data=x, model=bad, clean=clean)
    assert det.details["label"] == TARGET
    ev = evaluate_detection(det, truth)
    assert ev.auroc > 0.9 and ev.tpr >= 0.5 and ev.fpr <= 0.12  # measured: 0.954, 0.62 at 0.07
    assert f.scan(data=x[:5], model=bad, clean=clean).scores.tolist() == det.scores[:5].tolist()  # fitted once
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))
    nothing = get("neural_cleanse_filter", steps=2, samples=20, threshold=100.0).scan(data=x, model=bad, clean=clean)
    assert nothing.details["label"] is None and nothing.num_flagged == 0  # no label is an outlier: nothing filtered


def test_bad_parameters():
    with pytest.raises(ConfigError, match="top_fraction=0"):
        get("neural_cleanse_filter", top_fraction=0)
    with pytest.raises(ConfigError, match="min_neurons=0"):
        get("neural_cleanse_filter", min_neurons=0)
    with pytest.raises(ConfigError, match="fpr=1"):
        get("neural_cleanse_filter", fpr=1)
    with pytest.raises(ConfigError, match="steps=0"):
        get("neural_cleanse_filter", steps=0)
