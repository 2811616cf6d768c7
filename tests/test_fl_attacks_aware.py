"""The aggregator-aware attacks: AGR-tailored (Shejwalkar & Houmansadr 2021), optimal ALIE / IPM (ByzFL's line search)."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError, DataError
from poisonlab.fl.aggregators import get as get_rule
from poisonlab.fl.attacks import get
from poisonlab.fl.attacks.aware import line_maximize
from poisonlab.fl.types import RoundContext


def scalar_round() -> tuple[torch.Tensor, torch.Tensor]:
    """Honest scalars 1..6 and three malicious rows (their own updates 3, 4, 5)."""
    rows = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 3.0, 4.0, 5.0], dtype=torch.float64)[:, None]
    return rows, torch.arange(9) >= 6


def test_line_maximize_finds_the_peak_and_doubles_while_improving():
    assert line_maximize(lambda x: -(x - 5.0) ** 2) == pytest.approx(5.0, abs=0.5)
    # strictly increasing: start 0 then 15 expansions of 1, 2, 4, ...: 2^15 - 1
    assert line_maximize(lambda x: x) == 2 ** 15 - 1
    assert line_maximize(lambda x: float("nan") if x > 0 else 0.0) == 0.0  # NaN never improves
    assert line_maximize(lambda x: -x) == 0.0  # never below the start


@pytest.mark.parametrize("name", ["agr_tailored", "alie_opt", "ipm_opt"])
def test_median_deviation_reaches_its_maximum_by_hand(name):
    rows, mal = scalar_round()
    out = get(name, rule="median")(rows, mal, RoundContext(num_clients=9))
    # 9 rows, 3 crafted below the honest 1..6: the median is the 5th value, 2 (honest mean 3.5): deviation 1.5
    # (the crafted rows must be <= 2; no crafted value does better: above 2 the median is >= 2)
    agg = get_rule("median")(out, torch.ones(9)).update
    assert float(agg) == pytest.approx(2.0)
    assert bool((out[mal] <= 2.0).all())


def test_ipm_opt_against_the_mean_grows_without_bound():
    rows, mal = scalar_round()
    out = get("ipm_opt", rule="mean")(rows, mal, RoundContext(num_clients=9))
    # the mean's deviation grows linearly in epsilon: every expansion succeeds, epsilon = 2^15 - 1
    torch.testing.assert_close(out[mal], torch.full((3, 1), -(2 ** 15 - 1) * 3.5, dtype=torch.float64))


def spread_round(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(12, 30, generator=g, dtype=torch.float64) + 1.0
    return rows, torch.arange(12) >= 9


@pytest.mark.parametrize("rule,params", [("krum", {"f": 3}), ("multi_krum", {"f": 3, "m": 5}), ("bulyan", {"f": 2})])
def test_tailored_selection_gamma_is_the_largest_selected(rule, params):
    rows, mal = spread_round()
    tau = 1e-4
    out = get("agr_tailored", rule=rule, rule_params=params, tau=tau)(rows, mal, RoundContext(num_clients=12))
    agr = get_rule(rule, **params)
    ones = torch.ones(12, dtype=torch.float64)
    chosen = agr(out, ones).selected
    assert int(chosen[mal].sum()) == min(3, int(chosen.sum()))  # every crafted row (Krum: the one row) is selected
    honest = rows[~mal]
    mu, p = honest.mean(dim=0), -honest.std(dim=0, correction=0)
    gamma = float(((out[mal][0] - mu) / p).mean())
    assert gamma > 0
    beyond = rows.clone()
    beyond[mal] = mu + (gamma + 2 * tau) * p
    chosen = agr(beyond, ones).selected
    assert int(chosen[mal].sum()) < min(3, int(chosen.sum()))  # a larger gamma is not


def test_tailored_beats_min_max_against_trimmed_mean():
    rows, mal = spread_round(1)
    ctx = RoundContext(num_clients=12)
    rule = get_rule("trimmed_mean", beta=0.25)
    ones = torch.ones(12, dtype=torch.float64)
    mu = rows[~mal].mean(dim=0)

    def deviation(name, **params):
        return float((rule(get(name, **params)(rows, mal, ctx), ones).update - mu).norm())

    assert deviation("agr_tailored", rule="trimmed_mean", rule_params={"beta": 0.25}) >= deviation("min_max")


def test_the_deployed_rule_comes_from_the_context():
    rows, mal = scalar_round()
    ctx = RoundContext(num_clients=9, extras={"aggregator": get_rule("median")})
    assert torch.equal(get("alie_opt")(rows, mal, ctx), get("alie_opt", rule="median")(rows, mal, ctx))
    with pytest.raises(DataError, match="deployed rule"):
        get("agr_tailored")(rows, mal, RoundContext(num_clients=9))


def test_aware_bad_parameters():
    with pytest.raises(ConfigError, match="objective"):
        get("agr_tailored", objective="max")
    with pytest.raises(ConfigError, match="perturbation"):
        get("agr_tailored", perturbation="up")
    with pytest.raises(ConfigError, match="ratio"):
        get("alie_opt", ratio=1.0)
    with pytest.raises(ConfigError, match="aggregator 'medain'"):
        get("ipm_opt", rule="medain")(*scalar_round(), RoundContext(num_clients=9))
