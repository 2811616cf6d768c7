"""deepsight (from updates): NEUPs and threshold exceedings by hand, a homogeneous-energy cluster
rejected, fuzzed rounds."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get
from poisonlab.fl.aggregators.deepsight import neups
from tests.detector_support import fuzz_rounds


def test_neups_and_threshold_exceedings_by_hand():
    # 2 classes, 1 feature: layout [W00, W10, b0, b1]; energies e = (|W00| + |b0|, |W10| + |b1|)
    layer = torch.tensor([[1.0, -1.0, 1.0, 0.0], [3.0, 0.0, -1.0, 0.0]])
    c, te = neups(layer, classes=2, features=1)
    # row 0: e = (2, 1) -> c = (4/5, 1/5); threshold 0.5 * 4/5 = 0.4 -> TE 1
    # row 1: e = (4, 0) -> c = (1, 0) -> TE 1
    torch.testing.assert_close(c, torch.tensor([[0.8, 0.2], [1.0, 0.0]], dtype=torch.float64))
    assert te.tolist() == [1, 1]
    c, te = neups(torch.tensor([[1.0, 1.0, 1.0, 1.0]]), classes=2, features=1)
    assert te.tolist() == [2]  # equal energies: c = (1/2, 1/2), both above 0.5 * 1/2


def backdoor_round(k: int = 10, classes: int = 10, features: int = 4):
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(k, 100, generator=g)  # honest: energy spread over every output neuron
    width = classes * (features + 1)
    for i in range(3):  # backdoor: the output-layer energy on one label
        layer = torch.zeros(width)
        layer[:features] = 1.0
        layer[classes * features] = 1.0
        x[i, -width:] = layer + 0.01 * torch.randn(width, generator=g)
    return x


def test_a_cluster_of_low_threshold_exceedings_is_rejected_and_the_rest_clipped():
    x = backdoor_round()
    out = get("deepsight", classes=10, features=4)(x, torch.ones(10))
    assert out.selected.tolist() == [False] * 3 + [True] * 7
    assert out.scores.tolist() == [1.0] * 3 + [0.0] * 7
    norms = x.norm(dim=1)
    factors = norms.quantile(0.5) / norms  # median of an even count: the mean of the middle two
    want = (x[3:] * factors[3:, None].clamp_max(1)).mean(0)
    torch.testing.assert_close(out.update, want)


def test_an_output_layer_larger_than_the_update_is_one_line():
    with pytest.raises(ConfigError, match=r"^deepsight: classes=10, features=4 need an output layer of 50"
                                          r" coordinates; the updates have d=20$"):
        get("deepsight", classes=10, features=4)(torch.ones(4, 20), torch.ones(4))


def test_fuzzed_rounds():
    fuzz_rounds("deepsight", {"classes": 1}, rounds=2)
