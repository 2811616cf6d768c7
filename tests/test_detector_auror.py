"""auror: exact 1-D 2-means, indicative coordinates and the tau rule on a hand-computed case, fuzzed rounds."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get
from poisonlab.fl.aggregators.auror import two_means_1d
from tests.detector_support import fuzz_rounds


def test_two_means_is_the_best_threshold_split():
    col = torch.tensor([[1.0], [2.0], [10.0], [11.0], [30.0]])
    gap, n_left, rank = two_means_1d(col)
    # splits: {1}|rest SSE 0 + 398.75 ...; {1,2,10,11}|{30}: 82 is the smallest -> centres 6 and 30
    assert n_left.tolist() == [4] and gap.tolist() == [24.0] and rank[:, 0].tolist() == [0, 1, 2, 3, 4]
    brute = min(((col[:s] - col[:s].mean()) ** 2).sum() + ((col[s:] - col[s:].mean()) ** 2).sum() for s in range(1, 5))
    assert float(brute) == 82.0


def test_the_minority_on_most_indicative_coordinates_is_flagged():
    x = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.1, 1.0], [0.1, 0.0, 1.0], [0.0, 0.0, 1.0], [10.0, 10.0, 1.0]])
    out = get("auror", alpha=1.0)(x, torch.ones(5))
    assert out.info["indicative"] == 2  # coordinate 2 is constant: not indicative
    assert out.selected.tolist() == [True, True, True, True, False] and out.scores.tolist() == [0, 0, 0, 0, 1]
    torch.testing.assert_close(out.update, x[:4].mean(0))
    assert get("auror", alpha=20.0)(x, torch.ones(5)).selected.all()  # centres 10 apart: nothing indicative


def test_flags_are_permutation_invariant():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 20, generator=g) * 0.01
    x[:2] += 1.0
    perm = torch.randperm(9, generator=g)
    rule = get("auror", alpha=0.5)
    assert torch.equal(rule(x[perm], torch.ones(9)).selected, rule(x, torch.ones(9)).selected[perm])
    assert rule(x, torch.ones(9)).selected.tolist() == [False, False] + [True] * 7


def test_parameters_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="^auror: alpha="):
        get("auror", alpha=-1)


def test_fuzzed_rounds():
    fuzz_rounds("auror", {"alpha": 0.0}, rounds=2)
