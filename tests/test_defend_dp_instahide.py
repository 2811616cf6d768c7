"""DP-InstaHide (Borgnia et al. 2021): k-way mixup and its soft-label loss by hand, the Laplacian noise's
scale, bad params refused, the caller's modules untouched, and an invisible backdoor trigger defused."""

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from poisonlab.defend import get
from poisonlab.defend.dp_instahide import laplace, mix, mixed_loss
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401  (autouse: one torch thread)
from traindef_support import runs_on_the_run_device, checker_world


def test_mixup_and_its_loss_by_hand():
    x = torch.tensor([[1.0], [3.0]])
    weights, partners = torch.tensor([0.25, 0.75]), torch.tensor([[0, 1], [1, 0]])
    assert mix(x, weights, partners).flatten().tolist() == [0.25 * 1 + 0.75 * 3, 0.25 * 3 + 0.75 * 1]
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    # row 0 mixes (y 0: 0.25, y 1: 0.75), row 1 (y 1: 0.25, y 0: 0.75)
    lse0, lse1 = math.log(math.exp(2) + 1), math.log(1 + math.e)
    by_hand = (0.25 * (lse0 - 2) + 0.75 * lse0 + 0.25 * (lse1 - 1) + 0.75 * lse1) / 2
    assert float(mixed_loss(logits, y, weights, partners)) == pytest.approx(by_hand)
    assert float(mixed_loss(logits, y, torch.tensor([1.0]), partners[:1])) == pytest.approx(float(F.cross_entropy(logits, y)))


def test_laplace_noise_and_the_augmented_batch():
    noise = laplace((200_000,), 0.1, torch.Generator().manual_seed(0))
    assert float(noise.abs().mean()) == pytest.approx(0.1, rel=0.02)       # E|L| = b
    assert float(noise.var()) == pytest.approx(2 * 0.01, rel=0.03)         # Var L = 2 b^2
    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    out, weights, partners = get("dp_instahide", k=3, scale=0.0).augment(x, torch.Generator().manual_seed(2), True)
    assert float(weights.sum()) == pytest.approx(1.0) and (weights > 0).all()
    assert partners.shape == (3, 16) and partners[0].tolist() == list(range(16))
    assert torch.allclose(out, sum(w * x[p] for w, p in zip(weights, partners)))


def test_bad_params_and_the_callers_modules():
    for bad in ({"k": 0}, {"scale": -0.1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get("dp_instahide", **bad)
    w = checker_world()
    shared = w.build()
    before = copy.deepcopy(shared.state_dict())
    out = get("dp_instahide").defend(data=w.poisoned.subset(torch.arange(64)), build=lambda: shared,
                                     train_cfg=w.cfg.model_copy(update={"epochs": 1}))
    assert out.model is not shared and all(torch.equal(before[k], v) for k, v in shared.state_dict().items())


def test_dp_instahide_defuses_an_invisible_trigger():
    """Borgnia et al.: mixup plus noise dilutes a trigger below what the model learns (here an L-inf 0.1 checkerboard)."""
    w = checker_world()
    out = get("dp_instahide").defend(data=w.poisoned, build=w.build, train_cfg=w.cfg)
    acc, asr = w.scores(out.model)
    assert w.plain[1] > 0.9 and asr < 0.1
    assert acc >= w.plain[0] - 0.05


def test_every_draw_is_made_on_the_cpu_and_moved():
    assert runs_on_the_run_device("dp_instahide", k=3)["k"] == 3
