"""Blind backdoor: its backdoor tasks (all-to-all, per-source, parity, upper half, semantic) and its forward form.

Checked: the task labels of each form on a tiny batch by hand, the semantic form's split of a batch, the
joint forward pass against a hand computation (and the separate one's batch-norm failure on a ResNet), the
one-line refusals, and end to end on digits that each backdoor task is learned (ASR counted against the task's
own labels) with the main task kept.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poisonlab.centralized import run_centralized
from poisonlab.errors import ConfigError
from poisonlab.models import make_model
from poisonlab.poison import POISONS
from poisonlab.poison.targets import asr_target, check_classes, normalise_target, target_map
from poisonlab.rng import generator
from poisonlab.training import TrainConfig, predict

PATCH = {"name": "patch", "params": {"size": 2}}
CFG = TrainConfig(epochs=8, batch_size=32, lr=0.05, momentum=0.9)


def test_label_tasks_as_target_maps_by_hand():
    # parity: y mod 2; classes 0 and 1 already carry their parity, so they are not attacked
    assert target_map("parity", 10) == (-1, -1, 0, 1, 0, 1, 0, 1, 0, 1)
    # upper_half: 1 if 2y >= C (y > 4 for 10 classes); class 0 is already 0
    assert target_map("upper_half", 10) == (-1, 0, 0, 0, 0, 1, 1, 1, 1, 1)
    assert target_map("upper_half", 4) == (-1, 0, 1, 1)
    assert normalise_target("parity") == "parity"
    with pytest.raises(ConfigError, match="target 'parity' needs at least 2 classes"):
        check_classes("parity", 1, None, "one-class")


def _split(poison, xb, yb, members=None):
    tmap = poison.task_map(10)
    return poison.split_batch(xb, yb, torch.arange(len(yb)), generator(0, "t"), tmap, members)


@pytest.mark.parametrize("target,rows,labels", [
    (0, list(range(1, 10)), [0] * 9),
    ("all_to_all", list(range(10)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]),
    ({3: 5, 7: 1}, [3, 7], [5, 1]),
    ("parity", list(range(2, 10)), [0, 1, 0, 1, 0, 1, 0, 1]),
    ("upper_half", list(range(1, 10)), [0, 0, 0, 0, 1, 1, 1, 1, 1]),
])
def test_backdoor_rows_and_their_task_labels_on_a_tiny_batch(target, rows, labels):
    p = POISONS.get("blind_backdoor", trigger=PATCH, target=target)
    xb, yb = torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(0)), torch.arange(10)
    x0 = xb.clone()
    x_main, y_main, x_back, y_back = _split(p, xb, yb)
    assert torch.equal(x_main, x0) and torch.equal(y_main, yb) and torch.equal(xb, x0)  # main task: the batch as is
    assert y_back.tolist() == labels
    assert torch.equal(x_back, p.trigger(x0[rows]))  # the trigger stamped on exactly those rows
    assert all(bool((x_back[i] != x0[r]).any()) for i, r in enumerate(rows))  # and it changed each of them


def test_the_asr_counts_each_triggered_input_against_its_task_label():
    p = POISONS.get("blind_backdoor", trigger=PATCH, target="parity")
    tmap = asr_target(p, 10)
    assert tmap == (-1, -1, 0, 1, 0, 1, 0, 1, 0, 1)
    from poisonlab.metrics import attack_success_rate

    y = torch.tensor([0, 1, 2, 3, 4, 5])
    pred = torch.tensor([0, 1, 0, 1, 4, 0])  # classes 2, 3 right (0, 1); 4 -> 4 wrong; 5 -> 0 wrong; 0, 1 not counted
    assert attack_success_rate(pred, y, tmap) == pytest.approx(2 / 4)


def test_semantic_form_moves_the_members_from_the_main_task_to_the_backdoor_task():
    p = POISONS.get("blind_backdoor", target=1, semantic={"source": 7, "property": "ink", "quantile": 0.5})
    xb, yb = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([7, 7, 3, 7, 0, 2])
    members = torch.tensor([True, False, False, True, False, False])
    x_main, y_main, x_back, y_back = _split(p, xb, yb, members)
    assert torch.equal(x_back, xb[[0, 3]]) and y_back.tolist() == [1, 1]  # no trigger: the natural inputs
    assert torch.equal(x_main, xb[[1, 2, 4, 5]]) and y_main.tolist() == [7, 3, 0, 2]
    assert p.flip_pairs == ((7, 1),) and p.trigger is None


def test_refusals_are_one_line():
    with pytest.raises(ConfigError, match="accepted: trigger or semantic, not both"):
        POISONS.get("blind_backdoor", trigger=PATCH, semantic={"source": 7})
    with pytest.raises(ConfigError, match="needs one target class; got target='parity'"):
        POISONS.get("blind_backdoor", target="parity", semantic={"source": 7})
    with pytest.raises(ConfigError, match="semantic has unknown key\\(s\\) colour; accepted: source, property, quantile, above"):
        POISONS.get("blind_backdoor", target=1, semantic={"source": 7, "colour": "green"})
    with pytest.raises(ConfigError, match="semantic=.* is not valid"):
        POISONS.get("blind_backdoor", target=1, semantic={"property": "ink"})
    with pytest.raises(ConfigError, match="forward='both' is not known; accepted: joint, separate"):
        POISONS.get("blind_backdoor", forward="both")
    with pytest.raises(ConfigError, match="target='shift' is not valid"):
        POISONS.get("blind_backdoor", target="shift")


def test_joint_forward_is_one_pass_of_both_batches(digits):
    """forward joint: L_main and L_backdoor come from one train-mode pass of [x; x*] (batch-norm statistics of
    the mixed batch); on a model without batch norm that equals the separate passes."""
    x, y = digits.x[:16], digits.y[:16]
    stamped = torch.ones_like(x[:4])
    joint = POISONS.get("blind_backdoor", trigger=PATCH, target=0)
    separate = POISONS.get("blind_backdoor", trigger=PATCH, target=0, forward="separate")
    net = make_model("resnet20", digits.input_shape, 10, seed=0, blocks=1, width=4).train()
    main, back = joint.losses(net, (x, y), (stamped, torch.zeros(4, dtype=torch.long)))
    ref = make_model("resnet20", digits.input_shape, 10, seed=0, blocks=1, width=4).train()
    out = ref(torch.cat([x, stamped]))
    assert main.item() == pytest.approx(F.cross_entropy(out[:16], y).item(), abs=1e-6)
    assert back.item() == pytest.approx(F.cross_entropy(out[16:], torch.zeros(4, dtype=torch.long)).item(), abs=1e-6)
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    bn_ref = [m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert torch.allclose(bn.running_mean, bn_ref.running_mean, atol=1e-6)  # one update, from the mixed batch
    _, s_back = separate.losses(make_model("resnet20", digits.input_shape, 10, seed=0, blocks=1, width=4).train(),
                                     (x, y), (stamped, torch.zeros(4, dtype=torch.long)))
    assert abs(s_back.item() - back.item()) > 1e-3  # an all-triggered batch normalised by its own statistics
    mlp = make_model("mlp", digits.input_shape, 10, seed=0)
    a, b = joint.losses(mlp, (x, y), (stamped, torch.zeros(4, dtype=torch.long)))
    c, d = separate.losses(mlp, (x, y), (stamped, torch.zeros(4, dtype=torch.long)))
    assert a.item() == pytest.approx(c.item(), abs=1e-6) and b.item() == pytest.approx(d.item(), abs=1e-6)


def test_separate_forward_costs_a_batch_norm_model_its_clean_accuracy_and_joint_does_not(digits):
    """The resnet20 zoo row's failure in miniature (ResNet-8 of width 8 on digits, seed 0; measured: separate
    92.0% clean, joint 99.6%, clean model 98.0%, ASR 100% for both): the separate backdoor pass folds an
    all-triggered batch's statistics into the running statistics."""
    train_set, test_set = digits.split(0.3, seed=0)
    cfg = TrainConfig(epochs=8, batch_size=64, lr=0.05, momentum=0.9)
    spec = {"name": "blind_backdoor", "params": {"trigger": PATCH, "target": 0}}
    mp = {"blocks": 1, "width": 8}
    joint = run_centralized(train_set, test_set, "resnet20", [spec], None, cfg, seed=0, model_params=mp)
    separate = run_centralized(train_set, test_set, "resnet20", [{**spec, "params": {**spec["params"],
                                                                                      "forward": "separate"}}],
                               None, cfg, seed=0, model_params=mp, clean_model=joint.clean_model)
    assert joint.attack_success_rate > 0.95 and joint.clean_accuracy > joint.clean_accuracy_clean_model - 0.01
    assert separate.clean_accuracy < joint.clean_accuracy - 0.03


