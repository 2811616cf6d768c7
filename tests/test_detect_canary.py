"""Canary records: every mispredicted or changed probe between two model versions is reported."""

import pytest
import torch
from torch import nn

from poisonlab.detect import get
from poisonlab.errors import DataError
from test_detect_common import single_thread  # noqa: F401 (autouse: torch on one thread)


def linear(weight):
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(weight))
        model[0].bias.zero_()
    return model


def test_reports_every_change_between_versions():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    v1 = linear([[1.0, 0.0], [0.0, 1.0]])  # predicts argmax coordinate: all correct
    v2 = linear([[0.0, 1.0], [1.0, 0.0]])  # swapped: all wrong
    probes = get("canary", x=x, y=y, ids=["a", "b", "c"])
    ok = probes.scan(model=v1)
    assert ok.details["passed"] and ok.num_flagged == 0
    assert float(ok.scores[0]) == pytest.approx(1 - torch.softmax(torch.tensor([1.0, 0.0]), 0)[0].item())
    bad = probes.scan(model=v2, clean=v1)
    assert [c["id"] for c in bad.details["changes"]] == ["a", "b", "c"]
    assert bad.details["changes"][0] == {"id": "a", "expected": 0, "predicted": 1, "before": 0}


def test_mismatched_probes():
    with pytest.raises(DataError, match="as many expected labels"):
        get("canary", x=torch.zeros(3, 2), y=torch.zeros(2))
