"""Inf and zero updates, MPAF fake clients and neurotoxin's rare-coordinate projection, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.errors import ConfigError, DataError
from poisonlab.fl.aggregators import build_rule
from poisonlab.fl.attacks import get
from poisonlab.fl.attacks.neurotoxin import rare_mask
from poisonlab.fl.types import RoundContext


def rows() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(20, dtype=torch.float64).reshape(4, 5) + 1
    return x, torch.tensor([False, True, False, True])


def test_inf_rows_are_inf_and_a_guarded_rule_stays_finite():
    x, mal = rows()
    out = get("inf")(x, mal, RoundContext(num_clients=4))
    assert bool(torch.isinf(out[mal]).all()) and bool((out[mal] > 0).all())
    assert bool(torch.isfinite(build_rule("median", {})(out.float(), torch.ones(4)).update).all())


def test_zero_rows_shrink_the_mean_by_the_malicious_fraction():
    x, mal = rows()
    out = get("zero")(x, mal, RoundContext(num_clients=4))
    assert torch.equal(out[mal], torch.zeros(2, 5, dtype=torch.float64))
    torch.testing.assert_close(out.mean(dim=0), x[~mal].mean(dim=0) / 2)


def test_mpaf_drags_towards_the_base_model():
    x, mal = rows()
    g = torch.linspace(-1, 1, 5, dtype=torch.float64)
    out = get("mpaf", scale=100.0)(x, mal, RoundContext(num_clients=4, global_params=g))
    torch.testing.assert_close(out[mal], (-100.0 * g).expand(2, 5))  # base = the zero model
    base = torch.full((5,), 2.0, dtype=torch.float64)
    ctx = RoundContext(num_clients=4, global_params=g, extras={"target_params": base})
    torch.testing.assert_close(get("mpaf", scale=3.0)(x, mal, ctx)[mal], (3.0 * (base - g)).expand(2, 5))
    a = get("mpaf", scale=1.0, base_std=0.5)(x, mal, RoundContext(num_clients=4, global_params=g, round=0, seed=4))
    b = get("mpaf", scale=1.0, base_std=0.5)(x, mal, RoundContext(num_clients=4, global_params=g, round=7, seed=4))
    assert torch.equal(a, b)  # one fixed base model across rounds
    with pytest.raises(DataError, match="global_params"):
        get("mpaf")(x, mal, RoundContext(num_clients=4))


def test_neurotoxin_keeps_only_the_rarely_updated_coordinates():
    reference = torch.tensor([0.1, -5.0, 0.2, 3.0, 0.0, 0.05, -0.3, 0.4, 0.01, 0.02], dtype=torch.float64)
    assert rare_mask(reference, 0.2).tolist() == [True, False, True, False] + [True] * 6
    assert int((~rare_mask(reference, 0.25)).sum()) == math.ceil(2.5)
    x = torch.ones(3, 10, dtype=torch.float64)
    mal = torch.tensor([True, False, True])
    ctx = RoundContext(num_clients=3, extras={"previous_global_update": reference})
    out = get("neurotoxin", ratio=0.2)(x, mal, ctx)
    assert out[mal][:, [1, 3]].abs().sum() == 0 and bool((out[mal][:, [0, 2, 4, 5, 6, 7, 8, 9]] == 1).all())
    with pytest.raises(ConfigError, match="ratio"):
        get("neurotoxin", ratio=1.0)
    with pytest.raises(DataError, match="previous_global_update"):
        get("neurotoxin")(x, mal, RoundContext(extras={"previous_global_update": torch.ones(3)}))
