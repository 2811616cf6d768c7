"""Randomized smoothing (Cohen et al., ICML 2019, PREDICT): the binomial test by hand, votes and abstentions on a
fixed model, the same vote for an input in any batch, bad parameters refused, and a patch backdoor drowned by
smoothing a noise-tuned copy (the caller's model untouched)."""

import copy

import pytest
import torch
from torch import nn

from poisonlab.defend import Defended, get
from poisonlab.defend.run import apply_defense
from poisonlab.defend.evaluate import backdoor_scores
from poisonlab.defend.smoothing import binomial_two_sided_p
from poisonlab.errors import ConfigError
from repair2_world import same_state
from test_detect_common import backdoor_world, bars, single_thread, stamp  # noqa: F401 (autouse)


class Threshold(nn.Module):
    """Class 1 when the first feature is above 0, else class 0."""

    def forward(self, x):
        return torch.stack([-x[:, 0], x[:, 0]], dim=1)


def test_binomial_p_value_by_hand():
    assert binomial_two_sided_p(9, 1) == pytest.approx(2 * 11 / 1024)   # P(X >= 9) = (C(10,9) + C(10,10)) / 2^10
    assert binomial_two_sided_p(10, 0) == pytest.approx(2 / 1024)
    assert binomial_two_sided_p(5, 5) == 1.0 and binomial_two_sided_p(0, 0) == 1.0


def test_votes_and_abstentions_on_a_fixed_model():
    out = get("randomized_smoothing", sigma=0.5, n=200, alpha=0.001, noise_epochs=0).defend(model=Threshold(), seed=3)
    x = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 0.0]])
    votes = out.model(x)
    assert votes.sum(dim=1).tolist() == [200, 200, 200]
    assert votes[0, 1] == 200 and votes[1, 0] == 200             # 6 sigma from the boundary: unanimous
    assert 70 < votes[2, 0] < 130                                # on the boundary: a coin flip
    assert out.reject(x).tolist() == [False, False, True]
    assert torch.equal(out.model(x[2:]), votes[2:])               # the same input, the same vote, in any batch


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="sigma=0"):
        get("randomized_smoothing", sigma=0)
    with pytest.raises(ConfigError, match="alpha=1.5"):
        get("randomized_smoothing", alpha=1.5)


def test_smoothing_a_noise_tuned_copy_drowns_a_patch_trigger():
    _, _, test_set, bad, _ = backdoor_world()
    before = copy.deepcopy(bad.state_dict())
    test = test_set.subset(torch.arange(100))
    trig = test.replace(x=stamp(test.x))
    out = get("randomized_smoothing", sigma=0.5, n=50, noise_epochs=5).defend(model=bad, clean=bars(100, 5))
    undefended, after = backdoor_scores(Defended(bad), test, trig, 0), backdoor_scores(out, test, trig, 0)
    assert undefended.attack_success_rate > 0.95 and after.attack_success_rate < 0.2
    assert after.clean_accuracy >= undefended.clean_accuracy - 0.05
    assert same_state(before, bad)
    with pytest.raises(ConfigError, match="needs a small clean set"):
        apply_defense(get("randomized_smoothing"), model=bad, data=None, clean=None, build=None, train_cfg=None,
                      seed=0)
