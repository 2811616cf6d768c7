"""CLP (Zheng et al., ECCV 2022): the channel Lipschitz upper bound by hand on a 2-channel conv + BN, the
per-layer outlier rule, the caller's model untouched, bad parameters refused, and the backdoor pruned."""

import pytest
import torch
from torch import nn

from defend_support import accuracy, asr, unchanged_after, world
from poisonlab.defend import get
from poisonlab.defend.clp import conv_bn_pairs, uclc
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401 (autouse)


def conv_bn():
    """Conv2d(2 -> 2, kernel 1x2) + BN: channel 0 kernel [[3, 0], [0, 1]], gamma 2, var 4 (std 2): UCLC 3 * 1;
    channel 1 kernel [[1, 1], [1, 1]] (singular values 2, 0), gamma -1, var 1: UCLC 2 * 1."""
    model = nn.Sequential(nn.Conv2d(2, 2, (1, 2), bias=False), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[[[3.0, 0.0]], [[0.0, 1.0]]], [[[1.0, 1.0]], [[1.0, 1.0]]]]))
        model[1].weight.copy_(torch.tensor([2.0, -1.0]))
        model[1].bias.copy_(torch.tensor([0.5, 0.5]))
        model[1].running_var.copy_(torch.tensor([4.0, 1.0]))
    return model.eval()


def test_uclc_by_hand():
    model = conv_bn()
    (conv, bn), = conv_bn_pairs(model)
    assert bn is model[1]
    got = uclc(conv.weight, bn.weight / bn.running_var.sqrt())
    assert torch.allclose(got, torch.tensor([3.0, 2.0]))


def test_outlier_rule_by_hand():
    # scores 3, 2: mean 2.5, unbiased std 1/sqrt(2) = 0.707; u = 0.5 -> bound 2.854 prunes channel 0; u = 1 -> 3.207 none
    out = get("clp", u=0.5).defend(model=conv_bn())
    assert out.model[1].weight.tolist() == [0.0, -1.0] and out.model[1].bias.tolist() == [0.0, 0.5]
    assert out.details == {"pruned": 1, "channels": 2}
    assert get("clp", u=1.0).defend(model=conv_bn()).details["pruned"] == 0


def test_callers_model_unchanged_and_bad_params_refused():
    model = conv_bn()
    unchanged_after(get("clp", u=0.5), model)
    with pytest.raises(ConfigError, match="u=-1"):
        get("clp", u=-1)


def test_clp_removes_the_patch_backdoor_without_data():
    """Bars world (no batch norm: each conv channel scored alone). u = 2 because the paper's u = 3 cannot flag
    anything in an 8-channel layer (the largest z-score of n values is at most (n - 1) / sqrt(n) = 2.47)."""
    _, test_set, bad = world()
    out = unchanged_after(get("clp", u=2.0), bad)
    assert asr(bad, test_set) > 0.95 and asr(out.model, test_set) < 0.1
    assert accuracy(out.model, test_set) > accuracy(bad, test_set) - 0.05
    assert 0 < out.details["pruned"] <= 4
