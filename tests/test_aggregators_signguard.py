"""signguard: a hand-computed round (both filters, clipping to the median norm), seeding, parameter errors."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get, signguard
from poisonlab.fl.types import RoundContext


def round_with_flippers():
    """Five honest rows with positive entries (norms vary) and two sign-flipped copies of honest rows."""
    g = torch.Generator().manual_seed(5)
    honest = (torch.rand(5, 40, generator=g) + 0.1) * torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0])[:, None]
    return torch.cat([honest, -honest[:2]])


def test_signguard_by_hand():
    # sign statistics (fraction=1: every coordinate): honest (1, 0, 0), flipped (0, 0, 1); MeanShift puts
    # them in two clusters, the honest one larger. Norm ratios to the median are within [0.1, 3]: S1 is
    # every row. The answer is the mean of the honest rows clipped to M = median norm.
    x = round_with_flippers()
    out = signguard(fraction=1.0)(x, torch.ones(7))
    assert out.selected.tolist() == [True] * 5 + [False] * 2
    assert out.scores.tolist() == [0.0] * 5 + [1.0] * 2
    norms = torch.linalg.vector_norm(x.double(), dim=1)
    m = float(norms.median())  # k = 7: the middle norm
    factors = (m / norms[:5]).clamp_max(1.0)
    expected = (factors[:, None] * x[:5].double()).mean(dim=0)
    assert torch.allclose(out.update.double(), expected, atol=1e-5)
    assert out.info["clip_bound"] == pytest.approx(m)


def test_norm_filter_rejects_rows_far_from_the_median_norm():
    x = round_with_flippers()[:5].clone()
    x[0] *= 1e-3  # ratio to the median ~3e-4 < 0.1
    x[4] *= 10.0  # ratio ~13 > 3
    out = signguard(fraction=1.0)(x, torch.ones(5))
    assert out.selected.tolist() == [False, True, True, True, False]
    assert out.info["norm_rejected"] == 2


def test_signguard_coordinate_subset_is_seeded():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(9, 500, generator=g)
    rule = signguard(fraction=0.1)
    a = rule(x, torch.ones(9), RoundContext(seed=1, round=3))
    b = rule(x, torch.ones(9), RoundContext(seed=1, round=3))
    assert torch.equal(a.update, b.update) and torch.equal(a.selected, b.selected)


@pytest.mark.parametrize("params,match", [
    ({"lower": 2.0, "upper": 1.0}, r"^signguard: lower=2.0, upper=1.0, fraction=0.1 out of range"),
    ({"fraction": 1.5}, r"^signguard: lower=0.1, upper=3.0, fraction=1.5 out of range"),
    ({"upper": 0}, r"^signguard: upper=0 is out of range"),
])
def test_bad_parameters_are_one_line(params, match):
    with pytest.raises(ConfigError, match=match):
        get("signguard", **params)
