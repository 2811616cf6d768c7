"""NeuronInspect: the saliency heatmap and each feature (sparseness, smoothness, persistence) and their combination
by hand on tiny heatmaps; on a digits model whose target logit gains a term on the trigger's pixels (the paper's
premise built in) the target is the one label flagged and the clean model has none; the caller's model unchanged;
bad parameters refused. (On the trained digits and MNIST backdoors the premise fails: docs/backdoor-defenses.md.)"""

import math

import pytest
import torch
from torch import nn

from inspect_support import digits_pair
from poisonlab.detect import get
from poisonlab.detect.neuron_inspect import persistence, saliency, smoothness, sparseness, top_pixels
from poisonlab.errors import ConfigError, DataError
from poisonlab.training import predict
from test_detect_common import TARGET, single_thread, stamp  # noqa: F401 (autouse)

E1 = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.25]])
E2 = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.8, 0.0], [0.0, 0.0, 0.0]])


def test_saliency_is_the_largest_absolute_gradient_over_channels_scaled_to_one():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2, bias=False))       # input (1, 2 channels, 1, 3)
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1] = torch.tensor([1.0, -3.0, 0.5, 2.0, 0.5, -1.0])  # label 1: channel 0, then channel 1
    e = saliency(model, torch.rand(1, 2, 1, 3, generator=torch.Generator().manual_seed(0)), 1)
    # |grad| per channel: [1, 3, .5] and [2, .5, 1] -> max [2, 3, 1] -> (v - 1) / (3 - 1)
    assert e.shape == (1, 1, 3) and e.flatten().tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert saliency(model, torch.ones(2, 2, 1, 3), 0).abs().sum() == 0           # a flat map: all zeros


def test_sparseness_and_smoothness_by_hand():
    e = E1.unsqueeze(0)
    assert sparseness(e).tolist() == pytest.approx([1.75 / 9])
    # vertical |differences|: column 0: 1 + 0, column 1: .5 + 0, column 2: 0 + .25 -> 1.75
    # horizontal: row 0: .5 + .5, row 1: 0, row 2: 0 + .25 -> 1.25; 2*3*3 - 3 - 3 = 12 pairs
    assert smoothness(e).tolist() == pytest.approx([3.0 / 12])


def test_persistence_counts_how_often_the_top_pixels_recur():
    e = torch.stack([E1, E2])
    # top 0.2 of 9 pixels -> k = 2: E1 marks pixels 0, 1; E2 marks 0, 4
    assert top_pixels(e, 0.2).nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 4]]
    # shares: pixel 0 in 2 of 2 maps, pixels 1 and 4 in 1 of 2: the two most shared -> (1 + .5) / 2
    assert float(persistence(e, 0.2)) == pytest.approx(0.75)
    assert float(persistence(torch.stack([E1, E1, E1]), 0.2)) == 1.0
    # a flat map points nowhere: shares 2/3 (pixel 0), 1/3, 1/3
    assert float(persistence(torch.stack([E1, E2, torch.zeros(3, 3)]), 0.2)) == pytest.approx(0.5)
    ties = torch.tensor([[[0.0, 0.5, 0.5]]])
    assert top_pixels(ties, 0.2).tolist() == [[False, True, False]]                 # k = 1: the first of a tie


def test_combination_and_outlier_test_by_hand():
    det = get("neuron_inspect", weights=(1, 2, 3))
    got = det.combine(torch.tensor([0.1]), torch.tensor([0.2]), torch.tensor([0.5]))
    assert got.tolist() == pytest.approx([0.1 + 2 * 0.2 + 3 * (1 - 0.5)])
    det = get("neuron_inspect", top=0.2)
    assert det.features(torch.stack([E1, E1])) == pytest.approx((1.75 / 9, 0.25, 1.0))


class TriggerGain(nn.Module):
    """A trained model whose target logit gains ``gain`` x the sum of the 2x2 trigger corner: the paper's premise
    (the target's explanation points at the trigger on every clean image) holds by construction."""

    def __init__(self, base: nn.Module, gain: float):
        super().__init__()
        self.base, self.gain = base, gain

    def forward(self, x):
        z = self.base(x)
        bump = torch.zeros_like(z)
        bump[:, TARGET] = self.gain * x[:, :, 6:, 6:].flatten(1).sum(dim=1)
        return z + bump


def test_flags_the_target_where_the_premise_holds_and_passes_the_clean_model():
    clean, test_set, _, good = digits_pair()
    bad = TriggerGain(good, gain=10.0)
    keep = test_set.y != TARGET
    assert float((predict(bad, stamp(test_set.x[keep])) == TARGET).float().mean()) > 0.99       # a working backdoor
    # clean behaviour mostly kept (measured 0.93: some digits' bottom-right corner is not dark, and the bump is linear
    # in it; a gate such as ReLU(sum - 2) would keep every clean prediction but also silence the target's gradient on
    # clean images, which is how the premise fails on the trained backdoors)
    assert float((predict(bad, test_set.x) == predict(good, test_set.x)).float().mean()) > 0.9
    before = [p.clone() for p in bad.parameters()]
    found = get("neuron_inspect").scan(model=bad, clean=clean)
    assert found.details["flagged_labels"] == [TARGET] and float(found.scores[TARGET]) > 2
    # measured: index 9.6 (next 0.7); the target's top 4 pixels are the corner on most images (persistence 0.93, the
    # others 0.20-0.31: the cnn's own gradients reach 7 per pixel beside the bump's 10)
    pe = found.details["persistence"]
    assert pe[TARGET] > 0.9 and max(pe[:TARGET] + pe[TARGET + 1:]) < 0.5
    assert int(torch.argmin(torch.tensor(found.details["combined"]))) == TARGET
    assert bad.training and all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))
    passed = get("neuron_inspect").scan(model=good, clean=clean)
    assert passed.details["flagged_labels"] == [] and float(passed.scores.max()) < 2


def test_bad_parameters_and_inputs():
    with pytest.raises(ConfigError, match=r"weights=\(1, 2\)"):
        get("neuron_inspect", weights=(1, 2))
    with pytest.raises(ConfigError, match="weights="):
        get("neuron_inspect", weights=(0, 0, 0))
    with pytest.raises(ConfigError, match="weights="):
        get("neuron_inspect", weights=(1, math.nan, 1))
    with pytest.raises(ConfigError, match="top=0"):
        get("neuron_inspect", top=0)
    with pytest.raises(ConfigError, match="samples=1"):
        get("neuron_inspect", samples=1)
    with pytest.raises(DataError, match="clean images"):
        get("neuron_inspect").scan(model=nn.Linear(2, 2), clean=torch.zeros(5, 2))
