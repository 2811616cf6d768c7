"""FT-SAM (Zhu et al., ICCV 2023): one SAM step by hand on a linear model, the caller's model untouched,
bad parameters refused, and the bars backdoor weakened where plain fine-tuning leaves it whole."""

import pytest
import torch
from torch import nn

from defend_support import accuracy, asr, unchanged_after, world
from poisonlab.defend import get
from poisonlab.defend.ft_sam import sam_step
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401 (autouse)


def ce_grads(w, b, x, y):
    """Cross-entropy gradients of a linear model by hand: dW = (p - e_y)^T x / n, db = mean(p - e_y)."""
    d = (torch.softmax(x @ w.T + b, dim=1) - nn.functional.one_hot(y, 2)) / len(y)
    return d.T @ x, d.sum(0)


def test_one_sam_step_by_hand():
    model = nn.Linear(2, 2)
    w0, b0 = torch.tensor([[1.0, -1.0], [0.5, 2.0]]), torch.tensor([0.1, -0.2])
    with torch.no_grad():
        model.weight.copy_(w0)
        model.bias.copy_(b0)
    x, y = torch.tensor([[1.0, 0.5], [-0.5, 1.0]]), torch.tensor([1, 0])
    rho, lr = 0.5, 0.1
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sam_step(model, opt, x, y, rho)
    gw, gb = ce_grads(w0, b0, x, y)
    norm = torch.sqrt(gw.pow(2).sum() + gb.pow(2).sum())
    gw2, gb2 = ce_grads(w0 + rho * gw / norm, b0 + rho * gb / norm, x, y)   # the gradient at w + e
    assert torch.allclose(model.weight, w0 - lr * gw2, atol=1e-6)           # applied at w (first momentum step)
    assert torch.allclose(model.bias, b0 - lr * gb2, atol=1e-6)


def test_bad_params_refused():
    with pytest.raises(ConfigError, match="rho=-1"):
        get("ft_sam", rho=-1)
    with pytest.raises(ConfigError, match="label_smoothing=1"):
        get("ft_sam", label_smoothing=1)


def test_ft_sam_weakens_the_bars_backdoor_where_plain_fine_tuning_does_not():
    clean, test_set, bad = world()
    plain = get("ft_sam", rho=0.0).defend(model=bad, clean=clean).model       # rho 0 is plain fine-tuning
    out = unchanged_after(get("ft_sam"), bad, clean=clean)
    assert asr(bad, test_set) > 0.95 and asr(plain, test_set) > 0.95
    assert asr(out.model, test_set) < 0.5
    assert accuracy(out.model, test_set) > accuracy(bad, test_set) - 0.05
