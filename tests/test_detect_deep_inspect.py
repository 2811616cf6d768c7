"""DeepInspect: the double MAD test and the conditional generator's input by hand; on a digits backdoor, without any
clean data, the target is the one label flagged and a clean model has none; bad parameters refused."""

import pytest
import torch

from inspect_support import digits_pair
from poisonlab.detect import get
from poisonlab.detect.deep_inspect import ConditionalTrigger, double_mad_factor
from poisonlab.errors import ConfigError, DataError
from test_detect_common import TARGET, single_thread  # noqa: F401 (autouse)


def test_double_mad_by_hand():
    v = torch.tensor([2.0, 9.0, 10.0, 11.0, 30.0, 40.0])
    # median 10 (the lower middle); values <= 10: 2, 9, 10 -> |dev| 8, 1, 0 -> MAD_low 1
    got = double_mad_factor(v)
    assert got.tolist() == pytest.approx([8 / 1.4826, 1 / 1.4826, 0.0, 0.0, 0.0, 0.0])
    # one MAD over all six values (|dev| 8, 1, 0, 1, 20, 30 -> 4.5) would hide the small outlier: 8 / (1.4826 * 4.5) < 2
    assert 8 / (1.4826 * 4.5) < 2 < float(got[0])


def test_generator_sees_noise_and_one_hot_planes():
    net = ConditionalTrigger(channels=1, num_labels=3, noise_channels=2, width=4)
    seen = []
    net.body[0].register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    out = net(torch.zeros(2, 2, 5, 5), torch.tensor([2, 0]))
    assert out.shape == (2, 1, 5, 5) and out.abs().max() <= 1.0             # tanh: an additive trigger in [-1, 1]
    assert seen[0][0, 2:, 0, 0].tolist() == [0, 0, 1] and seen[0][1, 2:, 4, 4].tolist() == [1, 0, 0]


def test_finds_the_digits_backdoor_without_clean_data_and_passes_a_clean_model():
    _, _, bad, good = digits_pair()
    before = [p.clone() for p in bad.parameters()]
    # threshold 3, not the paper's 2, for a margin: measured factors: target 5.9 (next 1.2); clean model at most 1.85
    det_bad = get("deep_inspect", input_shape=(1, 8, 8), threshold=3).scan(model=bad)
    det_good = get("deep_inspect", input_shape=(1, 8, 8), threshold=3).scan(model=good)
    assert det_bad.details["flagged_labels"] == [TARGET]
    assert int(torch.argmin(torch.tensor(det_bad.details["trigger_l1"]))) == TARGET
    assert det_good.details["flagged_labels"] == [] and float(det_good.scores.max()) < 2.5
    assert det_bad.details["inverted_accuracy"] == 1.0 and "note" not in det_bad.details
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))


def test_bad_parameters_and_inputs():
    with pytest.raises(ConfigError, match="shape_weight=-1"):
        get("deep_inspect", shape_weight=-1)
    with pytest.raises(ConfigError, match="per_class=0"):
        get("deep_inspect", per_class=0)
    with pytest.raises(DataError, match="input_shape"):
        get("deep_inspect").scan(model=torch.nn.Linear(2, 2))
