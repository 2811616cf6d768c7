"""ANP (Wu & Wang, NeurIPS 2021): one inner perturbation step by hand on a tiny MLP, the pruning, the
caller's model untouched, bad parameters refused, and the bars patch backdoor pruned."""

import pytest
import torch
from torch import nn

from defend_support import accuracy, asr, unchanged_after, world
from poisonlab.defend import get
from poisonlab.defend.anp import perturb_step, smallest
from poisonlab.defend.neuron_masks import NeuronMasks, neuron_layers, prune
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401 (autouse)


def tiny():
    """Linear(2 -> 2) ReLU Linear(2 -> 2): the neurons are the hidden layer's two units."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        model[0].bias.copy_(torch.tensor([0.5, -0.25]))
        model[2].weight.copy_(torch.tensor([[1.0, -2.0], [-1.0, 1.0]]))
        model[2].bias.zero_()
    return model.requires_grad_(False)


def test_one_perturbation_step_by_hand():
    model, eps = tiny(), 0.4
    x, y = torch.tensor([[1.0, 0.5], [2.0, 1.0]]), torch.tensor([1, 0])
    masks = NeuronMasks(model)
    assert [n for n, _ in masks.layers] == ["0"]
    perturb_step(model, masks, x, y, eps)
    # by hand at delta = xi = 0: wx = W1 x, h = relu(wx + b1), logits = W2 h; dL/dlogits = (softmax - onehot) / n
    wx = x @ torch.tensor([[1.0, -1.0], [0.5, 2.0]]).T
    pre = wx + torch.tensor([0.5, -0.25])
    h = pre.clamp(min=0)
    w2 = torch.tensor([[1.0, -2.0], [-1.0, 1.0]])
    g = (torch.softmax(h @ w2.T, dim=1) - nn.functional.one_hot(y, 2)) / 2
    g_pre = (g @ w2) * (pre > 0)
    d_delta = (g_pre * wx).sum(0)                       # out' = (1 + delta) * wx + (1 + xi) * b1
    d_xi = (g_pre * torch.tensor([0.5, -0.25])).sum(0)
    assert torch.equal(masks.delta[0].detach(), eps * d_delta.sign())
    assert torch.equal(masks.xi[0].detach(), eps * d_xi.sign())
    assert (masks.delta[0].abs() == eps).all()        # every gradient here is non-zero
    perturb_step(model, masks, x, y, eps)               # a second step stays clipped to [-eps, eps]
    assert masks.delta[0].abs().max() <= eps and masks.xi[0].abs().max() <= eps
    masks.remove()
    assert torch.equal(model(x), tiny()(x))           # hooks off: the model computes what it did


def test_pruning_and_the_selection_rule():
    model = tiny()
    pruned = prune(model, neuron_layers(model), torch.tensor([True, False]))
    assert pruned[0].weight[0].tolist() == [0.0, 0.0] and pruned[0].bias[0] == 0.5   # the bias stays (ANP's code)
    assert model[0].weight[0].tolist() == [1.0, -1.0]
    values = torch.tensor([0.9, 0.1, 0.5, 0.15])
    assert smallest(values, 0.2, None).tolist() == [False, True, False, True]
    assert smallest(values, 0.2, 0.5).tolist() == [False, True, False, True]
    assert smallest(values, 0.2, 0.25).tolist() == [False, True, False, False]


def test_bad_params_refused():
    with pytest.raises(ConfigError, match="eps=-0.1"):
        get("anp", eps=-0.1)
    with pytest.raises(ConfigError, match="alpha=2"):
        get("anp", alpha=2)
    with pytest.raises(ConfigError, match="eps=0 leaves nothing"):
        get("anp", eps=0.0)


def test_anp_prunes_the_bars_backdoor():
    """eps 0.2 (the paper sweeps 0.1-0.4): on this batch-norm-free cnn eps 0.4 breaks every neuron alike."""
    clean, test_set, bad = world()
    out = unchanged_after(get("anp", eps=0.2, steps=100, fraction=0.05), bad, clean=clean)
    assert out.details["pruned"] == 3 and out.details["neurons"] == 56
    assert asr(bad, test_set) > 0.95 and asr(out.model, test_set) < 0.2
    assert accuracy(out.model, test_set) > accuracy(bad, test_set) - 0.05
