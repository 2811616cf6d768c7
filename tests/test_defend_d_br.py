"""D-BR (Chen, Wu & Wang, NeurIPS 2022): the transformation and the FCT score by hand, the SD split, bad params
refused, the caller's model untouched, and a 10% patch backdoor on digits removed."""

import copy
import math

import pytest
import torch
from torch import nn

from poisonlab.defend import get
from poisonlab.defend.fct import distinguish, fct_scores, rotate_shift
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401  (autouse: one torch thread)
from traindef_support import digits_patch_world, runs_on_meta_default


def test_rotation_and_shift_by_hand():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 3] = 1.0                                          # top-right pixel
    quarter = rotate_shift(x, torch.tensor([math.pi / 2]), torch.zeros(1, 2))
    assert quarter[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-5)  # counter-clockwise: top-right -> top-left
    assert float(quarter.sum()) == pytest.approx(1.0, abs=1e-5)
    moved = rotate_shift(x, torch.zeros(1), torch.tensor([[-0.5, 0.5]]))  # one pixel left (2/4), one down
    assert moved[0, 0, 1, 2] == pytest.approx(1.0, abs=1e-5)


def test_fct_is_the_mean_squared_feature_change():
    # features = the input of the last Linear = the flattened image; so FCT = mean (x - tau(x))^2
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    from poisonlab.defend.fct import random_affine
    from poisonlab.rng import generator
    moved = random_affine(x, generator(5, "fct-transform"))
    assert torch.allclose(fct_scores(model, x, 5), (x - moved).flatten(1).pow(2).mean(1), atol=1e-6)


def test_the_split_by_score():
    split = distinguish(torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7]), 0.4, 0.2)
    assert split.clean.tolist() == [1, 3] and split.poisoned.tolist() == [2] and split.uncertain.tolist() == [0, 4]


def test_bad_params_and_the_callers_model():
    for bad in ({"clean_ratio": 0.0}, {"poison_ratio": 1.0}, {"epochs": 0}, {"lr": 0.0}, {"unlearning_loss": "x"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get("d_br", **bad)
    with pytest.raises(ConfigError, match="clean_ratio \\+ poison_ratio"):
        get("d_br", clean_ratio=0.6, poison_ratio=0.5)
    w = digits_patch_world()
    given = w.build()
    before = copy.deepcopy(given.state_dict())
    out = get("d_br", epochs=1).defend(model=given, data=w.poisoned.subset(torch.arange(64)), build=w.build,
                                       train_cfg=w.cfg)
    assert out.model is not given and all(torch.equal(before[k], v) for k, v in given.state_dict().items())
    assert (out.details["clean"], out.details["poisoned"], out.details["uncertain"]) == (13, 3, 48)


def test_d_br_removes_a_patch_backdoor_on_digits():
    """Chen et al. 2022: a poisoned row's features move more under rotation + translation; unlearning the most
    sensitive 5% and relearning the least sensitive 20% removes BadNets."""
    w = digits_patch_world(0.1)
    out = get("d_br").defend(data=w.poisoned, build=w.build, train_cfg=w.cfg, seed=0)
    rows = torch.tensor(out.details["poisoned_rows"])
    assert float(w.mask[rows].float().mean()) > 0.7          # most of D_p is poison (10% of the rows are)
    acc, asr = w.scores(out.model)
    assert w.plain[1] > 0.95 and asr < 0.1
    assert acc >= w.plain[0] - 0.08


def test_every_draw_is_made_on_the_cpu_and_moved():
    assert runs_on_meta_default("d_br", epochs=1)["poisoned"] == 1
