"""RNP (Li et al., ICML 2023): one unlearning step and one mask-recovery step by hand on a tiny MLP, the
caller's model untouched, bad parameters refused, and the bars patch backdoor pruned."""

import pytest
import torch
from torch import nn

from defend_support import accuracy, asr, unchanged_after, world
from poisonlab.data.dataset import Dataset
from poisonlab.defend import get
from poisonlab.defend.rnp import recover_masks, unlearn
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401 (autouse)

W1, B1 = torch.tensor([[1.0, -1.0], [0.5, 2.0]]), torch.tensor([0.5, -0.25])
W2 = torch.tensor([[1.0, -2.0], [-1.0, 1.0]])


def tiny():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(W1)
        model[0].bias.copy_(B1)
        model[2].weight.copy_(W2)
        model[2].bias.zero_()
    return model.requires_grad_(False)


def data():
    return Dataset(torch.tensor([[1.0, 0.5], [2.0, 1.0]]), torch.tensor([1, 0]), classes=("a", "b"), name="t")


def test_one_recovery_step_by_hand():
    d, lr, alpha = data(), 0.2, 0.2
    values = recover_masks(tiny(), d, lr, alpha, epochs=1, batch_size=2, seed=0)
    # by hand at m = 1: out' = m * (W1 x) + b1; dL/dm_j = alpha * sum_n dL/dpre[n, j] * (W1 x)[n, j]
    wx = d.x @ W1.T
    pre = wx + B1
    g = (torch.softmax(pre.clamp(min=0) @ W2.T, dim=1) - nn.functional.one_hot(d.y, 2)) / 2
    grad = alpha * (((g @ W2) * (pre > 0)) * wx).sum(0)
    assert torch.allclose(values, (1 - lr * grad).clamp(0, 1), atol=1e-6)     # first momentum step = the gradient


def test_one_unlearning_step_ascends_the_clean_loss_by_hand():
    d, lr = data(), 0.1
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(W1)
        model.bias.copy_(B1)
    out, _ = unlearn(model, d, lr, epochs=1, clean_threshold=0.0, batch_size=2, seed=0)
    # gradient ASCENT with weight decay 5e-4: w <- w + lr * (dCE/dw) - lr * 5e-4 * w
    dl = (torch.softmax(d.x @ W1.T + B1, dim=1) - nn.functional.one_hot(d.y, 2)) / 2
    assert torch.allclose(out.weight, W1 + lr * (dl.T @ d.x) - lr * 5e-4 * W1, atol=1e-6)
    assert torch.allclose(out.bias, B1 + lr * dl.sum(0) - lr * 5e-4 * B1, atol=1e-6)
    assert torch.equal(model.weight, W1)


def test_bad_params_refused():
    with pytest.raises(ConfigError, match="clean_threshold=1.5"):
        get("rnp", clean_threshold=1.5)
    with pytest.raises(ConfigError, match="fraction=-0.1"):
        get("rnp", fraction=-0.1)


def test_rnp_prunes_the_bars_backdoor():
    """Stated as it is: this confident cnn keeps its clean accuracy through 20 unlearning epochs (the clean
    loss's gradient vanishes at saturation), so the recovery starts from a barely changed model; the masks
    still rank the backdoor's neurons lowest, and pruning the 5% smallest (3 of 56) removes the backdoor.
    The default threshold 0.2 prunes nothing here."""
    clean, test_set, bad = world()
    out = unchanged_after(get("rnp", fraction=0.05), bad, clean=clean)
    assert out.details["pruned"] == 3
    assert asr(bad, test_set) > 0.95 and asr(out.model, test_set) < 0.2
    assert accuracy(out.model, test_set) > accuracy(bad, test_set) - 0.05
