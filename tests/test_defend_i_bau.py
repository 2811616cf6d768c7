"""I-BAU (Zeng et al., ICLR 2022): the universal perturbation's step and projection by hand on a linear
model, the implicit hypergradient's direct part, the caller's model untouched, bad parameters refused,
and the bars patch backdoor unlearned."""

import pytest
import torch
from torch import nn

from defend_support import accuracy, asr, unchanged_after, world
from poisonlab.defend import get
from poisonlab.defend.i_bau import hypergradient, perturbation_step, project
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401 (autouse)


def linear():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        model.bias.copy_(torch.tensor([0.1, -0.2]))
    return model.requires_grad_(False)


def test_perturbation_step_by_hand():
    model, lr = linear(), 10.0
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    delta0 = torch.tensor([[0.1, -0.2]])
    # by hand: pred = argmax(Wx + b); d/d delta [-mean CE(W(x + delta) + b, pred)] = -mean_n W^T (p_n - e_pred_n);
    # d/d delta 0.001 ||delta||^2 = 0.002 delta
    w = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    pred = (x @ w.T + torch.tensor([0.1, -0.2])).argmax(1)
    p = torch.softmax((x + delta0) @ w.T + torch.tensor([0.1, -0.2]), dim=1)
    grad = -((p - nn.functional.one_hot(pred, 2)) @ w).mean(0, keepdim=True) + 0.002 * delta0
    assert torch.allclose(perturbation_step(model, x, delta0, lr), delta0 - lr * grad, atol=1e-6)


def test_projection_onto_the_l2_ball():
    assert torch.equal(project(torch.tensor([[3.0, 4.0]]), 10.0), torch.tensor([[3.0, 4.0]]))
    assert torch.allclose(project(torch.tensor([[3.0, 4.0]]), 1.0), torch.tensor([[0.6, 0.8]]))


def test_hypergradient_without_an_implicit_path_is_the_plain_gradient():
    """An outer loss that ignores delta: v = 0, so the hypergradient is the ordinary gradient."""
    model = linear().requires_grad_(True)
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([1])
    grads = hypergradient(model, torch.zeros(1, 2), x, y, lambda d: nn.functional.cross_entropy(model(x), y), 5)
    expected = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    assert all(torch.allclose(g, e) for g, e in zip(grads, expected))


def test_bad_params_refused():
    with pytest.raises(ConfigError, match="portion=1.5"):
        get("i_bau", portion=1.5)
    with pytest.raises(ConfigError, match="radius=0"):
        get("i_bau", radius=0)


def test_i_bau_unlearns_the_bars_backdoor():
    """A stronger perturbation step than the paper's (delta_lr 1000 where its 10 moves delta by 1e-4 on this
    confident model), a radius for 8x8 images in [0, 1], and 6 rounds of 2 mini-batches at Adam lr 0.02 (the
    paper's 1e-3 over its ~250 steps per run; here 12 steps)."""
    clean, test_set, bad = world()
    out = unchanged_after(get("i_bau", rounds=6, delta_epochs=2, delta_lr=1000.0, lr=0.02, radius=2.0), bad,
                          clean=clean)
    assert asr(bad, test_set) > 0.95 and asr(out.model, test_set) < 0.2
    assert accuracy(out.model, test_set) > accuracy(bad, test_set) - 0.05
