"""NEO: the dominant colour, the block positions and a hand-made trojaned model's restored prediction by hand; on a
digits backdoor triggered inputs are flagged and restored, a clean model flags almost nothing; through
input_filter the ASR falls; bad parameters refused."""

import pytest
import torch

from defend_support import accuracy
from inspect_support import digits_pair
from poisonlab.defend import get as get_defense
from poisonlab.defend.evaluate import backdoor_scores
from poisonlab.defend.base import Defended
from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.neo import block_positions, dominant_colour, occlude
from poisonlab.errors import ConfigError
from poisonlab.rng import generator
from poisonlab.training import predict
from test_detect_common import TARGET, single_thread, stamp  # noqa: F401 (autouse)
from test_detect_strip import trojaned_linear_model

NEO = {"block": 3, "stride": 2}   # covers the 2x2 corner trigger of the digits world whole (3 - 2 + 1 = 2)


def test_dominant_colour_and_positions_by_hand():
    x = torch.tensor([[[[0.2, 0.2, 0.9], [0.21, 0.5, 0.2]]]])    # 0.2 and 0.21 share a bin of 16 levels (3/15)
    assert dominant_colour(x, 16).tolist() == [[pytest.approx((0.2 + 0.2 + 0.21 + 0.2) / 4)]]
    assert block_positions(5, 5, 3, 2) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    assert block_positions(6, 4, 3, 2) == [(0, 0), (0, 1), (2, 0), (2, 1), (3, 0), (3, 1)]  # last row/column added
    assert occlude(torch.zeros(1, 1, 3, 3), torch.ones(1, 1), 1, 1, 2).flatten().tolist() == [0, 0, 0, 0, 1, 1, 0, 1, 1]


def test_trojaned_pixel_is_found_and_the_prediction_restored():
    # STRIP's hand-made backdoor (tests/test_detect_strip.py): pixel (3, 3) sends a linear model to class 0
    model = trojaned_linear_model()
    x = 0.1 + 0.4 * torch.rand(60, 1, 4, 4, generator=generator(0, "neo-test"))
    x[..., :2, :] = 0.0                  # half the pixels black: the dominant colour is black
    x[..., 3, 3] = 0.0
    clean, held = x[:40], x[40:]
    trig = held.clone()
    trig[..., 3, 3] = 1.0
    det = get("neo", block=1, stride=1, confirm_images=10).scan(data=torch.cat([held, trig]), model=model, clean=clean)
    moved = (predict(model, held) != 0).tolist()     # triggered inputs whose class the trigger changes
    assert sum(moved) >= 15 and det.flagged[20:].tolist() == moved
    assert [b for b, m in zip(det.details["block_at"][20:], moved) if m] == [[3, 3]] * sum(moved)
    # restored = the prediction with pixel (3, 3) painted in the input's dominant colour
    by_hand = predict(model, occlude(trig, dominant_colour(trig), 3, 3, 1))
    assert det.details["restored"][20:] == by_hand.tolist() == predict(model, held).tolist()   # 0 where not moved


def test_flags_and_restores_the_digits_backdoor_and_passes_a_clean_model():
    clean, test_set, bad, good = digits_pair()
    keep = test_set.y != TARGET
    x = torch.cat([test_set.x, stamp(test_set.x[keep])])
    truth = torch.cat([torch.zeros(len(test_set), dtype=torch.bool), torch.ones(int(keep.sum()), dtype=torch.bool)])
    det = get("neo", **NEO).scan(data=x, model=bad, clean=clean)
    ev = evaluate_detection(det, truth)
    assert ev.tpr >= 0.9 and ev.fpr <= 0.08                            # measured: 0.983 at 0.038
    restored = torch.tensor(det.details["restored"][len(test_set):])
    assert (restored == test_set.y[keep]).float().mean() >= 0.7      # measured: 0.77 (the model's ASR: 0.986)
    assert get("neo", **NEO).scan(data=x, model=good, clean=clean).flagged.float().mean() <= 0.03   # measured 0.002


def test_input_filter_with_neo_refuses_triggered_inputs():
    clean, test_set, bad, _ = digits_pair()
    held = test_set.subset(torch.arange(150))
    trig = held.replace(x=stamp(held.x))
    out = get_defense("input_filter", detector={"name": "neo", "params": NEO}).defend(model=bad, clean=clean)
    before, after = backdoor_scores(Defended(bad), held, trig, TARGET), backdoor_scores(out, held, trig, TARGET)
    assert before.attack_success_rate > 0.95 and after.attack_success_rate <= 0.05
    assert after.clean_accuracy >= accuracy(bad, held) - 0.08


def test_bad_parameters():
    with pytest.raises(ConfigError, match="block=0"):
        get("neo", block=0)
    with pytest.raises(ConfigError, match="confirm=0"):
        get("neo", confirm=0)
    with pytest.raises(ConfigError, match="levels=1"):
        get("neo", levels=1)
