"""Attacks that control training: blind backdoor (MGDA-balanced loss poisoning) and adversarial embedding.

Checked: MGDA's two-task weight against its closed form and a brute-force minimum, the losses by hand, the
centralized pipeline calling a poison's train_model hook (and its plain path unchanged for other poisons).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poisonlab.centralized import run_centralized
from poisonlab.errors import ConfigError
from poisonlab.models import make_model
from poisonlab.poison import POISONS
from poisonlab.poison.adversarial_embedding import discriminator, embedding_loss
from poisonlab.poison.blind_backdoor import mgda_two_tasks, mgda_weight
from poisonlab.training import TrainConfig, train

CFG = TrainConfig(epochs=2, batch_size=64, lr=0.05, momentum=0.9)
PATCH = {"name": "patch", "params": {"size": 2}}


# ---------------------------------------------------------------- MGDA
def test_mgda_two_tasks_by_hand_and_against_a_grid():
    g1, g2 = [torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 2.0])]
    # ((g2 - g1) . g2) / ||g1 - g2||^2 = (0 + 4) / (1 + 4) = 0.8
    assert mgda_two_tasks(g1, g2) == pytest.approx(0.8)
    a = torch.linspace(0, 1, 10001)
    norms = ((a[:, None] * g1[0] + (1 - a[:, None]) * g2[0]) ** 2).sum(1)
    assert float(a[norms.argmin()]) == pytest.approx(0.8, abs=1e-4)
    # clamped: g1 = (1, 0), g2 = (2, 0): the raw value (2 - 1) * 2 / 1 = 2 -> 1 (all weight on the smaller g1)
    assert mgda_two_tasks([torch.tensor([1.0, 0.0])], [torch.tensor([2.0, 0.0])]) == 1.0
    assert mgda_two_tasks([torch.tensor([3.0])], [torch.tensor([1.0])]) == 0.0
    assert mgda_two_tasks([torch.tensor([1.0])], [torch.tensor([1.0])]) == 0.5  # equal: every alpha is optimal
    # a gradient split over two parameter tensors is the same as the concatenated vector
    assert mgda_two_tasks([torch.tensor([1.0]), torch.tensor([0.0])], [torch.tensor([0.0]), torch.tensor([2.0])]) \
        == pytest.approx(0.8)


def test_blind_backdoor_leaves_the_data_and_refuses_bad_values(digits):
    p = POISONS.get("blind_backdoor", trigger=PATCH, target=3)
    x0 = digits.x.clone()
    out = p.apply(digits, seed=0)
    assert out.count == 0 and torch.equal(out.data.x, x0) and torch.equal(out.data.y, digits.y)
    assert torch.equal(digits.x, x0) and p.trains_model and p.has_trigger
    with pytest.raises(ConfigError, match="normalize='l3' is not known; accepted: loss, l2, loss\\+, none"):
        POISONS.get("blind_backdoor", normalize="l3")
    with pytest.raises(ConfigError, match="alpha=1.5 is out of range"):
        POISONS.get("blind_backdoor", alpha=1.5)
    with pytest.raises(ConfigError, match="target=12 is not a class"):
        POISONS.get("blind_backdoor", target=12).apply(digits)


def test_blind_backdoor_step_sets_the_mgda_combination_of_both_gradients(digits):
    """One step of train_model on one batch: the parameters move by -lr (alpha g_main + (1 - alpha) g_back).

    The losses here come from two forward passes; the default joint pass of [x; x*] is the same computation
    on a model without batch norm (the mlp).
    """
    p = POISONS.get("blind_backdoor", trigger=PATCH, target=0)
    model = make_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    before = [q.detach().clone() for q in model.parameters()]
    batch = digits.subset(torch.arange(32))
    from poisonlab.rng import generator

    order = torch.randperm(32, generator=generator(0, "batches", 0))  # the loop's batch order (one batch)
    xb, yb = batch.x[order], batch.y[order]
    keep = yb != 0
    stamped = p.trigger(xb[keep], generator(0, "blind-backdoor", 0))
    params = list(model.parameters())
    main = F.cross_entropy(model(xb), yb)
    back = F.cross_entropy(model(stamped), torch.zeros(int(keep.sum()), dtype=torch.long))
    gm, gb = torch.autograd.grad(main, params), torch.autograd.grad(back, params)
    main, back = main.detach(), back.detach()
    # backdoors101's 'loss' normaliser: each gradient divided by its loss (at most 10) before MGDA
    a = mgda_two_tasks([g / (float(main) + 1e-5) for g in gm], [g / (float(back) + 1e-5) for g in gb])
    assert 0.001 < a < 0.999 and a == pytest.approx(mgda_weight("loss", (main, back), (list(gm), list(gb))))
    p.train_model(model, p.apply(batch), TrainConfig(epochs=1, batch_size=32, lr=0.1, momentum=0.0), seed=0)
    for q, q0, x, y in zip(model.parameters(), before, gm, gb):
        assert torch.allclose(q.detach(), q0 - 0.1 * (a * x + (1 - a) * y), atol=1e-6)


def test_blind_backdoor_through_the_pipeline_plants_the_backdoor_without_poisoning_data(digits):
    train_set, test_set = digits.split(0.3, seed=0)
    r = run_centralized(train_set, test_set, "mlp", [{"name": "blind_backdoor", "params": {"trigger": PATCH,
                                                                                         "target": 0}}],
                        None, TrainConfig(epochs=8, batch_size=32, lr=0.05, momentum=0.9), seed=0)
    assert r.poison_count == 0
    assert r.attack_success_rate > 0.9 > r.attack_success_rate_clean_model
    assert r.clean_accuracy > r.clean_accuracy_clean_model - 0.05


def test_a_training_attack_refuses_fine_tune_injection(digits):
    train_set, test_set = digits.split(0.3, seed=0)
    with pytest.raises(ConfigError, match="trains the model itself; accepted: injection mode concat"):
        run_centralized(train_set, test_set, "mlp", [{"name": "blind_backdoor", "params": {}}],
                        {"mode": "fine_tune"}, CFG, seed=0)


def test_two_training_attacks_are_refused(digits):
    train_set, test_set = digits.split(0.3, seed=0)
    with pytest.raises(ConfigError, match="blind_backdoor, adversarial_embedding each train the model"):
        run_centralized(train_set, test_set, "mlp", [{"name": "blind_backdoor", "params": {}},
                                                     {"name": "adversarial_embedding", "params": {}}], None, CFG, seed=0)


def test_the_plain_path_is_unchanged_for_a_data_poison(digits):
    """run_centralized's poisoned model for an ordinary poison is exactly training.train on the poisoned set."""
    train_set, test_set = digits.split(0.3, seed=0)
    spec = {"name": "backdoor", "params": {"trigger": PATCH, "target": 0, "rate": 0.1}}
    r = run_centralized(train_set, test_set, "mlp", [spec], None, CFG, seed=0)
    plain = make_model("mlp", train_set.input_shape, train_set.num_classes, seed=0)
    train(plain, r.poisoned.data, CFG, seed=0)
    for a, b in zip(r.model.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- Adversarial embedding
def test_embedding_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y, b = torch.tensor([0, 1]), torch.tensor([0, 1])
    ce = (-torch.log_softmax(logits, 1)[0, 0] - torch.log_softmax(logits, 1)[1, 1]) / 2
    ce_d = (torch.log(torch.tensor(2.0)) + (-torch.log_softmax(d, 1)[1, 1])) / 2
    assert float(embedding_loss(logits, y, d, b, 10.0)) == pytest.approx(float(ce - 10 * ce_d), rel=1e-6)


def test_discriminator_is_seeded_and_shaped():
    a, b = discriminator(7, (5, 3), seed=1), discriminator(7, (5, 3), seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert [m.out_features for m in a if isinstance(m, torch.nn.Linear)] == [5, 3, 2]
    assert not torch.equal(discriminator(7, (5, 3), seed=2)[0].weight, a[0].weight)


def test_adversarial_embedding_poisons_like_badnets_and_validates(digits):
    p = POISONS.get("adversarial_embedding", trigger=PATCH, target=0, rate=0.1)
    bd = POISONS.get("backdoor", trigger=PATCH, target=0, rate=0.1).apply(digits, seed=4)
    out = p.apply(digits, seed=4)
    assert torch.equal(out.mask, bd.mask) and torch.equal(out.data.x, bd.data.x) and torch.equal(out.data.y, bd.data.y)
    assert out.info["attack"] == "adversarial_embedding"
    with pytest.raises(ConfigError, match="hidden=\\[0\\] is not valid"):
        POISONS.get("adversarial_embedding", hidden=[0])
    with pytest.raises(ConfigError, match="regularization"):
        POISONS.get("adversarial_embedding", regularization=-1)


def test_adversarial_embedding_trains_through_the_hook_and_keeps_the_backdoor(digits):
    train_set, test_set = digits.split(0.3, seed=0)
    params = {"trigger": PATCH, "target": 0, "rate": 0.1}
    cfg = TrainConfig(epochs=8, batch_size=32, lr=0.05, momentum=0.9)
    r = run_centralized(train_set, test_set, "mlp", [{"name": "adversarial_embedding",
                                                      "params": {**params, "regularization": 1.0}}], None, cfg, seed=0)
    plain = run_centralized(train_set, test_set, "mlp", [{"name": "backdoor", "params": params}], None, cfg, seed=0,
                            clean_model=r.clean_model)
    assert torch.equal(r.poisoned.data.x, plain.poisoned.data.x)  # the same poisoned set, trained differently:
    assert not all(torch.equal(a, b) for a, b in zip(r.model.parameters(), plain.model.parameters()))
    assert r.attack_success_rate > 0.8 and r.clean_accuracy > 0.85
    # the point of the attack: the poisoned rows' latents move toward the clean target-class latents
    # (measured here: BadNets 1.23, adversarial embedding 0.72)
    assert latent_separation(r) < 0.8 * latent_separation(plain)


def latent_separation(result) -> float:
    """Distance between the mean features of poisoned rows and of clean target-class rows, over the mean spread."""
    from poisonlab.models.feature_layer import features

    data, mask = result.poisoned.data, result.poisoned.mask
    f = features(result.model, data.x)
    fp, fc = f[mask], f[(data.y == 0) & ~mask]
    spread = torch.cat([fp - fp.mean(0), fc - fc.mean(0)]).norm(dim=1).mean()
    return float((fp.mean(0) - fc.mean(0)).norm() / spread)


# ---------------------------------------------------------------- through run_experiment
def _doc(poison: dict, **extra) -> dict:
    return {"seed": 0, "device": "cpu", "data": {"dataset": "digits"}, "model": {"name": "cnn"},
            "train": {"epochs": 1, "batch_size": 64}, "poison": [poison], **extra}


@pytest.mark.parametrize("poison", [{"name": "blind_backdoor", "params": {"trigger": PATCH}},
                                    {"name": "adversarial_embedding", "params": {"trigger": PATCH, "hidden": [8]}}])
def test_training_attacks_create_every_tensor_on_the_run_device(poison):
    """Under a meta default device (tests/test_device_discipline.py's check) the attacker's loop runs on the CPU."""
    from tests.test_device_discipline import run_on_meta_default

    metrics = run_on_meta_default(_doc(poison))
    assert metrics["final"]["attack_success_rate"] is not None


def test_a_training_attack_is_refused_as_a_federated_client_poison():
    from poisonlab.config import parse
    from poisonlab.experiment import run_experiment

    fed = {"clients": 4, "rounds": 1, "adversary": {"clients": 1, "poison": {"name": "blind_backdoor", "params": {}}}}
    doc = {"seed": 0, "data": {"dataset": "digits"}, "model": {"name": "mlp"}, "federated": fed}
    with pytest.raises(ConfigError, match="'blind_backdoor' trains the model itself and runs only centralized"):
        run_experiment(parse(doc), quiet=True)
