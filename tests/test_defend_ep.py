"""EP (Zheng et al., NeurIPS 2022): the histogram entropy by hand, a bimodal channel found and pruned on a copy,
bad parameters refused, and a backdoor neuron (built by hand: it fires on the trigger and votes for the target)
removed from a model whose benign channels see Gaussian pre-activations, the paper's assumption."""

import copy
import math

import pytest
import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.defend import get
from poisonlab.defend.ep import histogram_entropy
from poisonlab.errors import ConfigError
from poisonlab.training import predict
from repair2_world import same_state
from test_detect_common import single_thread  # noqa: F401 (autouse)

TARGET = 0


def test_histogram_entropy_by_hand():
    values = torch.tensor([[0.0, 0.5, 1.5, 1.8], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    # bins of width 1 from 0: row 0 -> counts (2, 2), entropy log 2; row 1 -> one bin, entropy 0
    assert histogram_entropy(values, 1.0).tolist() == pytest.approx([math.log(2), 0.0])
    assert histogram_entropy(values[:1], 0.25).item() == pytest.approx(math.log(4))   # every value in its own bin


def backdoored(d: int = 8, width: int = 16) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Linear with channel 0 a backdoor neuron: it reads feature 0 (the trigger sets it to
    6, benign inputs have it N(0, 1)) and pushes class TARGET; the other channels are random projections."""
    g = torch.Generator().manual_seed(0)
    first, head = nn.Linear(d, width), nn.Linear(width, 3)
    with torch.no_grad():
        first.weight.copy_(torch.randn(width, d, generator=g))
        first.weight[0] = 0.0
        first.weight[0, 0] = 1.0
        first.bias.zero_()
        head.weight.copy_(0.1 * torch.randn(3, width, generator=g))
        head.weight[:, 0] = torch.tensor([3.0, -3.0, -3.0])
        head.bias.copy_(torch.tensor([-2.0, 0.0, 0.0]))
    return nn.Sequential(first, nn.BatchNorm1d(width), nn.ReLU(), head)


def world(n: int = 2000):
    """(model with BN statistics of the poisoned data, poisoned training set, triggered test inputs)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    x[: n // 10, 0] = 6.0                                                  # 10% carry the trigger
    data = Dataset(x, torch.zeros(n, dtype=torch.long), classes=("a", "b", "c"), name="p")
    model = backdoored()
    model.train()
    with torch.no_grad():
        model[1].momentum = None                                           # cumulative: exact statistics
        model(x)
    model.eval().requires_grad_(False)
    triggered = torch.randn(500, 8, generator=g)
    triggered[:, 0] = 6.0
    return model, data, triggered


def test_prunes_the_backdoor_neuron_on_a_copy():
    model, data, triggered = world()
    before = copy.deepcopy(model.state_dict())
    assert (predict(model, triggered) == TARGET).float().mean() > 0.95
    out = get("ep", u=3.0, step=0.1).defend(model=model, data=data)
    assert out.model[1].weight[0] == 0 and out.details["pruned"] == 1
    assert (predict(out.model, triggered) == TARGET).float().mean() < 0.05
    assert same_state(before, model)


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="step=0"):
        get("ep", step=0)
    with pytest.raises(ConfigError, match="u=-2"):
        get("ep", u=-2)
    with pytest.raises(ConfigError, match="needs the training data"):
        from poisonlab.defend.run import apply_defense
        apply_defense(get("ep"), model=backdoored(), data=None, clean=None, build=None, train_cfg=None, seed=0)
