"""MagNet (Meng & Chen, CCS 2017): the autoencoder's shapes, the reconstruction error and the threshold by hand,
bad parameters and inputs refused, and a patch trigger rejected by the detector at a 1% clean false-positive rate
(the caller's model untouched)."""

import copy

import pytest
import torch
from torch import nn

from poisonlab.defend import Defended, get
from poisonlab.defend.evaluate import backdoor_scores
from poisonlab.defend.magnet import Autoencoder, reconstruction_error
from poisonlab.errors import ConfigError, DataError
from repair2_world import same_state
from test_detect_common import backdoor_world, bars, single_thread, stamp  # noqa: F401 (autouse)


def test_autoencoder_shapes():
    for shape in ((1, 28, 28), (3, 32, 32), (1, 7, 7), (10,)):
        ae = Autoencoder(shape)
        assert ae(torch.rand(2, *shape)).shape == (2, *shape)
    assert [type(m) for m in Autoencoder((1, 8, 8)).encoder] == [nn.Conv2d, nn.Sigmoid, nn.AvgPool2d, nn.Conv2d,
                                                                 nn.Sigmoid]
    with pytest.raises(ConfigError, match="images .* or feature vectors"):
        Autoencoder((2, 3))


def test_reconstruction_error_and_threshold_by_hand():
    half = nn.Identity()
    x = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert reconstruction_error(half, x, 2).tolist() == [0.0, 0.0]
    shrink = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        shrink.weight.copy_(0.5 * torch.eye(2))
    # |x - x/2|^p averaged: row 0 -> (0 + 0.5^p) / 2; row 1 -> 0.25^p
    assert reconstruction_error(shrink, x, 1).tolist() == pytest.approx([0.25, 0.25])
    assert reconstruction_error(shrink, x, 2).tolist() == pytest.approx([0.125, 0.0625])


def test_bad_parameters_and_inputs_are_refused():
    with pytest.raises(ConfigError, match="norm=3"):
        get("magnet", norm=3)
    with pytest.raises(ConfigError, match="val_share=1"):
        get("magnet", val_share=1)
    with pytest.raises(ConfigError, match="leave nothing to do"):
        get("magnet", detect=False, reform=False)
    clean = bars(10, 5)
    with pytest.raises(DataError, match=r"inputs in \[0, 1\]"):
        get("magnet").defend(model=nn.Flatten(), clean=clean.replace(x=clean.x * 3))


def test_the_detector_rejects_a_patch_trigger_at_a_clean_false_positive_rate():
    _, _, test_set, bad, _ = backdoor_world()
    before = copy.deepcopy(bad.state_dict())
    clean = bars(200, 5)
    out = get("magnet", epochs=30).defend(model=bad, clean=clean)
    trig = test_set.replace(x=stamp(test_set.x))
    s, undefended = backdoor_scores(out, test_set, trig, 0), backdoor_scores(Defended(bad), test_set, trig, 0)
    assert undefended.attack_success_rate > 0.95 and s.attack_success_rate < 0.1
    assert s.rejected_triggered > 0.9 and s.rejected_clean < 0.06
    assert s.clean_accuracy >= undefended.clean_accuracy - 0.06
    val_errors = reconstruction_error(out.model.purifier, clean.x, 2)
    assert out.details["threshold"] <= float(val_errors.max())
    assert same_state(before, bad)
