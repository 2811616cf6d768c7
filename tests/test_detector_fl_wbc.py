"""fl_wbc (server-side approximation): Laplace noise exactly where consecutive aggregates changed less
than the noise, its state through a checkpoint, fuzzed rounds."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get
from poisonlab.fl.aggregators.fl_wbc import laplace
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator
from tests.detector_support import fuzz_rounds, resumes_exactly


def test_noise_lands_where_the_aggregate_stood_still():
    rule = get("fl_wbc", scale=0.1)
    x0 = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    first = rule(x0, torch.ones(2))
    torch.testing.assert_close(first.update, torch.ones(3))  # round 0: the plain mean
    x1 = torch.tensor([[0.0, 10.0, 0.0], [2.0, 12.0, 2.0]])  # coordinate 1 moves by 10, the others not at all
    ctx = RoundContext(round=1, seed=0, sampled=torch.arange(2), num_clients=2, state=first.state)
    out = rule(x1, torch.ones(2), ctx)
    noise = laplace(3, 0.1, generator(0, "fl_wbc", 1)).float()
    torch.testing.assert_close(out.update, torch.tensor([1.0, 11.0, 1.0]) + noise * torch.tensor([1.0, 0.0, 1.0]))
    assert out.info["perturbed"] == 2 and out.selected.all()


def test_laplace_draws_have_the_laplace_moments():
    z = laplace(200_000, 0.5, torch.Generator().manual_seed(0))
    assert abs(float(z.mean())) < 0.01 and float(z.abs().mean()) == pytest.approx(0.5, rel=0.01)  # E|z| = scale


def test_state_survives_a_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(1)
    rounds = [(torch.randn(3, 5, generator=g), RoundContext(round=r, sampled=torch.arange(3), num_clients=3))
              for r in range(3)]
    resumes_exactly(get("fl_wbc", scale=1.0), rounds, tmp_path)


def test_scale_is_checked_in_one_line():
    with pytest.raises(ConfigError, match="^fl_wbc: scale="):
        get("fl_wbc", scale=-1)


def test_fuzzed_rounds():
    fuzz_rounds("fl_wbc", {"scale": 0.01}, rounds=3)
