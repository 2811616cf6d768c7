"""bulyan, geometric_median, centered_clipping, fltrust, foolsgold, dp_gaussian, flame, validation: by hand."""

from __future__ import annotations

import dataclasses

import math

import numpy as np
import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import build_rule, chain, get, median
from poisonlab.fl.aggregators.bulyan import closest_to_median_mean
from poisonlab.fl.aggregators.foolsgold import foolsgold_alpha
from poisonlab.fl.aggregators.validation import validation
from poisonlab.fl.types import RoundContext
from poisonlab.rng import numpy_rng

CTX = RoundContext()


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def ones(k):
    return torch.ones(k)


def test_bulyan_by_hand():
    # n=7, f=1: theta=5 successive Krum picks on the shrinking set, then beta=3 closest to the median.
    # 1-D values 0, 1, 3, 5, 10, 100, 200. Picks: 3 (score 66), 5 (66 with q=3), 1 (82 with q=2),
    # then 0 and 10 tie at q=1 (100): 10 has the smaller total squared distance (44300 < 50100);
    # then q=0 ties 0, 100, 200: 100 is the medoid (20000). S = {1,3,5,10,100}, median 5,
    # closest three: 5, 3, 1 -> mean 3.
    x = t([[0], [1], [3], [5], [10], [100], [200]])
    out = get("bulyan", f=1)(x, ones(7), CTX)
    assert out.info["chosen"] == [2, 3, 1, 4, 5]
    assert out.selected.tolist() == [False] + [True] * 5 + [False]
    torch.testing.assert_close(out.update, t([3.0]))
    # the second stage alone, two coordinates: column 1's median 30, closest three 20, 30, 40
    s = t([[0, 10], [1, 20], [3, 30], [5, 40], [10, 1000]])
    torch.testing.assert_close(closest_to_median_mean(s, 3), t([3.0, 30.0]))


def reference_bulyan(x: np.ndarray, f: int) -> np.ndarray:
    """The definition, literally: Krum re-run on the shrinking set (ties to the medoid), then per coordinate."""
    remaining = list(range(len(x)))
    chosen = []
    while len(chosen) < len(x) - 2 * f:
        r = len(remaining)
        scores = []
        for i in remaining:
            d = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in remaining if j != i)
            scores.append(sum(d[: max(r - f - 2, 0)]))
        low = min(scores)
        tied = [i for i, sc in zip(remaining, scores) if sc <= low + 1e-9 * max(abs(low), 1e-30)]
        totals = [sum(float(((x[i] - x[j]) ** 2).sum()) for j in remaining) for i in tied]
        best = tied[int(np.argmin(totals))]
        chosen.append(best)
        remaining.remove(best)
    s = x[chosen]
    beta = len(chosen) - 2 * f
    med = np.median(s, axis=0)
    idx = np.argsort(np.abs(s - med), axis=0, kind="stable")[:beta]
    return np.take_along_axis(s, idx, axis=0).mean(axis=0)


@pytest.mark.parametrize("n,f", [(7, 1), (11, 2), (15, 3)])
def test_bulyan_matches_definition_on_random_data(n, f):
    x = numpy_rng(4, "bulyan", n).standard_normal((n, 13)).astype(np.float64)
    x[:f] += 8.0  # some outliers
    got = get("bulyan", f=f)(torch.from_numpy(x).float(), ones(n), CTX).update.numpy()
    np.testing.assert_allclose(got, reference_bulyan(x, f), atol=1e-5)


def test_bulyan_parameter_check():
    with pytest.raises(ConfigError, match=r"^bulyan needs n >= 4f \+ 3; got n=10, f=2$"):
        get("bulyan", f=2)(torch.zeros(10, 3), ones(10), CTX)


def test_geometric_median_by_hand():
    gm = get("geometric_median")
    collinear = gm(t([[0, 0], [1, 0], [5, 0]]), ones(3), CTX).update  # the middle point
    torch.testing.assert_close(collinear, t([1, 0]), atol=1e-3, rtol=0)
    square = gm(t([[0, 0], [2, 0], [0, 2], [2, 2]]), ones(4), CTX).update  # the centre
    torch.testing.assert_close(square, t([1, 1]), atol=1e-4, rtol=0)
    # weight 2 at A >= 1 + 1 at the others: the weighted geometric median is A itself
    heavy = gm(t([[0, 0], [1, 0], [0, 1]]), torch.tensor([2.0, 1, 1]), CTX).update
    torch.testing.assert_close(heavy, t([0, 0]), atol=1e-3, rtol=0)


