"""ABL (Li et al., NeurIPS 2021): the LGA loss, the complementary unlearning loss and the isolation by hand,
bad params refused, the caller's modules untouched, and a 10% patch backdoor on digits isolated and unlearned."""

import copy
import math

import pytest
import torch

from poisonlab.defend import get
from poisonlab.defend.abl import complement_loss, isolate, lga_loss, unlearning_objective
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401  (autouse: one torch thread)
from traindef_support import digits_patch_world, runs_on_the_run_device


def test_lga_loss_flips_its_gradient_below_gamma():
    # logits (0, 0), label 0: CE = ln 2 = 0.693; gamma 0.5 -> descend (+CE), gamma 1 -> ascend (-CE)
    z = torch.zeros(1, 2, requires_grad=True)
    y = torch.tensor([0])
    assert float(lga_loss(z, y, 0.5).detach()) == pytest.approx(math.log(2))
    assert float(lga_loss(z, y, 1.0).detach()) == pytest.approx(-math.log(2))
    lga_loss(z, y, 1.0).backward()
    assert torch.allclose(z.grad, torch.tensor([[0.5, -0.5]]))  # -(softmax - onehot) = -((1/2, 1/2) - (1, 0))


def test_the_unlearning_losses_by_hand():
    # logits (0, ln 3), label 1: p_1 = 3/4; -log(1 - p_1) = ln 4; the paper's ascent: -CE = ln(3/4)
    z, y = torch.tensor([[0.0, math.log(3)]]), torch.tensor([1])
    assert float(complement_loss(z, y)) == pytest.approx(math.log(4))
    assert float(unlearning_objective("ascent", z, y)) == pytest.approx(math.log(3 / 4))
    # saturated row (margin 40): CE's gradient vanishes, the complement's does not
    sat = torch.tensor([[0.0, 40.0]], requires_grad=True)
    unlearning_objective("ascent", sat, y).backward()
    assert sat.grad.abs().max() < 1e-12
    sat.grad = None
    complement_loss(sat, y).backward()
    assert torch.allclose(sat.grad, torch.tensor([[-1.0, 1.0]]), atol=1e-6)


def test_isolate_takes_the_lowest_losses():
    losses = torch.tensor([0.3, 0.1, 0.2, 0.1, 0.9])
    assert isolate(losses, 0.4).tolist() == [1, 3]
    assert isolate(losses, 0.01).tolist() == [1]  # at least one row


def test_bad_params_and_the_callers_modules():
    for bad in ({"isolation_ratio": 0.0}, {"gamma": -1.0}, {"isolation_epochs": 0}, {"unlearning_lr": 0.0},
                {"unlearning_loss": "flood"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get("abl", **bad)
    w = digits_patch_world()
    shared = w.build()
    before = copy.deepcopy(shared.state_dict())
    out = get("abl", isolation_epochs=1, unlearning_epochs=1).defend(
        data=w.poisoned.subset(torch.arange(64)), build=lambda: shared, train_cfg=w.cfg.model_copy(update={"epochs": 2}))
    assert out.model is not shared and all(torch.equal(before[k], v) for k, v in shared.state_dict().items())
    assert out.details["isolated"] == 1


def test_abl_isolates_and_unlearns_a_patch_backdoor_on_digits():
    """Li et al. 2021: BadNets is learned first, its rows isolated by their low loss, then unlearned."""
    w = digits_patch_world(0.1)
    out = get("abl").defend(data=w.poisoned, build=w.build, train_cfg=w.cfg, seed=2)
    rows = torch.tensor(out.details["isolated_rows"])
    assert len(rows) == 13 and bool(w.mask[rows].all())     # 1% of 1,257 rows, every one poisoned
    acc, asr = w.scores(out.model)
    assert w.plain[1] > 0.95 and asr < 0.1
    assert acc >= w.plain[0] - 0.03
    assert out.details["isolated_loss_after_unlearning"] > 1.0 > out.details["isolated_loss_before_unlearning"]


def test_every_draw_is_made_on_the_cpu_and_moved():
    assert runs_on_the_run_device("abl", isolation_epochs=1)["isolated"] == 1
