"""NPD (Zhu et al., NeurIPS 2023): the identity polarizer, the loss and the target estimate by hand, the caller's
model untouched, bad parameters refused, and a digits backdoor purified by a polarizer on the conv features."""

import copy
import math

import pytest
import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.defend import get
from poisonlab.defend.npd import Polarized, insert_polarizer, most_likely_wrong, polarizer_loss
from poisonlab.errors import ConfigError
from repair2_world import accuracy, asr, digits_world, same_state
from test_detect_common import single_thread  # noqa: F401 (autouse)


def small():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model.eval(), torch.rand(6, 1, 4, 4, generator=g)


def test_an_inserted_polarizer_starts_as_the_identity():
    model, x = small()
    for layer, kind in (("3", nn.Linear), ("1", nn.Conv2d)):
        polarized = insert_polarizer(model, x, layer)
        assert isinstance(polarized.get_submodule(layer), Polarized)
        assert isinstance(polarized.get_submodule(layer).polarizer, kind)
        assert torch.allclose(polarized(x), model(x), atol=1e-6)
    with pytest.raises(ConfigError, match="layer 'head' is not a module"):
        insert_polarizer(model, x, "head")


def test_target_estimate_and_loss_by_hand():
    logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 5.0, 4.0]])
    assert most_likely_wrong(logits, torch.tensor([0, 1])).tolist() == [1, 2]
    fixed = nn.Identity()
    x = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))      # softmax = (0.5, 0.25, 0.25); delta = 0
    loss = polarizer_loss(fixed, x, torch.tensor([0]), torch.zeros_like(x), torch.tensor([1]), (1.0, 2.0, 3.0))
    # 1 * CE = -log 0.5; 2 * -log(1 - 0.25); 3 * CE(adv = x) = -log 0.5
    assert loss.item() == pytest.approx(4 * math.log(2) - 2 * math.log(0.75), rel=1e-5)


def test_the_callers_model_is_untouched_and_bad_parameters_are_refused():
    model, x = small()
    before = copy.deepcopy(model.state_dict())
    clean = Dataset(x, torch.tensor([0, 1, 2, 0, 1, 2]), classes=("a", "b", "c"), name="c")
    out = get("npd", epochs=1).defend(model=model, clean=clean)
    assert same_state(before, model) and isinstance(out.model[3], Polarized)
    with pytest.raises(ConfigError, match="eps=0"):
        get("npd", eps=0)
    with pytest.raises(ConfigError, match="weights=.*three numbers"):
        get("npd", weights=[1, 1])


def test_a_polarizer_on_the_conv_features_removes_a_digits_backdoor():
    poisoned, mask, test_set, model, _ = digits_world("cnn")
    clean = poisoned.subset(torch.nonzero(~mask).flatten()[:300])          # 25% of the training rows
    out = get("npd", layer="7", eps=0.2, epochs=10).defend(model=model, clean=clean)
    assert asr(model, test_set) > 0.95 and asr(out.model, test_set) < 0.2
    assert accuracy(out.model, test_set) > accuracy(model, test_set) - 0.2
