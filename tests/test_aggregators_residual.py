"""residual_reweight: the repeated-median line by hand, the whole rule against a plain-Python transcription of
the paper's steps, and its defining property (an outlying client loses its weight)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get, residual_reweight
from poisonlab.fl.aggregators.residual_reweight import line_fit


def test_repeated_median_line_by_hand():
    # sorted values 0, 1, 2, 10 at x = 0..3; inner medians of the slopes from each point:
    # a=0: (1-0)/1, (2-0)/2, (10-0)/3 = (1, 1, 3.33) -> 1
    # a=1: (1, 1, 4.5) -> 1; a=2: (1, 1, 8) -> 1; a=3: (3.33, 4.5, 8) -> 4.5; outer median of (1, 1, 1, 4.5) = 1
    # intercept = med(y) - 1 * 1.5 = 1.5 - 1.5 = 0
    v = torch.tensor([[0.0, 1.0, 2.0, 10.0]], dtype=torch.float64)
    intercept, slope = line_fit(v, "repeated_median")
    assert slope.item() == 1.0 and intercept.item() == 0.0
    intercept, slope = line_fit(v, "median")
    assert slope.item() == 0.0 and intercept.item() == 1.5


def reference(x: list[list[float]], weights: list[float], lam: float, threshold: float) -> list[float]:
    """The rule's steps transcribed one coordinate and one client at a time (plain Python floats)."""
    n, d = len(x), len(x[0])
    xbar = (n - 1) / 2
    spread = sum((i - xbar) ** 2 for i in range(n))
    kh = lam * math.sqrt(2 / n)
    w = [[0.0] * d for _ in range(n)]
    cleaned = [row[:] for row in x]
    for j in range(d):
        y = [x[i][j] for i in range(n)]
        order = sorted(range(n), key=lambda i: y[i])
        rank = {i: r for r, i in enumerate(order)}
        v = [y[i] for i in order]
        inner = [statistics.median((v[c] - v[a]) / (c - a) for c in range(n) if c != a) for a in range(n)]
        slope = statistics.median(inner)
        intercept = statistics.median(y) - slope * xbar
        fit = [intercept + slope * rank[i] for i in range(n)]
        r = [y[i] - fit[i] for i in range(n)]
        tau = 1.4826 * (1 + 5 / (n - 1)) * statistics.median(sorted(abs(e) for e in r)[1:])
        for i in range(n):
            h = 1 / n + (rank[i] - xbar) ** 2 / spread
            if r[i] == 0:
                w[i][j] = 1.0
            else:
                e = r[i] / (tau * math.sqrt(1 - h))
                w[i][j] = min(1.0, kh / abs(e))
            if w[i][j] < threshold:
                cleaned[i][j] = fit[i]
    sd = [statistics.stdev(w[i][j] for i in range(n)) for j in range(d)]
    conf = [sum(w[i][j] * sd[j] for j in range(d)) for i in range(n)]
    c = [(ci / max(conf)) ** 2 for ci in conf]
    total = sum(ci * wi for ci, wi in zip(c, weights))
    return [sum(c[i] * weights[i] * cleaned[i][j] for i in range(n)) / total for j in range(d)]


def test_residual_reweight_matches_the_steps_of_the_paper():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    x[5] += 8.0  # one client far off in every coordinate
    weights = [1.0, 2.0, 1.0, 1.0, 3.0, 1.0]
    out = residual_reweight(lam=2.0, threshold=0.1)(x.float(), torch.tensor(weights))
    expected = reference(x.tolist(), weights, 2.0, 0.1)
    assert out.update.tolist() == pytest.approx(expected, abs=1e-5)
    assert int(out.scores.argmax()) == 5  # the outlying client has the lowest confidence


def test_points_on_a_line_keep_every_value_and_order_does_not_matter():
    # per coordinate the values lie on a line in their ranks: zero residuals, every weight 1, the plain mean
    x = torch.tensor([[0.0, 5.0], [2.0, 3.0], [4.0, 1.0], [6.0, -1.0]])
    out = residual_reweight()(x, torch.ones(4))
    assert out.update.tolist() == pytest.approx([3.0, 2.0])
    g = torch.Generator().manual_seed(8)
    y = torch.randn(9, 6, generator=g)
    perm = torch.randperm(9, generator=g)
    rule = residual_reweight()
    assert torch.allclose(rule(y, torch.ones(9)).update, rule(y[perm], torch.ones(9)).update, atol=1e-6)


def test_bad_parameters_are_one_line():
    with pytest.raises(ConfigError, match=r"^residual_reweight: line='ols' is not known; accepted: repeated_median"):
        get("residual_reweight", line="ols")
    with pytest.raises(ConfigError, match=r"^residual_reweight: lam=0 is out of range"):
        get("residual_reweight", lam=0)