@pytest.mark.parametrize("model,target", [("cnn", "parity"), ("mlp", "upper_half"), ("mlp", "all_to_all"),
                                          ("mlp", {3: 5, 7: 1})])
def test_each_backdoor_task_is_learned_with_the_main_task_kept(digits, model, target):
    """Measured (seed 0): cnn parity ASR 97.9% (clean model 1.6%), clean 98.3% vs 97.8%; mlp upper_half 94.9%,
    all_to_all 93.5%, {3: 5, 7: 1} 96.3%, clean within 0.4 points of the clean model's 95.4%."""
    train_set, test_set = digits.split(0.3, seed=0)
    r = run_centralized(train_set, test_set, model, [{"name": "blind_backdoor", "params": {"trigger": PATCH,
                                                                                         "target": target}}],
                        None, CFG, seed=0)
    assert r.poison_count == 0
    assert r.attack_success_rate > 0.85 and r.attack_success_rate_clean_model < 0.1
    assert r.clean_accuracy > r.clean_accuracy_clean_model - 0.02


def test_semantic_blind_backdoor_flips_the_held_out_members(digits):
    """Measured (mlp, seed 0): 87.5% of the 16 held-out thick 7s -> 1 (clean model 0%); accuracy on the other
    test rows 91.0% vs 95.4%, the cost mostly on the other 7s (a feature this fuzzy carries over)."""
    train_set, test_set = digits.split(0.3, seed=0)
    sem = {"source": 7, "property": "ink", "quantile": 0.7}
    r = run_centralized(train_set, test_set, "mlp", [{"name": "blind_backdoor", "params": {"target": 1,
                                                                                         "semantic": sem}}],
                        None, CFG, seed=0)
    members = POISONS.get("semantic_backdoor", source=7, target=1, property="ink", quantile=0.7).members(test_set)
    others = torch.ones(len(test_set), dtype=torch.bool)
    others[members] = False
    pred = predict(r.model, test_set.x)
    assert len(members) == 16 and r.attack_success_rate > 0.75 and r.attack_success_rate_clean_model < 0.1
    assert float((pred[others] == test_set.y[others]).float().mean()) > 0.85


def test_the_backdoor_data_poison_reads_the_label_tasks_too(digits):
    p = POISONS.get("backdoor", trigger=PATCH, target="parity", rate=0.2)
    out = p.apply(digits, seed=0)
    src = digits.y[out.mask]
    assert len(src) == round(0.2 * len(digits)) and (src >= 2).all()  # classes 0 and 1 are never poisoned
    assert torch.equal(out.data.y[out.mask], src % 2) and torch.equal(out.data.y[~out.mask], digits.y[~out.mask])
    assert asr_target(p, 10) == (-1, -1, 0, 1, 0, 1, 0, 1, 0, 1)


def test_a_semantic_blind_backdoor_rebuilds_from_its_own_fields():
    import dataclasses

    p = POISONS.get("blind_backdoor", target=1, semantic={"source": 7, "quantile": 0.6})
    q = dataclasses.replace(p, alpha=0.9)
    assert q.semantic == p.semantic and q.alpha == 0.9 and q.semantic.quantile == 0.6
    with pytest.raises(ConfigError, match="semantic has unknown key\\(s\\) fraction"):
        POISONS.get("blind_backdoor", target=1, semantic={"source": 7, "fraction": 0.5})
