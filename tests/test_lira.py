"""LIRA (Doan et al. 2021): the generator's L-inf bound, the poison's stamping, seeding and targets."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.poison import POISONS
from poisonlab.poison.lira import BoundedGenerator, add_trigger

SMALL = dict(epochs=1, width=4, batch=64)


def test_the_generator_is_bounded_by_eps_even_with_huge_weights():
    g = BoundedGenerator(3, 4, eps=0.05)
    with torch.no_grad():
        for p in g.parameters():
            p.fill_(10.0)
    x = torch.rand(5, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    t = g(x)
    assert t.abs().max().item() <= 0.05 + 1e-7 and t.abs().max().item() > 0.049  # saturated at eps
    out = add_trigger(x, t)
    assert (out - x).abs().max().item() <= 0.05 + 1e-7 and 0 <= out.min() and out.max() <= 1


def test_poison_stamps_within_eps_relabels_and_keeps_the_input(digits):
    p = POISONS.get("lira", target=0, rate=0.1, eps=0.08, **SMALL)
    before = digits.x.clone()
    out = p.apply(digits, 0)
    assert torch.equal(digits.x, before)
    assert out.count == round(0.1 * len(digits)) and bool((out.data.y[out.mask] == 0).all())
    assert torch.equal(out.data.x[~out.mask], digits.x[~out.mask])
    change = (out.data.x[out.mask] - digits.x[out.mask]).abs()
    assert change.max().item() <= 0.08 + 1e-6 and change.mean().item() > 0.001
    trig = p.triggered(digits, 0)
    assert torch.equal(trig.y, digits.y) and (trig.x - digits.x).abs().max().item() <= 0.08 + 1e-6
    assert torch.allclose(trig.x[out.mask], out.data.x[out.mask])  # the same trained generator at test time


def test_seeded_and_per_source_targets(digits):
    small = digits.subset(torch.arange(300))
    spec = dict(target={3: 5, 4: 6}, rate=0.1, **SMALL)
    a, b = POISONS.get("lira", **spec).apply(small, 7), POISONS.get("lira", **spec).apply(small, 7)
    assert torch.equal(a.data.x, b.data.x) and torch.equal(a.mask, b.mask)
    assert set(small.y[a.mask].tolist()) <= {3, 4}
    assert torch.equal(a.data.y[a.mask], small.y[a.mask] + 2)


def test_bad_parameters_and_trigger_before_apply_are_one_line_errors(digits):
    for params in ({"eps": 1.5}, {"alpha": -0.1}, {"width": 0}, {"lr": 0}, {"batch": 0}):
        with pytest.raises(ConfigError):
            POISONS.get("lira", target=0, **params)
    with pytest.raises(ConfigError, match="call apply"):
        POISONS.get("lira", target=0).triggered(digits, 0)
