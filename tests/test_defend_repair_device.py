"""Device discipline of the repair defenses (NAD, ANP, I-BAU, FT-SAM, CLP, RNP): each runs on a CPU model
while torch's default device is "meta", so a tensor made without a device fails loudly (as
tests/test_device_discipline.py does for the experiment pipeline); batch norm included."""

import pytest
import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.defend import get
from poisonlab.rng import generator
from test_device_discipline import default_device_meta

FAST = {"nad": {"teacher_epochs": 1, "epochs": 1}, "anp": {"steps": 2}, "i_bau": {"rounds": 1},
        "ft_sam": {"epochs": 1}, "clp": {"u": 0.5}, "rnp": {"unlearn_epochs": 1, "recover_epochs": 1}}


def bn_model():
    g = generator(0, "bn-model")
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("name", sorted(FAST))
def test_defense_makes_every_tensor_on_the_models_device(name):
    g = generator(0, "bn-data")
    clean = Dataset(torch.rand(24, 1, 6, 6, generator=g), torch.randint(0, 3, (24,), generator=g),
                    classes=("a", "b", "c"), name="c")
    model = bn_model()
    with default_device_meta():
        out = get(name, **FAST[name]).defend(model=model, clean=clean, seed=1)
    assert all(p.device.type == "cpu" for p in out.model.parameters())
