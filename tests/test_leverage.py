"""Leverage math checked against brute force on the aggregation rules it describes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl import leverage as lv


def test_mean_shift_is_one_kth_of_the_change():
    rng = np.random.default_rng(7)
    x = 5 + 0.2 * rng.standard_normal(20)
    y = x.copy()
    y[4] = -x[4]
    assert abs((y.mean() - x.mean()) - lv.mean_shift(x[4], y[4], 20)) < 1e-12


def test_clipped_shift_bound_is_tight_and_never_exceeded():
    rng = np.random.default_rng(0)
    bound, k = 3.0, 10
    clip = lambda v: v * min(1.0, bound / np.linalg.norm(v))  # noqa: E731
    worst = 0.0
    for _ in range(200):
        honest = clip(rng.normal(size=5) * 4)
        replaced = clip(rng.normal(size=5) * 4)
        worst = max(worst, np.linalg.norm(replaced - honest) / k)
    assert worst <= lv.clipped_shift_bound(bound, k) + 1e-12
    u = clip(np.ones(5) * 10)  # attained by reporting -u instead of u
    assert abs(np.linalg.norm(-u - u) / k - lv.clipped_shift_bound(bound, k)) < 1e-12


def test_replacement_update_scalar_vector_and_weights():
    others = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    x = lv.replacement_update(10.0, others)
    assert float(x) == 4 * 10.0 - 7.0
    vec_others = torch.tensor([[1.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    xv = lv.replacement_update(torch.tensor([3.0, 3.0]), vec_others, server_lr=0.5, global_value=torch.tensor([1.0, 0.0]))
    assert torch.allclose(torch.tensor([1.0, 0.0], dtype=torch.float64)
                          + 0.5 * torch.cat([vec_others, xv[None]]).mean(0), torch.tensor([3.0, 3.0], dtype=torch.float64))
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    xw = lv.replacement_update(6.0, others, weights=w)
    assert abs(float((w / w.sum()) @ torch.cat([others, xw.reshape(1)])) - 6.0) < 1e-12


def test_sybil_weight():
    assert lv.sybil_weight(3, 20) == 0.15


@pytest.mark.parametrize("h", [1, 2, 5, 8])
def test_median_sybil_count_by_brute_force(h):
    honest = np.random.default_rng(h).normal(size=h)
    far = 1e9

    def moved(s, lower):
        values = np.concatenate([honest, np.full(s, far)])
        med = float(torch.median(torch.tensor(values))) if lower else float(np.median(values))
        return med > 1e6

    for lower in (False, True):
        s = lv.sybils_to_control_median(h, lower=lower)
        assert moved(s, lower) and not moved(s - 1, lower)


@pytest.mark.parametrize("h,beta", [(10, 0.1), (10, 0.2), (17, 0.25), (5, 0.0), (30, 0.4)])
def test_trimmed_mean_sybil_count_by_brute_force(h, beta):
    honest = np.random.default_rng(1).normal(size=h)

    def moved(s):
        values = np.sort(np.concatenate([honest, np.full(s, 1e9)]))
        b = int(np.floor(beta * len(values)))
        return values[b:len(values) - b].mean() > 1e6

    s = lv.sybils_to_control_trimmed_mean(h, beta)
    assert moved(s) and not moved(s - 1)


def krum_pick(rows: np.ndarray, f: int) -> int:
    """Brute-force Krum: index of the row with the smallest sum of squared distances to its n - f - 2 nearest."""
    d = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1)
    m = len(rows) - f - 2
    scores = np.sort(d, axis=1)[:, 1:m + 1].sum(1)
    return int(np.argmin(scores))


@pytest.mark.parametrize("h", [3, 5, 8, 12])
@pytest.mark.parametrize("f", [None, 2, 4])
def test_krum_sybil_count_by_brute_force(h, f):
    honest = np.random.default_rng(h).normal(size=(h, 4))
    v = np.array([1e4, -2e4, 3e4, 5e3])

    def wins(s):
        n = h + s
        ff = (n - 3) // 2 if f is None else f
        if n - ff - 2 < 1:
            return False
        return krum_pick(np.concatenate([honest, np.tile(v, (s, 1))]), ff) >= h

    s = lv.sybils_to_control_krum(h, f)
    assert wins(s)
    assert s == 1 or not wins(s - 1)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="num_clients"):
        lv.mean_shift(1.0, 2.0, 0)
    with pytest.raises(ConfigError, match="beta"):
        lv.sybils_to_control_trimmed_mean(10, 0.5)
    with pytest.raises(ConfigError, match="honest"):
        lv.sybils_to_control_median(0)
