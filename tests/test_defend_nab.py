"""NAB (Liu et al., ICCV 2023): the defensive trigger and the planting of the defensive backdoor by hand, bad
params refused, the caller's modules untouched, and a 10% patch backdoor on digits overridden."""

import copy

import pytest
import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.defend import get
from poisonlab.defend.nab import Stamped, plant, stamp_checkerboard
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401  (autouse: one torch thread)
from traindef_support import digits_patch_world, runs_on_meta_default


def test_the_defensive_trigger_and_the_planting_by_hand():
    x = torch.full((2, 1, 4, 4), 0.5)
    out = stamp_checkerboard(x, 2)
    assert out[0, 0, :2, :2].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert bool((out[..., 2:] == 0.5).all()) and bool((out[..., 2:, :] == 0.5).all()) and bool((x == 0.5).all())
    x3 = torch.full((3, 1, 4, 4), 0.5)
    data = Dataset(x3, torch.tensor([0, 0, 2]), tuple("abcd"))
    # rows 1 and 2 flagged; row 1's pseudo-label 3 differs from its label (stamped), row 2's (2) does not
    planted = plant(data, torch.tensor([False, True, True]), torch.tensor([3, 2]), 2, stamp="changed")
    assert planted.y.tolist() == [0, 3, 2]
    assert torch.equal(planted.x[0], x3[0]) and torch.equal(planted.x[1], out[1]) and torch.equal(planted.x[2], x3[2])
    every = plant(data, torch.tensor([False, True, True]), torch.tensor([3, 2]), 2)   # stamp="all"
    assert every.y.tolist() == [0, 3, 2] and torch.equal(every.x[2], out[1])
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    assert torch.equal(Stamped(model, 2)(x), model(out))


def test_bad_params_and_inputs():
    for bad in ({"size": 0}, {"isolation_ratio": 1.0}, {"labeller": "oracle"}, {"labeller_epochs": 0},
                {"stamp": "some"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get("nab", **bad)
    with pytest.raises(ConfigError, match="detector 'strip' inspects inputs"):
        get("nab", detector="strip")
    w = digits_patch_world()
    tabular = Dataset(torch.rand(8, 3), torch.tensor([0, 1] * 4), ("a", "b"))
    with pytest.raises(ConfigError, match="nab stamps a 2x2 patch on images"):
        get("nab").defend(data=tabular, clean=tabular, build=w.build, train_cfg=w.cfg)
    with pytest.raises(ConfigError, match="labeller='clean' needs the defender's clean set"):
        get("nab").defend(data=w.poisoned, build=w.build, train_cfg=w.cfg)


def test_the_callers_modules_are_untouched():
    w = digits_patch_world()
    shared, given = w.build(), w.build()
    before = [copy.deepcopy(m.state_dict()) for m in (shared, given)]
    small = w.poisoned.subset(torch.arange(64))
    out = get("nab", detector="spectre", labeller_epochs=1).defend(
        model=given, data=small, clean=small, build=lambda: shared, train_cfg=w.cfg.model_copy(update={"epochs": 1}))
    assert out.model.model is not shared
    for m, b in zip((shared, given), before):
        assert all(torch.equal(b[k], v) for k, v in m.state_dict().items())


def test_nab_overrides_a_patch_backdoor_on_digits():
    """Liu et al. 2023: the defensive backdoor (trigger -> true class) overrides the attacker's at inference."""
    w = digits_patch_world(0.1)
    clean = w.poisoned.subset(~w.mask).subset(torch.arange(200))
    out = get("nab").defend(data=w.poisoned, clean=clean, build=w.build, train_cfg=w.cfg, seed=0)
    acc, asr = w.scores(out.model)
    assert out.details["flagged"] == 63 and out.details["relabelled"] >= 50
    assert w.plain[1] > 0.95 and asr < 0.1
    assert acc >= w.plain[0] - 0.12   # every input carries the defensive 2x2 patch: a quarter of an 8x8 digit's corner


def test_every_draw_is_made_on_the_cpu_and_moved():
    details = runs_on_meta_default("nab", size=2, isolation_ratio=0.25, labeller_epochs=1)
    assert details["flagged"] == 2
