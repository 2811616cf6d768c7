"""meamed: per coordinate, the mean of the n - f values closest to the median."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get, meamed


def test_hand_computed_columns():
    x = torch.tensor([[0.0, 5.0], [1.0, 5.0], [2.0, -1.0], [3.0, 5.0], [100.0, 6.0]])
    # column 0: median 2; the 4 closest are 2, 1, 3, 0 -> 1.5; column 1: median 5, closest 5, 5, 5, 6 -> 5.25
    torch.testing.assert_close(meamed(f=1)(x, torch.ones(5)).update, torch.tensor([1.5, 5.25]))
    torch.testing.assert_close(meamed(f=2)(x, torch.ones(5)).update, torch.tensor([2.0, 5.0]))


@pytest.mark.parametrize("scale", [-1e30, -5.0, 1e3, 3e38])
def test_f_outliers_stay_inside_the_honest_range(scale):
    """Breakdown point: with f < n / 2, each coordinate stays within the honest values' range."""
    g = torch.Generator().manual_seed(0)
    honest = torch.randn(7, 4, generator=g)
    x = torch.cat([honest, torch.full((3, 4), scale)])
    out = meamed(f=3)(x, torch.ones(10)).update
    assert bool((out >= honest.min(0).values).all() and (out <= honest.max(0).values).all())


def test_chunks_do_not_change_the_answer_and_checks():
    x = torch.randn(9, 50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(meamed(f=2, chunk_bytes=200)(x, torch.ones(9)).update, meamed(f=2)(x, torch.ones(9)).update)
    with pytest.raises(ConfigError, match=r"^meamed needs n > 2f; got n=6, f=3$"):
        get("meamed", f=3).check_rows(6)


def test_ties_at_the_edge_go_to_the_lower_rows_as_a_stable_sort_would():
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 4, (11, 300), generator=g).float()  # many exact ties in every column
    out = meamed(f=4)(x, torch.ones(11)).update
    med = x.median(dim=0).values  # odd n: the middle value
    nearest = torch.sort((x - med).abs(), dim=0, stable=True).indices[:7]
    torch.testing.assert_close(out, torch.gather(x, 0, nearest).mean(0))
