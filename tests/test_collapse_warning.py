"""A model whose training collapsed (one class for nearly every input, no NaN) is named as such: its ~100% ASR
toward that class measures the collapse, not a backdoor (divergence.collapse_warning)."""

import torch
from torch import nn

from poisonlab.centralized import run_centralized
from poisonlab.divergence import collapse_warning


def test_collapse_is_one_class_for_nine_tenths_of_a_balanced_test_set():
    balanced_collapsed = [[10, 0, 0], [9, 1, 0], [10, 0, 0]]  # 29 of 30 predicted 0: 97%
    assert collapse_warning(balanced_collapsed, "poisoned model") == (
        "the poisoned model predicts class 0 for 97% of the clean test inputs (clean accuracy 36.7%): its training"
        " collapsed, so an attack success rate toward class 0 measures the collapse, not a backdoor")
    assert collapse_warning([[10, 0, 0], [2, 8, 0], [1, 0, 9]], "m") is None  # a working model
    assert collapse_warning([[8, 1, 1], [9, 1, 0], [9, 0, 1]], "m") is None  # 26/30 = 87% < 90%
    assert collapse_warning([[90, 0], [10, 0]], "m") is None  # class 0 is 90% of the test set: predicting it is not a collapse
    assert collapse_warning([[0, 0], [0, 0]], "m") is None


class Constant(nn.Module):
    """Logits that favour class 0 for every input, whatever training does at lr 1e-9."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))
        with torch.no_grad():
            self.bias[0] = 5.0

    def forward(self, x):
        return self.bias + 0 * x.flatten(1).sum(1, keepdim=True)


def test_run_centralized_says_when_both_models_collapsed(digits):
    train_set, test_set = digits.split(0.3, seed=0)
    poison = {"name": "backdoor", "params": {"trigger": {"name": "patch", "params": {"size": 2}}, "target": 0,
                                             "rate": 0.1}}
    r = run_centralized(train_set, test_set, Constant, [poison], train_cfg={"epochs": 1, "lr": 1e-9}, seed=0)
    assert r.attack_success_rate == 1.0  # every triggered input lands in class 0 ...
    assert [w.split(" predicts")[0] for w in r.warnings] == ["the poisoned model", "the clean model"]  # ... and is named
    assert "warnings" in r.to_dict()


def test_a_working_model_has_no_collapse_warning(digits):
    train_set, test_set = digits.split(0.3, seed=0)
    poison = {"name": "backdoor", "params": {"trigger": {"name": "patch", "params": {"size": 2}}, "target": 0,
                                             "rate": 0.1}}
    r = run_centralized(train_set, test_set, "mlp", [poison], train_cfg={"epochs": 3}, seed=0)
    assert r.clean_accuracy > 0.8 and r.warnings == []
