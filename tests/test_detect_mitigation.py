"""Mitigation: every function returns a new model and leaves the caller's model untouched."""

import torch

from poisonlab.detect.mitigation import fine_prune, prune_neurons, prune_trigger_neurons, retrain_without, robust_training, unlearn
from poisonlab.models import linear_head
from poisonlab.training import TrainConfig, predict
from test_detect_common import TARGET, backdoor_world, one_thread, stamp, single_thread  # noqa: F401 (autouse)


def asr(model, test_set):
    keep = test_set.y != TARGET
    return float((predict(model, stamp(test_set.x[keep])) == TARGET).float().mean())


def test_prune_neurons_zeroes_head_columns_on_a_copy():
    _, _, _, bad, _ = backdoor_world()
    pruned = prune_neurons(bad, torch.tensor([0, 3]))
    assert linear_head(pruned)[1].weight[:, [0, 3]].abs().sum() == 0
    assert linear_head(bad)[1].weight[:, [0, 3]].abs().sum() > 0


def test_retrain_without_the_poison_removes_the_backdoor():
    poisoned, mask, test_set, bad, _ = backdoor_world()
    cfg = TrainConfig(epochs=6, batch_size=32, lr=0.05)
    with one_thread():
        fresh = retrain_without(poisoned, mask, "cnn", cfg, channels=(8, 16), hidden=32)
    assert asr(bad, test_set) > 0.9 and asr(fresh, test_set) < 0.1


def test_unlearning_and_pruning_with_the_true_trigger_and_fine_pruning():
    poisoned, mask, test_set, bad, _ = backdoor_world()
    clean = poisoned.subset(~mask)
    trig_mask = torch.zeros(1, 8, 8)
    trig_mask[:, 6:, 6:] = 1.0
    before = [p.clone() for p in bad.parameters()]
    with one_thread():
        unlearned = unlearn(bad, clean, trig_mask, torch.ones(1, 8, 8), cfg=TrainConfig(epochs=2, lr=0.01))
        pruned = prune_trigger_neurons(bad, clean, trig_mask, torch.ones(1, 8, 8), fraction=0.5)
        fp = fine_prune(bad, clean, fraction=0.5, cfg=TrainConfig(epochs=1, lr=0.01))
        robust = robust_training(poisoned, stamp, share=0.5, model="cnn", cfg=TrainConfig(epochs=4, batch_size=32),
                                 channels=(8, 16), hidden=32)
    assert asr(unlearned, test_set) < 0.2 < asr(bad, test_set)
    assert asr(pruned, test_set) < asr(bad, test_set)
    assert linear_head(fp)[1].weight.eq(0).all(dim=0).sum() >= 16  # half of 32 neurons stay pruned
    assert asr(robust, test_set) < asr(bad, test_set)
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))