def test_geometric_median_objective_is_minimal():
    x = torch.from_numpy(numpy_rng(5, "gm").standard_normal((15, 6)).astype(np.float32))
    v = get("geometric_median")(x, ones(15), CTX).update

    def objective(p):
        return float(torch.linalg.vector_norm(x - p, dim=1).sum())

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert objective(v) <= objective(v + 0.01 * torch.randn(6, generator=g)) + 1e-5


def test_centered_clipping_by_hand_and_state():
    x, w = t([[3, 4], [0.3, 0.4]]), ones(2)
    rule = get("centered_clipping", tau=1.0, iterations=1)
    first = rule(x, w, CTX)
    # centre 0: distances 5 and 0.5 -> coefficients 0.5*1/5, 0.5*1 -> (0.45, 0.6)
    torch.testing.assert_close(first.update, t([0.45, 0.6]))
    assert first.selected.tolist() == [False, True]
    second = rule(x, w, dataclasses.replace(CTX, state=first.state))
    # centre (0.45, 0.6): distances 4.25 and 0.25 -> (0.45,0.6) + 0.5/4.25*(2.55,3.4) + 0.5*(-0.15,-0.2)
    torch.testing.assert_close(second.update, t([0.675, 0.9]))
    fresh = get("centered_clipping", tau=1.0, iterations=1)
    torch.testing.assert_close(fresh(x, w, dataclasses.replace(CTX, state=first.state)).update, second.update)
    torch.testing.assert_close(rule(x, w, CTX).update, first.update)  # the rule holds no state of its own


def test_fltrust_by_hand():
    x = t([[2, 0], [0, 3], [1, 1], [-1, 0]])
    ctx = RoundContext(extras={"server_update": t([1, 0])})
    out = get("fltrust")(x, ones(4), ctx)
    # trust 1, 0, 1/sqrt2, 0; rescaled rows (1,0) and (1/sqrt2, 1/sqrt2)
    c = 1 / math.sqrt(2)
    expected = t([(1 + c * c) / (1 + c), (c * c) / (1 + c)])
    torch.testing.assert_close(out.update, expected)
    assert out.selected.tolist() == [True, False, True, False]
    torch.testing.assert_close(out.scores, t([0, 1, 1 - c, 1]))
    with pytest.raises(ConfigError, match=r"fltrust needs the server's update .*set federated\.server_data\.root_size"):
        get("fltrust")(x, ones(4), CTX)


