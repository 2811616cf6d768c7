"""dp_adaptive_clipping, dp_adaptive_client, local_dp: a hand-computed round, quantile tracking, noise scales."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import chain, dp_adaptive_client, dp_adaptive_clipping, get, local_dp, median
from poisonlab.fl.types import RoundContext

QUIET = {"noise_multiplier": 0.0, "clipped_count_stddev": 0.0}


def test_adaptive_round_by_hand():
    # norms 1, 2, 4 with C = 2: the third row is clipped to [2, 0]; mean [1, 2/3]; bits (1, 1, 0): b = 2/3;
    # next C = 2 exp(-0.2 (2/3 - 0.5))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 0.0]])
    out = dp_adaptive_clipping(initial_clip=2.0, **QUIET)(x, torch.ones(3))
    assert out.update.tolist() == pytest.approx([1.0, 2 / 3])
    assert out.selected.tolist() == [True, True, False]
    assert out.state["clip_norm"] == pytest.approx(2 * math.exp(-0.2 * (2 / 3 - 0.5)))


@pytest.mark.parametrize("target,low,high", [(0.5, 5.0, 6.0), (0.9, 9.0, 10.0), (0.2, 2.0, 3.0)])
def test_clip_norm_converges_to_the_target_quantile(target, low, high):
    """Without noise, the geometric update settles where the share of unclipped norms is the target."""
    x = torch.diag(torch.arange(1.0, 11.0))  # norms 1..10
    rule = dp_adaptive_clipping(initial_clip=0.1, target_quantile=target, **QUIET)
    state = None
    for r in range(300):
        state = rule(x, torch.ones(10), RoundContext(round=r, state=state)).state
    assert low <= state["clip_norm"] < high


def test_update_noise_is_z_delta_times_clip_over_m():
    # z = 1, sigma_b = 10: z_delta = (1 - 1/400)^(-1/2); four zero updates: std z_delta * C / 4
    k, d, clip = 4, 200_000, 0.5
    rule = dp_adaptive_clipping(noise_multiplier=1.0, initial_clip=clip, clipped_count_stddev=10.0)
    out = rule(torch.zeros(k, d), torch.ones(k), RoundContext(seed=9))
    expected = (1 - 1 / 400) ** -0.5 * clip / k
    assert out.info["noise_std"] == pytest.approx(expected)
    assert float(out.update.std()) == pytest.approx(expected, rel=0.01)
    assert abs(float(out.update.mean())) < 5 * expected / math.sqrt(d)


def test_client_side_clips_before_the_next_rule_and_keeps_its_state():
    x = torch.tensor([[1.0], [3.0], [10.0]])
    step = dp_adaptive_client(initial_clip=2.0, **QUIET)
    out = chain(step, median())(x, torch.ones(3))
    assert out.update.tolist() == [2.0]  # the median of the clipped rows 1, 2, 2
    assert out.state["0.clip_norm"] == pytest.approx(2 * math.exp(-0.2 * (1 / 3 - 0.5)))
    alone = step(x, torch.ones(3))  # alone: the server's mean of the clipped rows (no noise at z = 0)
    assert alone.update.tolist() == pytest.approx([5 / 3])


def test_local_dp_rows_carry_noise_of_sigma_times_clip():
    k, d = 3, 100_000
    x = torch.zeros(k, d)
    x[0, 0] = 10.0  # clipped to norm 2
    step = local_dp(clip=2.0, sigma=0.25)
    out = step.step(x, torch.ones(k), RoundContext(seed=4))
    noise = out.rows.clone()
    noise[0, 0] -= 2.0
    assert float(noise.std()) == pytest.approx(0.25 * 2.0, rel=0.01)
    assert out.selected.tolist() == [False, True, True]
    quiet = local_dp(clip=2.0, sigma=0.0)(x, torch.ones(k))  # alone: the mean of the clipped rows
    assert quiet.update[0].item() == pytest.approx(2 / 3) and float(quiet.update[1:].abs().max()) == 0.0


@pytest.mark.parametrize("name,params,match", [
    ("dp_adaptive_clipping", {"target_quantile": 1.5}, r"^dp_adaptive_clipping: target_quantile=1.5 is out of range"),
    ("dp_adaptive_client", {"initial_clip": 0}, r"^dp_adaptive_client: initial_clip=0 is out of range"),
    ("local_dp", {"sigma": -1}, r"^local_dp: sigma=-1 is out of range"),
])
def test_bad_parameters_are_one_line(name, params, match):
    with pytest.raises(ConfigError, match=match):
        get(name, **params)


def test_noise_too_large_for_the_count_budget_is_refused():
    rule = dp_adaptive_clipping(noise_multiplier=1.0)  # sigma_b = 10 / 20 = 0.5: z must be < 1
    with pytest.raises(ConfigError, match=r"^dp_adaptive_clipping: noise_multiplier=1.0 must be < 2 \* clipped_count"):
        rule(torch.ones(10, 3), torch.ones(10))
