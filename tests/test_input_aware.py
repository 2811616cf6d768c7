"""Input-aware dynamic backdoor (Nguyen and Tran 2020): its losses by hand, the trained generators, the poison."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.poison import POISONS
from poisonlab.poison.input_aware import diversity_loss, mask_norm_loss, stamp

SMALL = dict(epochs=1, mask_epochs=1, width=4, batch=64)


@pytest.fixture(scope="module")
def trained(digits):
    """(poison, its Poisoned result, a copy of the input taken before apply) on sklearn digits."""
    p = POISONS.get("input_aware", target=0, rate=0.1, **SMALL)
    before = digits.x.clone()
    return p, p.apply(digits, 3), before


def test_diversity_loss_by_hand_on_two_pairs():
    # pair 1: RMS(x - x') = 1, RMS(g - g') = 0.5 -> 2; pair 2: RMS(x - x') = 0.5, RMS(g - g') = sqrt(0.5)
    x1 = torch.stack([torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)])
    x2 = torch.stack([torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.5)])
    g1 = torch.zeros(2, 1, 2, 2)
    g2 = torch.stack([torch.full((1, 2, 2), 0.5), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])])
    expected = (1 / 0.5 + 0.5 / 0.5 ** 0.5) / 2
    assert diversity_loss(x1, x2, g1, g2).item() == pytest.approx(expected, rel=1e-6)


def test_mask_norm_loss_and_stamp_by_hand():
    m = torch.tensor([[[[0.0, 0.1], [0.5, 1.0]]]])
    assert mask_norm_loss(m, 0.1).item() == pytest.approx((0 + 0 + 0.4 + 0.9) / 4)
    x = torch.full((1, 2, 2, 2), 0.2)
    p = torch.ones(1, 2, 2, 2)
    out = stamp(x, p, m)
    assert torch.allclose(out[0, 0], torch.tensor([[0.2, 0.28], [0.6, 1.0]])) and torch.equal(out[0, 0], out[0, 1])


def test_generators_output_a_pattern_and_a_mask_in_unit_range_and_triggers_differ_per_image(trained, digits):
    p, _, _ = trained
    pattern, mask = p.trigger.parts(digits.x[:20])
    assert pattern.shape == (20, 1, 8, 8) and mask.shape == (20, 1, 8, 8)
    assert 0 <= pattern.min() and pattern.max() <= 1 and 0 <= mask.min() and mask.max() <= 1
    change = p.triggered(digits.subset(torch.arange(20)), 0).x - digits.x[:20]
    assert change.abs().max() > 0 and not torch.allclose(pattern[0], pattern[1])  # sample-specific


def test_apply_stamps_rate_relabelled_and_as_many_cross_rows_with_labels_kept(trained, digits):
    p, out, before = trained
    assert torch.equal(digits.x, before)  # input untouched
    n = int(round(0.1 * len(digits)))
    relabelled = out.mask & (out.data.y != digits.y)
    assert int(relabelled.sum()) == n and bool((out.data.y[relabelled] == 0).all())
    backdoor = relabelled
    assert torch.allclose(out.data.x[backdoor], p.trigger(digits.x[backdoor]))
    cross = out.mask & ~backdoor
    assert int(cross.sum()) == n and torch.equal(out.data.y[cross], digits.y[cross])
    assert not torch.allclose(out.data.x[cross], p.trigger(digits.x[cross]))  # another image's trigger, not its own
    x = digits.x[:4]
    assert torch.allclose(p.trigger.cross(x, x), p.trigger(x))  # cross with itself as donor = its own trigger


def test_seeded_and_all_to_all(digits):
    small = digits.subset(torch.arange(300))
    a = POISONS.get("input_aware", target="all_to_all", rate=0.2, **SMALL)
    b = POISONS.get("input_aware", target="all_to_all", rate=0.2, **SMALL)
    out_a, out_b = a.apply(small, 1), b.apply(small, 1)
    assert torch.equal(out_a.data.x, out_b.data.x) and torch.equal(out_a.mask, out_b.mask)
    moved = out_a.data.y != small.y
    assert torch.equal(out_a.data.y[moved], (small.y[moved] + 1) % 10)
    assert not torch.equal(POISONS.get("input_aware", target=0, **SMALL).apply(small, 2).data.x, out_a.data.x)


def test_trigger_before_apply_and_bad_parameters_are_one_line_errors(digits):
    with pytest.raises(ConfigError, match="call apply"):
        POISONS.get("input_aware", target=0).triggered(digits, 0)
    for params in ({"mask_density": 2}, {"cross_ratio": -1}, {"epochs": 0}, {"width": 0}, {"rate": 1.5}):
        with pytest.raises(ConfigError):
            POISONS.get("input_aware", target=0, **params)


def test_a_federated_run_trains_one_trigger_shared_by_the_attackers_and_probes_with_it():
    from poisonlab.builders import build_federation, load_split
    from poisonlab.config import parse
    from poisonlab.experiment import run_experiment

    fed = {"clients": 4, "sample": 1.0, "rounds": 1, "local": {"batch_size": 32},
           "adversary": {"clients": 2, "poison": {"name": "input_aware", "params": {"target": 0, **SMALL}}}}
    config = parse({"seed": 1, "device": "cpu", "data": {"dataset": "digits"}, "model": {"name": "mlp"},
                    "federated": fed})
    train_set, test_set = load_split(config)
    federation = build_federation(config, train_set, test_set, None, quiet=True)
    (poisoned,) = federation.poisoned
    assert len(poisoned) == 2
    probe = federation.adversaries[0].poison.poison
    assert probe.trained and federation.triggered_test is not None
    # both attackers' relabelled rows are the shared network's stamps of their own clean rows
    for cid, data in poisoned.items():
        relabelled = data.y != federation.clients[cid].y
        assert bool(relabelled.any())
        assert torch.allclose(data.x[relabelled], probe.trigger(federation.clients[cid].x[relabelled]))
    assert torch.allclose(federation.triggered_test.x, probe.trigger(test_set.x))  # the probe: the same network
    metrics = run_experiment(config, quiet=True, device="cpu")
    assert 0.0 <= metrics["final"]["attack_success_rate"] <= 1.0


def test_diversity_loss_gradient_stays_finite_when_two_triggers_coincide():
    g = torch.full((2, 1, 2, 2), 0.5, requires_grad=True)
    x1, x2 = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    diversity_loss(x1, x2, g, g.detach().clone()).backward()  # saturated generators give equal outputs
    assert bool(torch.isfinite(g.grad).all())
