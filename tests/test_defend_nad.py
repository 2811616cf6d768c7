"""NAD (Li et al., ICLR 2021): the attention map and the distillation loss by hand, the caller's model
untouched, bad parameters refused, and the backdoor weakened on the digits patch backdoor."""

import pytest
import torch

from defend_support import accuracy, asr, digits_world, unchanged_after
from poisonlab.defend import get
from poisonlab.defend.nad import attention_loss, attention_map, default_layers
from poisonlab.errors import ConfigError
from poisonlab.models import make_model
from test_detect_common import single_thread  # noqa: F401 (autouse)


def test_attention_map_by_hand():
    # one sample, 2 channels, 1x2 map: channel 0 = [1, 2], channel 1 = [-2, 1]; p = 2: sums [1 + 4, 4 + 1] = [5, 5]
    a = torch.tensor([[[[1.0, 2.0]], [[-2.0, 1.0]]]])
    assert torch.allclose(attention_map(a, 2.0), torch.tensor([[5.0, 5.0]]) / (50 ** 0.5 + 1e-6))
    # p = 1: [3, 3] -> [1, 1] / sqrt(2)
    assert torch.allclose(attention_map(a, 1.0), torch.tensor([[1.0, 1.0]]) / 2 ** 0.5, atol=1e-6)


def test_attention_loss_by_hand():
    s = torch.tensor([[[[1.0, 0.0]]]])       # map [1, 0]
    t = torch.tensor([[[[0.0, 3.0]]]])       # map [9, 0]... normalised [0, 1]
    # maps [1, 0] and [0, 1] (up to the 1e-6): mean squared difference over 2 positions = (1 + 1) / 2 = 1
    assert attention_loss(s, t).item() == pytest.approx(1.0, rel=1e-5)
    assert attention_loss(s, s).item() == 0.0


def test_default_layers_and_bad_params():
    assert default_layers(make_model("resnet20", (1, 8, 8), 3, seed=0, width=4, blocks=1)) == ["layer1", "layer2", "layer3"]
    assert default_layers(make_model("cnn", (1, 8, 8), 3, seed=0)) == ["0", "3"]
    with pytest.raises(ConfigError, match="has no convolutional block"):
        default_layers(make_model("mlp", (1, 8, 8), 3, seed=0))
    with pytest.raises(ConfigError, match="beta=-1"):
        get("nad", beta=-1)
    with pytest.raises(ConfigError, match="layers"):
        get("nad", layers="0")


def test_nad_weakens_the_digits_backdoor_and_keeps_the_callers_model():
    """A narrow result, stated as such: on the digits corner patch the fine-tuned teacher keeps the backdoor
    (clean images are 0 in the corner, so clean fine-tuning never touches the trigger's weights) and NAD
    then works only in a narrow band of beta: 1000 changes nothing, 1200 removes most of the ASR at a cost
    of about 11 points of accuracy, 1500 costs about 22 points (docs/backdoor-defenses.md)."""
    clean, test_set, bad = digits_world()
    out = unchanged_after(get("nad", beta=1200.0), bad, clean=clean)
    assert out.details["layers"] == ["0", "3"]
    before, after = asr(bad, test_set), asr(out.model, test_set)
    assert before > 0.95 and after < 0.5
    assert accuracy(out.model, test_set) > accuracy(bad, test_set) - 0.15


def test_unknown_layer_is_a_one_line_error():
    clean, _, bad = digits_world()
    with pytest.raises(ConfigError, match=r"layers \['nope'\] are not modules of Sequential"):
        get("nad", layers=["nope"], teacher_epochs=1, epochs=1).defend(model=bad, clean=clean)
