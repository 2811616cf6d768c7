"""Backdoor targets: all-to-one, all-to-all (y -> y + 1 mod C) and per-source, in one poison entry, end to end."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.metrics import attack_success_rate
from poisonlab.poison.registry import make_poison
from poisonlab.poison.targets import asr_target, attacked_classes, normalise_target, target_map


def _backdoor(**params):
    return make_poison({"name": "backdoor", "params": {"trigger": "patch", **params}})


def test_target_maps_by_hand():
    assert target_map(2, 4) == (2, 2, -1, 2)
    assert target_map("all_to_all", 4) == (1, 2, 3, 0)
    assert target_map({3: 0, "1": 2}, 4) == (-1, 2, -1, 0)
    assert target_map(2, 4, sources=[0]) == (2, -1, -1, -1)
    assert attacked_classes((1, 2, 3, 0)).all() and attacked_classes((-1, 2, -1, 0)).tolist() == [True, False, True, False]


def test_asr_with_a_target_map_counts_each_class_against_its_own_target():
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    pred = torch.tensor([1, 2, 0, 0, 0, 2])  # hits: rows 0, 1, 3, 5 (class 2 -> 3 missed, row 4 missed)
    assert attack_success_rate(pred, y, (1, 2, 3, 0)) == pytest.approx(4 / 6)
    # per-source {0: 1}: only class-0 inputs count (rows 0 and 4), one hit
    assert attack_success_rate(pred, y, (1, -1, -1, -1)) == pytest.approx(1 / 2)
    # the single-target form is unchanged: inputs of class 0 excluded, 2 of 4 predicted 0
    assert attack_success_rate(pred, y, 0) == pytest.approx(2 / 4)


def test_art_all_to_all_setting_is_one_poison_entry(digits):
    """ART's example: every class shifted by one, a third of each class poisoned."""
    p = _backdoor(target="all_to_all", rate=1 / 3, per_class=True)
    out = p.apply(digits, seed=4)
    m = out.mask
    assert torch.equal(out.data.y[m], (digits.y[m] + 1) % 10) and torch.equal(out.data.y[~m], digits.y[~m])
    for c in range(10):
        members = int((digits.y == c).sum())
        assert int(((digits.y == c) & m).sum()) == round(members / 3)
    assert torch.equal(digits.y, digits.y.clone()) and out.info["target"] == "all_to_all"
    assert asr_target(p, 10) == (1, 2, 3, 4, 5, 6, 7, 8, 9, 0)


def test_per_source_targets_relabel_each_source_and_count_its_flips(digits):
    p = _backdoor(target={3: 5, 7: 1}, rate=0.1)
    out = p.apply(digits, seed=0)
    src = digits.y[out.mask]
    assert set(src.tolist()) <= {3, 7} and len(src) == round(0.1 * len(digits))
    assert torch.equal(out.data.y[out.mask], torch.where(src == 3, 5, 1))
    assert p.flip_pairs == ((3, 5), (7, 1)) and out.info["target"] == {"3": 5, "7": 1}


def test_all_to_one_is_unchanged(digits):
    p = _backdoor(target=2, rate=0.05)
    out = p.apply(digits, seed=0)
    assert (out.data.y[out.mask] == 2).all() and (digits.y[out.mask] != 2).all()
    assert asr_target(p, 10) == 2


@pytest.mark.parametrize("target,msg", [
    ("shift", "target='shift' is not valid; accepted: a class index, 'all_to_all', 'parity', 'upper_half', or {source: target}"),
    ({3: 3}, "target maps class 3 to itself"),
    ({}, "maps no class"),
    ({"a": 1}, "maps non-integers"),
    (True, "target=True is not valid"),
])
def test_bad_targets_are_one_line_errors(target, msg):
    with pytest.raises(ConfigError, match=msg.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(").replace(")", r"\)")):
        normalise_target(target)


def test_bad_classes_and_per_class_without_rate_are_refused(digits):
    with pytest.raises(ConfigError, match="class 12 is not a class of 'digits'"):
        _backdoor(target={3: 12}, rate=0.1).apply(digits)
    with pytest.raises(ConfigError, match="per_class: true needs rate"):
        _backdoor(target="all_to_all", count=10, per_class=True)


ALL_TO_ALL = {"name": "backdoor", "params": {"trigger": {"name": "patch", "params": {"size": 3}},
                                           "target": "all_to_all", "rate": 0.3, "per_class": True}}


def test_all_to_all_runs_end_to_end_centralized_and_the_model_learns_the_shift():
    from poisonlab.config.load import parse
    from poisonlab.experiment import run_experiment

    doc = {"seed": 0, "data": {"dataset": "digits"}, "model": {"name": "mlp"}, "train": {"epochs": 30},
           "poison": [ALL_TO_ALL]}
    final = run_experiment(parse(doc), quiet=True)["final"]
    assert final["attack_success_rate"] > 0.5, final  # chance is 0.1: the shift y -> y + 1 was learned


def test_all_to_all_runs_federated_with_a_per_class_asr():
    from poisonlab.config.load import parse
    from poisonlab.experiment import run_experiment

    doc = {"seed": 0, "data": {"dataset": "digits"}, "model": {"name": "mlp"},
           "federated": {"rounds": 2, "clients": 4, "local": {"epochs": 1},
                         "adversary": {"clients": 1, "poison": ALL_TO_ALL}}}
    metrics = run_experiment(parse(doc), quiet=True)
    assert 0.0 <= metrics["final"]["attack_success_rate"] <= 1.0
