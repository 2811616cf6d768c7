"""Hypothesis properties: permutation invariance, translation equivariance, breakdown behaviour."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poisonlab.fl.aggregators import get
from poisonlab.fl.types import RoundContext
from poisonlab.rng import numpy_rng

# geometric_median runs a fixed number of Weiszfeld steps (ftol=0) so that its stopping step does not
# depend on the summation order; the properties hold for the iteration itself.
SETTINGS = settings(max_examples=25, deadline=None)

RULES = [("mean", {}), ("median", {}), ("trimmed_mean", {"beta": 0.2}), ("krum", {"f": 1}),
         ("multi_krum", {"f": 1, "m": 3}), ("bulyan", {"f": 1}), ("geometric_median", {"ftol": 0.0, "max_iter": 40}),
         ("norm_clip", {"bound": 1.0}), ("centered_clipping", {"tau": 1.0, "iterations": 2}),
         ("fltrust", {}), ("foolsgold", {}), ("dp_gaussian", {"bound": 1.0, "sigma": 0.1}),
         ("flame", {}), ("audited", {"rule": "median"})]
EQUIVARIANT = [("mean", {}), ("median", {}), ("trimmed_mean", {"beta": 0.2}), ("krum", {"f": 1}),
               ("multi_krum", {"f": 1, "m": 3}), ("bulyan", {"f": 1}), ("geometric_median", {"ftol": 0.0, "max_iter": 40})]


def data(seed: int, k: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = numpy_rng(seed, "prop", k, d)
    x = rng.standard_normal((k, d)).astype(np.float32) * rng.uniform(0.1, 3.0, (k, 1)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, k).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(w)


@SETTINGS
@given(seed=st.integers(0, 10**6), k=st.integers(7, 12), d=st.integers(1, 9), which=st.integers(0, len(RULES) - 1))
def test_permutation_invariance(seed, k, d, which):
    name, params = RULES[which]
    x, w = data(seed, k, d)
    perm = torch.from_numpy(numpy_rng(seed, "perm").permutation(k))
    g0 = torch.from_numpy(numpy_rng(seed, "g0").standard_normal(d).astype(np.float32))

    def ctx(ids):
        return RoundContext(seed=seed, sampled=ids, num_clients=k, extras={"server_update": g0})

    ids = torch.arange(k)
    a = get(name, **params)(x, w, ctx(ids))
    b = get(name, **params)(x[perm], w[perm], ctx(ids[perm]))
    torch.testing.assert_close(b.update, a.update, atol=2e-4, rtol=1e-4)
    assert torch.equal(b.selected, a.selected[perm])
    if a.scores is not None:
        torch.testing.assert_close(b.scores, a.scores[perm], atol=2e-4, rtol=1e-4)


@SETTINGS
@given(seed=st.integers(0, 10**6), k=st.integers(7, 12), d=st.integers(1, 9),
       shift=st.floats(-50, 50), which=st.integers(0, len(EQUIVARIANT) - 1))
def test_translation_equivariance(seed, k, d, shift, which):
    name, params = EQUIVARIANT[which]
    x, w = data(seed, k, d)
    s = torch.from_numpy(numpy_rng(seed, "shift").standard_normal(d).astype(np.float32)) * shift
    a = get(name, **params)(x, w, RoundContext())
    b = get(name, **params)(x + s, w, RoundContext())
    torch.testing.assert_close(b.update, a.update + s, atol=2e-3, rtol=1e-4)


outliers = st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=1)


@SETTINGS
@given(seed=st.integers(0, 10**6), honest=st.integers(5, 11), d=st.integers(1, 6),
       scale=st.floats(-1e6, 1e6, allow_nan=False), same=st.booleans(), data_=st.data())
def test_outliers_below_breakdown(seed, honest, d, scale, same, data_):
    rng = numpy_rng(seed, "break")
    good = rng.standard_normal((honest, d)).astype(np.float32)
    f_med = data_.draw(st.integers(1, honest - 1))  # median: f < n / 2
    bad = (rng.standard_normal((1 if same else f_med, d)) * scale).astype(np.float32)
    bad = np.broadcast_to(bad, (f_med, d))
    x = torch.from_numpy(np.vstack([good, bad]))
    lo, hi = good.min(axis=0) - 1e-5, good.max(axis=0) + 1e-5
    med = get("median")(x, torch.ones(len(x)), RoundContext()).update.numpy()
    assert (med >= lo).all() and (med <= hi).all()
    n = len(x)
    beta = data_.draw(st.floats(f_med / n + 1e-9, 0.499)) if f_med / n < 0.499 else None
    if beta is not None and int(beta * n) >= f_med:
        tm = get("trimmed_mean", beta=beta)(x, torch.ones(n), RoundContext()).update.numpy()
        assert (tm >= lo).all() and (tm <= hi).all()


@SETTINGS
@given(seed=st.integers(0, 10**6), honest=st.integers(5, 12), d=st.integers(1, 6),
       scale=st.floats(100, 1e6), same=st.booleans(), data_=st.data())
def test_krum_selects_an_honest_row(seed, honest, d, scale, same, data_):
    rng = numpy_rng(seed, "krum-break")
    f = data_.draw(st.integers(1, honest - 3))  # n = honest + f > 2f + 2
    good = rng.standard_normal((honest, d)).astype(np.float32)
    direction = rng.standard_normal((1 if same else f, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    bad = np.broadcast_to(direction * scale, (f, d)).astype(np.float32)
    x = torch.from_numpy(np.vstack([good, bad]))
    out = get("krum", f=f)(x, torch.ones(len(x)), RoundContext())
    assert out.selected[:honest].any() and not out.selected[honest:].any()
