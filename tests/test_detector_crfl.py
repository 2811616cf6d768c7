"""crfl: the global model clipped to rho and smoothed (hand-computed case), the certificate against its
formula, fuzzed rounds."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get
from poisonlab.fl.aggregators.crfl import certified_radius, contraction
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator
from tests.detector_support import fuzz_rounds


def test_the_new_global_model_is_the_clipped_fedavg_model():
    w = torch.tensor([3.0, 0.0])
    x = torch.tensor([[1.0, 4.0], [1.0, 4.0]])
    ctx = RoundContext(global_params=w, server_lr=0.5, sampled=torch.arange(2), num_clients=2)
    out = get("crfl", rho=2.5, sigma=0.0)(x, torch.ones(2), ctx)
    # w + 0.5 * mean = (3.5, 2), norm sqrt(16.25) > 2.5 -> scaled to norm 2.5
    new = torch.tensor([3.5, 2.0]) * (2.5 / math.sqrt(16.25))
    torch.testing.assert_close(w + 0.5 * out.update, new)
    assert out.info["clipped"] and out.selected.all()
    inside = get("crfl", rho=100.0, sigma=0.0)(x, torch.ones(2), ctx)  # under rho: plain FedAvg
    torch.testing.assert_close(inside.update, x.mean(0))


def test_the_smoothing_noise_is_the_derived_gaussian():
    w = torch.zeros(1000)
    ctx = RoundContext(global_params=w, seed=5, round=3, sampled=torch.arange(2), num_clients=2)
    out = get("crfl", rho=1e9, sigma=0.1)(torch.zeros(2, 1000), torch.ones(2), ctx)
    noise = torch.randn(1000, generator=generator(5, "crfl", 3), dtype=torch.float64)
    torch.testing.assert_close(out.update, (0.1 * noise).float())


def test_certified_radius_is_the_papers_formula():
    p_a, p_b, sigma, rho = 0.8, 0.1, 0.01, 2.0
    got = certified_radius(p_a, p_b, sigma=sigma, rho=rho, rounds_after=5, attackers=2, local_iters=10,
                           lipschitz=3.0, weight_sq_sum=2 / 100**2, scale=10.0, lr=0.05, poison_fraction=0.25)
    phi = 0.5 * (1 + math.erf(rho / sigma / math.sqrt(2)))
    want = math.sqrt(-math.log(1 - (math.sqrt(0.8) - math.sqrt(0.1)) ** 2) * sigma**2
                     / (2 * 2 * 100 * 9 * (2 / 100**2) * 100 * 0.05**2 * 0.25**2 * (2 * phi - 1) ** 6))
    assert got == pytest.approx(want, rel=1e-12)
    assert contraction(1.0, 0.0) == 1.0 and certified_radius(1.0, 0.0, sigma=0.1, rho=1.0, rounds_after=1) == math.inf
    # more noise per round shrinks the contraction product: for these values the radius grows with sigma
    assert certified_radius(0.8, 0.1, sigma=0.02, rho=2.0, rounds_after=5) > certified_radius(
        0.8, 0.1, sigma=0.01, rho=2.0, rounds_after=5)


def test_inputs_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="^crfl: rho="):
        get("crfl", rho=0)
    with pytest.raises(ConfigError, match="^crfl: certified_radius needs 0 <= p_b < p_a <= 1"):
        certified_radius(0.3, 0.4, sigma=0.1, rho=1.0, rounds_after=1)
    with pytest.raises(ConfigError, match="^crfl needs the global model"):
        get("crfl")(torch.ones(2, 3), torch.ones(2))


def test_fuzzed_rounds():
    fuzz_rounds("crfl", {"rho": 1.0, "sigma": 0.01}, rounds=2)
