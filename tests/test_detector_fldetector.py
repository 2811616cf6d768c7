"""fldetector: the L-BFGS secant equations, the gap statistic, inconsistent clients flagged on a linear
model, its state through a checkpoint, fuzzed rounds."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get
from poisonlab.fl.aggregators.fldetector import lbfgs_hvp
from poisonlab.fl.aggregators.gap_statistic import gap_clusters, kmeans_1d_sse
from poisonlab.fl.types import RoundContext
from tests.detector_support import fuzz_rounds, resumes_exactly


def test_lbfgs_satisfies_the_secant_equation():
    """BFGS updates satisfy B s_N = y_N for the newest pair (earlier pairs only under exact line searches)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    h = a @ a.T + torch.eye(6, dtype=torch.float64)
    s = torch.randn(3, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(lbfgs_hvp(s, s @ h, s[-1]), (s @ h)[-1])
    one = s[-1:]  # one pair: B = sigma I - rank-2 correction; B s = y and B v = sigma v for v orthogonal to s, y
    v = torch.linalg.svd(torch.stack([s[-1], (s @ h)[-1]]), full_matrices=True).Vh[-1]
    sigma = float((s @ h)[-1] @ s[-1] / (s[-1] @ s[-1]))
    torch.testing.assert_close(lbfgs_hvp(one, one @ h, v), sigma * v)


def test_exact_1d_kmeans_and_the_gap_statistic():
    sse = kmeans_1d_sse(torch.tensor([[1.0, 2.0, 10.0, 11.0, 30.0]]), 4)[0]
    assert sse.tolist() == pytest.approx([542.8, 82.0, 1.0, 0.5])  # by hand: {1,2,10,11}{30}, {1,2}{10,11}{30}
    g = torch.Generator().manual_seed(0)
    assert gap_clusters(torch.rand(40, generator=g), g) == 1  # uniform: one cluster
    two = torch.cat([torch.full((8,), 0.1), torch.full((3,), 0.9)]) + 1e-3 * torch.rand(11, generator=g)
    assert gap_clusters(two, g) >= 2


def linear_rounds(rounds: int, k: int = 10, d: int = 20, bad: int = 2):
    """Honest updates of a quadratic: x_i(w) = -0.1 (A w - b_i), exactly consistent across rounds; the first
    `bad` clients send fresh random rows."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(d, d, generator=g)
    a = a @ a.T / d + torch.eye(d)
    b = torch.randn(k, d, generator=g)
    w, state, outs = torch.randn(d, generator=g), None, []
    rule = get("fldetector", window=3)
    for r in range(rounds):
        x = -0.1 * (w @ a - b)
        x[:bad] = torch.randn(bad, d, generator=g)
        ctx = RoundContext(round=r, num_clients=k, sampled=torch.arange(k), global_params=w.clone(), state=state)
        out = rule(x, torch.ones(k), ctx)
        outs.append((x, ctx, out))
        state, w = out.state, w + out.update
    return outs


def test_inconsistent_clients_are_flagged_once_the_window_is_full():
    outs = linear_rounds(8)
    assert all(o.selected.all() for _, _, o in outs[:4])  # warm-up: pairs, then a window of scores
    for _, _, out in outs[4:]:
        assert out.info["flagged"] == [0, 1]
        assert float(out.scores[:2].min()) > float(out.scores[2:].max())


def test_state_survives_a_checkpoint(tmp_path):
    rounds = [(x, ctx) for x, ctx, _ in linear_rounds(6)]
    resumes_exactly(get("fldetector", window=3), rounds, tmp_path)


def test_parameters_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="^fldetector: window="):
        get("fldetector", window=0)


def test_fuzzed_rounds():
    fuzz_rounds("fldetector", {"window": 1}, rounds=5)