def reference_foolsgold(h: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """Algorithm 1 of Fung et al. 2020 written with explicit loops."""
    n = len(h)
    cs = np.array([[h[i] @ h[j] / np.linalg.norm(h[i]) / np.linalg.norm(h[j]) for j in range(n)] for i in range(n)])
    np.fill_diagonal(cs, -np.inf)
    v = cs.max(axis=1)
    for i in range(n):
        for j in range(n):
            if i != j and v[j] > v[i]:
                cs[i, j] *= v[i] / v[j]
    alpha = np.clip(1 - cs.max(axis=1), 0, 1)
    alpha = alpha / alpha.max()
    alpha[alpha == 1] = 0.99
    with np.errstate(divide="ignore"):
        alpha = kappa * (np.log(alpha / (1 - alpha)) + 0.5)
    alpha[np.isinf(alpha) & (alpha > 0)] = 1
    return np.clip(alpha, 0, 1)


def test_foolsgold_sybils_by_hand_and_reference():
    # two identical histories (sybils) and one orthogonal: cs=1 for the sybils, 0 for the other;
    # pardoning leaves the sybils at 1 -> alpha 0; the honest one alpha 1 -> 0.99 -> logit 5.1 -> 1
    rule = get("foolsgold")
    x = t([[1, 0], [1, 0], [0, 1]])
    out = rule(x, ones(3), RoundContext(sampled=torch.tensor([0, 1, 2]), num_clients=3))
    assert out.selected.tolist() == [False, False, True]
    torch.testing.assert_close(out.update, t([0, 1 / 3]))  # sum alpha_i w_i x_i / sum w_i
    h = numpy_rng(6, "fg").standard_normal((6, 5))
    h[1] = h[0] + 0.05
    np.testing.assert_allclose(foolsgold_alpha(torch.from_numpy(h)).numpy(), reference_foolsgold(h), atol=1e-6)


def test_foolsgold_accumulates_histories_per_client():
    rule = build_rule("foolsgold")  # the guard is step 0, FoolsGold step 1: its state under '1.'
    ctx = RoundContext(sampled=torch.tensor([3, 7]), num_clients=10)
    first = rule(t([[1, 0], [0, 1]]), ones(2), ctx)
    second = rule(t([[1, 1], [2, 0]]), ones(2), dataclasses.replace(ctx, state=first.state))
    hist = second.state["1.history"]
    assert set(second.state) == {"1.history"}
    assert hist.shape == (10, 2)
    assert hist[3].tolist() == [2, 1] and hist[7].tolist() == [2, 1] and hist[0].tolist() == [0, 0]


def test_dp_gaussian_noise_scale_and_determinism():
    k, d = 10, 20000
    x = torch.from_numpy(numpy_rng(7, "dp").standard_normal((k, d)).astype(np.float32))
    clean = get("norm_clip", bound=2.0)(x, ones(k), CTX).update
    ctx = RoundContext(round=3, seed=11)
    noisy = get("dp_gaussian", bound=2.0, sigma=0.5)(x, ones(k), ctx)
    std = float((noisy.update - clean).std())
    assert abs(std - 0.5 * 2.0 / k) < 0.05 * 0.1  # sigma * B / k = 0.1
    again = get("dp_gaussian", bound=2.0, sigma=0.5)(x, ones(k), ctx).update
    assert torch.equal(again, noisy.update)
    other = get("dp_gaussian", bound=2.0, sigma=0.5)(x, ones(k), RoundContext(round=4, seed=11)).update
    assert not torch.equal(other, noisy.update)


def test_flame_rejects_a_minority_direction_and_clips_to_median_norm():
    rng = numpy_rng(8, "flame")
    base = rng.standard_normal(50)
    honest = base + 0.2 * rng.standard_normal((7, 50))
    evil = -base * 5 + 0.2 * rng.standard_normal((3, 50))
    x = torch.from_numpy(np.vstack([honest, evil]).astype(np.float32))
    out = get("flame", noise_lambda=0.0)(x, ones(10), CTX)
    admitted = out.selected.numpy()
    assert not admitted[7:].any() and admitted.sum() >= 6  # HDBSCAN may call an edge honest row noise
    norms = np.linalg.norm(x.numpy(), axis=1)
    bound = np.median(norms)  # over all rows
    clipped = (x.numpy() * np.minimum(1, bound / norms)[:, None])[admitted]
    np.testing.assert_allclose(out.update.numpy(), clipped.mean(axis=0), atol=1e-5)
    assert out.info["clip_bound"] == pytest.approx(bound, rel=1e-6)
    noisy = get("flame", noise_lambda=0.01)(x, ones(10), RoundContext(seed=1))
    assert float((noisy.update - out.update).std()) == pytest.approx(0.01 * bound, rel=0.4)


def test_validation_rejection_by_hand_and_chained():
    x = t([[0.0], [1.0], [2.0], [3.0]])
    acc = {0.0: 0.90, 1.0: 0.86, 2.0: 0.84, 3.0: 0.95}
    ctx = RoundContext(extras={"validate": lambda u: torch.tensor([acc[float(r[0])] for r in u]),
                               "base_accuracy": 0.9})
    out = get("validation", epsilon=0.05)(x, ones(4), ctx)  # keep acc >= 0.85: rows 0, 1, 3
    assert out.selected.tolist() == [True, True, False, True]
    torch.testing.assert_close(out.update, t([4 / 3]))
    torch.testing.assert_close(out.scores, t([0.0, 0.04, 0.06, -0.05]))
    med = chain(validation(epsilon=0.05), median())(x, ones(4), ctx)
    torch.testing.assert_close(med.update, t([1.0]))  # median of 0, 1, 3
    assert med.selected.tolist() == [True, True, False, True]
    with pytest.raises(ConfigError, match=r"validation needs .*set federated\.server_data\.validation_size"):
        get("validation")(x, ones(4), CTX)
