"""DP-SGD (Abadi et al. 2016) as a training-stage defense: per-sample clipping and noise by hand on a tiny
linear model, the RDP accountant against its definition and opacus's published values, batch norm refused,
the caller's modules untouched, and a patch backdoor on digits weakened."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab.defend import get
from poisonlab.defend.dp_sgd import per_sample_gradients, private_gradient
from poisonlab.defend.rdp_accountant import dp_sgd_epsilon, epsilon, log_a, rdp
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401  (autouse: one torch thread)
from traindef_support import runs_on_the_run_device, digits_patch_world


def tiny():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    return model


def test_clipping_and_noise_by_hand():
    x, y = torch.tensor([[1.0, 0.0], [0.0, 3.0]]), torch.tensor([0, 0])
    grads = per_sample_gradients(tiny(), x, y)["weight"]
    # row 1: logits (1, 0), p = (e/(e+1), 1/(e+1)); dW = (p - e_0) x^T = [[-1/(e+1), 0], [1/(e+1), 0]]
    a = 1 / (math.e + 1)
    # row 2: logits (0, 3), p0 = 1/(1+e^3); dW = [[0, -3 (1 - p0)], [0, 3 (1 - p0)]]
    b = 3 * (1 - 1 / (1 + math.e ** 3))
    assert torch.allclose(grads[0], torch.tensor([[-a, 0], [a, 0]]), atol=1e-6)
    assert torch.allclose(grads[1], torch.tensor([[0, -b], [0, b]]), atol=1e-6)
    # clip 1: row 1 (norm a*sqrt(2) = 0.38) is kept, row 2 (norm b*sqrt(2) = 4.04) scaled to norm 1
    c = 1 / math.sqrt(2)
    expected = torch.tensor([[-a, -c], [a, c]]) / 2
    clean = private_gradient({"weight": grads}, 1.0, 0.0, 2.0, torch.Generator().manual_seed(7))["weight"]
    assert torch.allclose(clean, expected, atol=1e-6)
    noisy = private_gradient({"weight": grads}, 1.0, 0.5, 2.0, torch.Generator().manual_seed(7))["weight"]
    assert torch.allclose(noisy - clean, 0.5 * torch.randn(2, 2, generator=torch.Generator().manual_seed(7)) / 2,
                          atol=1e-6)


def test_accountant_against_the_definition_and_opacus():
    assert rdp(1.0, 2.0, 3, [2, 5]) == [pytest.approx(3 * 2 / 8), pytest.approx(3 * 5 / 8)]  # alpha / (2 sigma^2)
    # A_3 by numerical integration of E_{z ~ N(0, s^2)}[((1 - q) + q exp((2z - 1) / (2 s^2)))^3]
    q, s = 0.1, 1.5
    z = np.linspace(-20, 20, 400_001)
    density = np.exp(-z ** 2 / (2 * s * s)) / (s * math.sqrt(2 * math.pi))
    integral = np.trapezoid(density * ((1 - q) + q * np.exp((2 * z - 1) / (2 * s * s))) ** 3, z)
    assert log_a(q, s, 3) == pytest.approx(math.log(integral), rel=1e-6)
    # opacus's docstring example (integer orders 2..32): epsilon 0.336 at order 23
    orders = range(2, 33)
    both = [u + v for u, v in zip(rdp(1e-5, 1.0, 10, orders), rdp(1e-4, 3.0, 4, orders))]
    eps, order = epsilon(both, 1e-5, orders)
    assert (round(eps, 3), order) == (0.336, 23)
    # opacus's accountant test: 7.3291 with fractional orders too; integer orders only are a little looser
    assert 7.3291 <= dp_sgd_epsilon(0.04, 1.5, int(90 / 0.04), 1e-5) < 7.34


def test_bad_params_batch_norm_and_the_callers_modules():
    for bad in ({"clip": 0.0}, {"noise_multiplier": -1.0}, {"delta": 1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get("dp_sgd", **bad)
    w = digits_patch_world()
    small = w.poisoned.subset(torch.arange(64))
    cfg = w.cfg.model_copy(update={"epochs": 1})
    bn = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10))
    with pytest.raises(ConfigError, match="batch-norm layers \\(2\\)"):
        get("dp_sgd").defend(data=small, build=lambda: bn, train_cfg=cfg)
    shared = w.build()
    before = copy.deepcopy(shared.state_dict())
    out = get("dp_sgd").defend(data=small, build=lambda: shared, train_cfg=cfg)
    assert out.model is not shared and all(torch.equal(before[k], v) for k, v in shared.state_dict().items())
    assert out.details["steps"] == 2 and out.details["epsilon"] > 0


def test_dp_sgd_weakens_a_patch_backdoor_on_digits():
    """Du et al. 2020: DP training keeps a few poisoned rows from planting a backdoor, at a cost in accuracy."""
    w = digits_patch_world()
    out = get("dp_sgd", clip=1.0, noise_multiplier=1.0).defend(data=w.poisoned, build=w.build, train_cfg=w.cfg, seed=0)
    acc, asr = w.scores(out.model)
    assert w.plain[1] > 0.8 and asr < w.plain[1] / 2        # the backdoor, then at most half of it
    assert acc > w.plain[0] - 0.25                           # DP's price in clean accuracy, bounded
    assert 1.0 < out.details["epsilon"] < 10.0


def test_every_draw_is_made_on_the_cpu_and_moved():
    assert runs_on_the_run_device("dp_sgd")["steps"] == 6
