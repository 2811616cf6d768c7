"""BNP (Zheng et al., NeurIPS 2022): the KL score by hand, the per-layer threshold, the caller's model untouched,
bad parameters refused, and a trained batch-norm backdoor removed at no cost in clean accuracy."""

import copy
import math

import pytest
import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.defend import get
from poisonlab.defend.bnp import bnp_scores
from poisonlab.errors import ConfigError
from repair2_world import accuracy, asr, bn_world, same_state
from test_detect_common import single_thread  # noqa: F401 (autouse)


def one_bn(mean, var) -> nn.Sequential:
    bn = nn.BatchNorm1d(len(mean))
    bn.running_mean.copy_(torch.tensor(mean))
    bn.running_var.copy_(torch.tensor(var))
    return nn.Sequential(bn, nn.Linear(len(mean), 2)).eval()


def test_kl_score_by_hand():
    model = one_bn([0.0, 1.0], [1.0, 4.0])
    x = torch.tensor([[1.0, 2.0], [-1.0, 4.0], [1.0, 2.0], [-1.0, 4.0]])   # clean moments: (0, 1) and (3, 1)
    s = bnp_scores(model, x)["0"]
    assert s[0] == pytest.approx(0.0, abs=1e-6)                              # same Gaussian
    assert s[1] == pytest.approx(0.5 * math.log(4.0) + (1.0 + 4.0) / 8.0 - 0.5, rel=1e-5)


def test_prunes_channels_above_mean_plus_u_std_on_a_copy():
    model = one_bn([0.0] * 5, [1.0] * 5)
    x = torch.randn(400, 5, generator=torch.Generator().manual_seed(0))
    x[:, 3] += 4.0                                                           # only channel 3 moved
    clean = Dataset(x, torch.zeros(400, dtype=torch.long), classes=("a", "b"), name="c")
    before = copy.deepcopy(model.state_dict())
    out = get("bnp", u=1.5).defend(model=model, clean=clean)
    assert out.model[0].weight.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert out.details["pruned"] == 1 and same_state(before, model)
    assert get("bnp", u=3.0).defend(model=model, clean=clean).details["pruned"] == 0   # max z of 5 values < 3


def test_bad_parameters_and_models_without_batch_norm_are_refused():
    with pytest.raises(ConfigError, match="u=-1"):
        get("bnp", u=-1)
    with pytest.raises(ConfigError, match="samples=1"):
        get("bnp", samples=1)
    clean = Dataset(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), classes=("a", "b"), name="c")
    with pytest.raises(ConfigError, match="no batch-norm layer"):
        get("bnp").defend(model=nn.Sequential(nn.Linear(3, 2)), clean=clean)


def test_removes_a_trained_backdoor_and_keeps_clean_accuracy():
    _, _, test_set, model, clean = bn_world()
    before = copy.deepcopy(model.state_dict())
    out = get("bnp", u=2.0).defend(model=model, clean=clean)
    assert asr(model, test_set) > 0.95 and asr(out.model, test_set) < 0.2
    assert accuracy(out.model, test_set) >= accuracy(model, test_set) - 0.05
    assert 0 < out.details["pruned"] <= 8 and same_state(before, model)
