"""Update attacks: the scalar toy, each formula by hand, only malicious rows change, knowledge limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from poisonlab.errors import ConfigError, DataError
from poisonlab.fl.attacks import ATTACKS, get
from poisonlab.fl.attacks.alie import alie_z
from poisonlab.fl.attacks.minmax import gamma_search, sq_distances
from poisonlab.fl.leverage import mean_shift
from poisonlab.fl.types import RoundContext

DEFAULT_PARAMS = {"constrain_and_scale": {"bound": 1.0}, "agr_tailored": {"rule": "trimmed_mean", "rule_params": {"beta": 0.2}},
                  "alie_opt": {"rule": "median"}, "ipm_opt": {"rule": "median"}}


def toy(k: int = 20) -> torch.Tensor:
    """K honest scalar clients reporting 5 + 0.2 N(0, 1), numpy default_rng(7), as a (K, 1) float64 matrix."""
    rng = np.random.default_rng(7)
    return torch.tensor(5 + 0.2 * rng.standard_normal(k), dtype=torch.float64)[:, None]


def mask(k: int, *rows: int) -> torch.Tensor:
    m = torch.zeros(k, dtype=torch.bool)
    m[list(rows)] = True
    return m


def matrix(k: int = 8, d: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, d, generator=g, dtype=torch.float64) + 0.5


# --- the scalar toy -------------------------------------------------------------------------

def test_scalar_toy_sign_flip_shifts_mean_by_one_kth_of_the_change():
    x = toy()
    out = get("sign_flip")(x, mask(20, 3), RoundContext(num_clients=20))
    assert out[3, 0] == -x[3, 0]
    shift = out.mean() - x.mean()
    assert abs(float(shift - (out[3, 0] - x[3, 0]) / 20)) < 1e-12
    assert abs(float(shift - mean_shift(x[3, 0], out[3, 0], 20))) < 1e-12
    assert abs(float(shift)) > 0.4  # the flip of a value near 5 moves the mean by about -10/20


@pytest.mark.parametrize("eta,global_value", [(1.0, 0.0), (0.5, 1.3)])
def test_scalar_toy_model_replacement_lands_on_target(eta, global_value):
    x, target = toy(), 7.25
    ctx = RoundContext(num_clients=20, server_lr=eta, global_params=torch.tensor([global_value], dtype=torch.float64),
                       extras={"target_params": torch.tensor([target], dtype=torch.float64)})
    out = get("model_replacement")(x, mask(20, 0), ctx)
    assert abs(float(global_value + eta * out.mean()) - target) < 1e-9
    # equal weights, eta = 1, G = 0: x_m = K * target - sum of the others
    if eta == 1.0:
        assert abs(float(out[0, 0] - (20 * target - x[1:, 0].sum()))) < 1e-9


# --- replacement forms ------------------------------------------------------------------------

def test_model_replacement_general_weights_and_several_attackers():
    x = matrix(7, 4)
    w = torch.tensor([3.0, 1.0, 2.0, 5.0, 1.0, 4.0, 2.0], dtype=torch.float64)
    target = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    glob = torch.tensor([0.2, 0.1, -0.3, 0.0], dtype=torch.float64)
    mal = mask(7, 1, 4, 5)
    ctx = RoundContext(num_clients=7, server_lr=0.8, global_params=glob,
                       extras={"target_params": target, "weights": w})
    out = get("model_replacement")(x, mal, ctx)
    a = w / w.sum()
    assert torch.allclose(glob + 0.8 * (a[:, None] * out).sum(0), target, atol=1e-12)
    assert torch.equal(out[1], out[4]) and torch.equal(out[1], out[5])  # consistent split
    # single attacker, general weights: x_m = (target' - sum_{k != m} a_k x_k) / a_m
    out1 = get("model_replacement")(x, mask(7, 2), ctx)
    hand = ((target - glob) / 0.8 - (a[:, None] * x).sum(0) + a[2] * x[2]) / a[2]
    assert torch.allclose(out1[2], hand, atol=1e-12)


def test_model_replacement_non_omniscient_is_gamma_times_own_update():
    x = matrix(10, 5)
    ctx = RoundContext(num_clients=10, server_lr=0.5, omniscient=False)
    out = get("model_replacement")(x, mask(10, 6), ctx)
    assert torch.allclose(out[6], (10 / 0.5) * x[6])  # gamma = K / eta, target = G + own update
    # when the honest rows cancel, the non-omniscient form lands exactly on the target
    x[~mask(10, 6)] -= x[~mask(10, 6)].mean(0)
    out = get("model_replacement")(x, mask(10, 6), ctx)
    assert torch.allclose(0.5 * out.mean(0), x[6], atol=1e-12)


def test_constrain_and_scale_projects_to_bound():
    x = matrix(5, 4)
    out = get("constrain_and_scale", bound=2.0, gamma=10.0)(x, mask(5, 0, 2), RoundContext(num_clients=5))
    for r in (0, 2):
        assert abs(float(out[r].norm()) - 2.0) < 1e-12
        assert torch.allclose(out[r] / out[r].norm(), x[r] / x[r].norm())
    small = get("constrain_and_scale", bound=1e6, gamma=3.0)(x, mask(5, 1), RoundContext(num_clients=5))
    assert torch.allclose(small[1], 3.0 * x[1])
    default = get("constrain_and_scale", bound=1e6)(x, mask(5, 1), RoundContext(num_clients=5, server_lr=0.5))
    assert torch.allclose(default[1], (5 / 0.5) * x[1])


# --- formulas by hand ------------------------------------------------------------------------

def test_scale_sign_flip_and_ipm_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 4.0], [2.0, 2.0]], dtype=torch.float64)
    mal = mask(4, 1)
    ctx = RoundContext(num_clients=4)
    assert torch.equal(get("scale", gamma=4.0)(x, mal, ctx)[1], torch.tensor([12.0, -4.0], dtype=torch.float64))
    assert torch.equal(get("sign_flip", c=2.0)(x, mal, ctx)[1], torch.tensor([-6.0, 2.0], dtype=torch.float64))
    # honest mean = ([1,2] + [0,4] + [2,2]) / 3 = [1, 8/3]
    assert torch.allclose(get("ipm", epsilon=0.5)(x, mal, ctx)[1], torch.tensor([-0.5, -4.0 / 3], dtype=torch.float64))


def test_alie_z_values():
    # n = 20, f = 4: s = floor(11) - 4 = 7; paper z = Phi^-1(13/20), honest-count variant Phi^-1(9/16)
    assert abs(alie_z(20, 4) - 0.385320466) < 1e-6
    assert abs(alie_z(20, 4, "honest") - 0.157310685) < 1e-6
    assert abs(alie_z(5, 1) - 0.253347103) < 1e-6  # s = 2, Phi^-1(3/5)
    with pytest.raises(ConfigError, match="variant"):
        alie_z(5, 1, "nope")


def test_alie_by_hand():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [9.0, 9.0], [2.0, 4.0], [5.0, 1.0]], dtype=torch.float64)
    mal = mask(5, 2)
    out = get("alie")(x, mal, RoundContext(num_clients=5))
    honest = np.array([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0], [5.0, 1.0]])
    mu, sigma = honest.mean(0), honest.std(0)  # population std
    z = 0.253347103  # n = 5, f = 1
    assert np.allclose(out[2].numpy(), mu - z * sigma, atol=1e-8)
    out = get("alie", z=1.5)(x, mal, RoundContext(num_clients=5))
    assert np.allclose(out[2].numpy(), mu - 1.5 * sigma)


@pytest.mark.parametrize("rule", ["min_max", "min_sum"])
@pytest.mark.parametrize("direction", ["unit_vec", "std", "sign"])
def test_min_max_min_sum_gamma_matches_closed_form(rule, direction):
    x = matrix(9, 6, seed=3)
    mal = mask(9, 0, 1)
    out = get(rule, perturbation=direction)(x, mal, RoundContext(num_clients=9))
    ref = x[~mal]
    mu = ref.mean(0)
    p = {"unit_vec": -mu / mu.norm(), "std": -ref.std(0, correction=0), "sign": -torch.sign(mu)}[direction]
    gamma = float((out[0] - mu) @ p / (p @ p))
    assert torch.allclose(out[0], mu + gamma * p, atol=1e-9) and torch.equal(out[0], out[1])
    pair = sq_distances(ref, ref)
    a = float(p @ p)
    if rule == "min_max":  # largest root of ||mu - g_i + gamma p||^2 = max pairwise^2, minimum over i
        diff = mu - ref
        b, c = 2 * (diff @ p), (diff * diff).sum(1) - pair.max()
        exact = float(((-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)).min())
    else:  # the cross term vanishes at the mean: gamma^2 n ||p||^2 = max_i sum_j d_ij^2 - sum_i ||mu - g_i||^2
        exact = math.sqrt((float(pair.sum(1).max()) - float(((mu - ref) ** 2).sum())) / (len(ref) * a))
    assert 0 < exact < 20
    assert abs(gamma - exact) < 1e-4


def test_gamma_search_finds_threshold():
    found = gamma_search(lambda g: g <= 3.7)
    assert 3.7 - 3e-5 < found <= 3.7  # within a few tau, never past the threshold
    assert gamma_search(lambda g: g <= 0.0) == 0.0


def test_gaussian_noise_statistics_and_determinism():
    x = torch.randn(4, 20000, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.01
    mal = mask(4, 0, 3)
    out = get("gaussian", sigma=0.5)(x, mal, RoundContext(num_clients=4, seed=3, round=2))
    assert abs(float(out[mal].std()) - 0.5) < 0.01 and abs(float(out[mal].mean())) < 0.01
    again = get("gaussian", sigma=0.5)(x, mal, RoundContext(num_clients=4, seed=3, round=2))
    other = get("gaussian", sigma=0.5)(x, mal, RoundContext(num_clients=4, seed=3, round=3))
    assert torch.equal(out, again) and not torch.equal(out, other)
    assert not torch.equal(out[0], out[3])
    matched = get("gaussian")(x, mal, RoundContext(num_clients=4))
    honest_norm = float(x[~mal].norm(dim=1).mean())
    assert abs(float(matched[mal].norm(dim=1).mean()) / honest_norm - 1) < 0.02
    own = get("gaussian", sigma=0.5, mean="own")(x, mal, RoundContext(num_clients=4, seed=3, round=2))
    assert torch.allclose(own[mal] - x[mal], out[mal])


def test_gaussian_with_a_numeric_mean():
    x = torch.zeros(3, 20000, dtype=torch.float64)
    out = get("gaussian", sigma=0.5, mean=3.0)(x, mask(3, 0, 2), RoundContext(num_clients=3, seed=1))
    assert abs(float(out[[0, 2]].mean()) - 3.0) < 0.01 and abs(float(out[[0, 2]].std()) - 0.5) < 0.01
    with pytest.raises(ConfigError, match="mean"):
        get("gaussian", mean=float("nan"))
    with pytest.raises(ConfigError, match="mean"):
        get("gaussian", mean=True)


def test_sybil_rows_are_coordinated():
    x = matrix(8, 5)
    mal = mask(8, 2, 5, 7)
    ctx = RoundContext(num_clients=8)
    out = get("sybil")(x, mal, ctx)
    assert all(torch.allclose(out[r], x[mal].mean(0)) for r in (2, 5, 7))
    flipped = get("sybil", attack="sign_flip", params={"c": 3.0})(x, mal, ctx)
    assert torch.allclose(flipped[5], -3.0 * x[mal].mean(0))
    jittered = get("sybil", jitter=0.1)(x, mal, ctx)
    assert not torch.equal(jittered[2], jittered[5])
    assert float((jittered[2] - x[mal].mean(0)).abs().max()) < 1.0


# --- contract properties, every attack ------------------------------------------------------

def build(name: str):
    return get(name, **DEFAULT_PARAMS.get(name, {}))


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("omniscient", [True, False])
def test_only_malicious_rows_change_and_input_is_untouched(name, omniscient):
    x = matrix(10, 7, seed=5)
    keep = x.clone()
    mal = mask(10, 1, 4, 8)
    ctx = RoundContext(num_clients=10, round=1, seed=2, omniscient=omniscient, global_params=torch.ones(7))
    out = build(name)(x, mal, ctx)
    assert torch.equal(x, keep)
    assert torch.equal(out[~mal], x[~mal])
    assert not torch.allclose(out[mal], x[mal])
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(build(name)(x, mask(10), RoundContext(num_clients=10)), x)  # no attacker: unchanged
    assert torch.equal(build(name)(x, mal, ctx), out)  # deterministic


@pytest.mark.parametrize("name", ATTACKS.names())
def test_non_omniscient_does_not_read_honest_rows(name):
    x = matrix(10, 7, seed=6)
    mal = mask(10, 0, 3, 7)
    ctx = RoundContext(num_clients=10, round=0, seed=1, omniscient=False, global_params=torch.ones(7))
    y = x.clone()
    y[~mal] = 100 * torch.randn(7, 7, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert torch.equal(build(name)(x, mal, ctx)[mal], build(name)(y, mal, ctx)[mal])


@pytest.mark.parametrize("name", ["alie", "ipm", "min_max", "min_sum", "gaussian", "fang_krum", "fang_trim",
                                  "agr_tailored", "alie_opt", "ipm_opt", "mimic"])
def test_omniscient_forms_do_read_honest_rows(name):
    x = matrix(10, 7, seed=6)
    mal = mask(10, 0, 3)
    y = x.clone()
    y[~mal] *= 5
    ctx = RoundContext(num_clients=10, omniscient=True)
    assert not torch.allclose(build(name)(x, mal, ctx)[mal], build(name)(y, mal, ctx)[mal])


def test_float32_updates_stay_float32():
    x = matrix(6, 4).float()
    out = get("min_max")(x, mask(6, 0), RoundContext(num_clients=6))
    assert out.dtype == torch.float32


def test_bad_parameters_and_inputs_are_one_line_errors():
    with pytest.raises(ConfigError, match="gamma"):
        get("scale", gamma=-1.0)
    with pytest.raises(ConfigError, match="did you mean 'gamma'"):
        get("scale", gama=2.0)
    with pytest.raises(ConfigError, match="sign_flip"):
        get("sign_flp")
    with pytest.raises(ConfigError, match="perturbation"):
        get("min_max", perturbation="random")
    with pytest.raises(ConfigError, match="mean"):
        get("gaussian", mean="honest")
    with pytest.raises(DataError, match="malicious mask"):
        get("scale")(matrix(4, 3), mask(5, 0), RoundContext())
    with pytest.raises(DataError, match="global_params"):
        get("model_replacement")(matrix(4, 3), mask(4, 0), RoundContext(extras={"target_params": torch.zeros(3)}))
    with pytest.raises(DataError, match="target_params"):
        get("model_replacement")(matrix(4, 3), mask(4, 0),
                                 RoundContext(global_params=torch.zeros(3), extras={"target_params": torch.zeros(5)}))


def test_every_attack_has_a_reference_and_docstring():
    for entry in ATTACKS.entries():
        assert entry.reference and entry.summary
