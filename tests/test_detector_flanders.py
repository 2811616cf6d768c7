"""flanders: the MAR(1) fit recovers a known process, clients off the forecast are set aside, its state
through a checkpoint, fuzzed rounds."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get
from poisonlab.fl.aggregators.flanders import anomaly_scores, fit_mar
from poisonlab.fl.types import RoundContext
from tests.detector_support import fuzz_rounds, resumes_exactly


def test_mar_fit_reproduces_a_noiseless_process():
    """X_t = A X_{t-1} (B = I): the first least-squares step (from B = I) finds A, the forecast is exact and
    every anomaly score is 0. With a general B, alternating least squares never increases the residual."""
    g = torch.Generator().manual_seed(0)
    a = torch.eye(3, dtype=torch.float64) * 0.9 + 0.05 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    xs = [torch.randn(3, 4, generator=g, dtype=torch.float64)]
    for _ in range(4):
        xs.append(a @ xs[-1])
    series = torch.stack(xs[:-1])
    fa, fb = fit_mar(series, iterations=3)
    torch.testing.assert_close(fa @ xs[-2] @ fb.T, xs[-1])
    assert float(anomaly_scores(series, xs[-1], 3).max()) < 1e-20
    b = torch.eye(4, dtype=torch.float64) * 0.8 + 0.05 * torch.randn(4, 4, generator=g, dtype=torch.float64)
    xs = [xs[0]]
    for _ in range(6):
        xs.append(a @ xs[-1] @ b.T)
    series = torch.stack(xs)

    def residual(iterations):
        fa, fb = fit_mar(series, iterations)
        return float(sum(((fa @ series[t] @ fb.T - series[t + 1]) ** 2).sum() for t in range(len(series) - 1)))

    values = [residual(i) for i in (1, 5, 50)]
    assert values[0] >= values[1] >= values[2]


def rounds(n: int, k: int = 10, d: int = 50):
    """Honest clients whose updates decay smoothly (a forecastable series); clients 0 and 1 send noise."""
    g = torch.Generator().manual_seed(1)
    base = 0.1 * torch.randn(k, d, generator=g)
    out = []
    for r in range(n):
        x = base * 0.9**r + 1e-3 * torch.randn(k, d, generator=g)
        x[:2] = torch.randn(2, d, generator=g)
        out.append((x, RoundContext(round=r, num_clients=k, sampled=torch.arange(k), global_params=torch.zeros(d))))
    return out


def test_clients_off_the_forecast_are_set_aside_after_the_window():
    rule, state = get("flanders", window=3, sample=20, keep=0.8), None
    for r, (x, ctx) in enumerate(rounds(6)):
        out = rule(x, torch.ones(10), dataclasses.replace(ctx, state=state))
        state = out.state
        if r < 3:
            assert out.selected.all()  # fewer than `window` rounds stored
        else:
            assert out.selected.tolist() == [False, False] + [True] * 8
            torch.testing.assert_close(out.update, x[2:].mean(0))


def test_state_survives_a_checkpoint(tmp_path):
    resumes_exactly(get("flanders", window=2, sample=10), rounds(4), tmp_path)


def test_parameters_are_checked_in_one_line():
    for bad, name in (({"window": 1}, "window"), ({"keep": 1.5}, "keep"), ({"sample": 0}, "sample")):
        with pytest.raises(ConfigError, match=f"^flanders: {name}="):
            get("flanders", **bad)


def test_fuzzed_rounds():
    fuzz_rounds("flanders", {"window": 2, "sample": 4}, rounds=4)
