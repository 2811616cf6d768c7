"""monna: the mean of the n - f rows nearest to a trusted vector (the server's update or a client's row)."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError, DataError
from poisonlab.fl.aggregators import get, monna
from poisonlab.fl.types import RoundContext

X = torch.tensor([[0.0], [1.0], [3.0], [10.0]])


def test_hand_computed_around_a_trusted_client():
    ctx = RoundContext(num_clients=4, sampled=torch.tensor([7, 4, 5, 6]))
    out = monna(f=1, trusted=4)(X, torch.ones(4), ctx)  # client 4 is row 1 (value 1): nearest 1, 0, 3
    torch.testing.assert_close(out.update, torch.tensor([4 / 3]))
    assert out.selected.tolist() == [True, True, True, False]
    torch.testing.assert_close(out.scores, torch.tensor([1.0, 0.0, 2.0, 9.0]))


def test_hand_computed_around_the_server_update():
    ctx = RoundContext(num_clients=4, sampled=torch.arange(4), extras={"server_update": torch.tensor([9.0])})
    out = monna(f=1)(X, torch.ones(4), ctx)  # nearest to 9: 10, 3, 1
    torch.testing.assert_close(out.update, torch.tensor([14 / 3]))


def test_chosen_attackers_are_no_farther_than_an_honest_row():
    """If the trusted vector is honest, a chosen attacker row is within the farthest chosen honest distance."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 6, generator=g)
    x[:3] = x[:3] * 0.2 + 5.0  # attackers placed near nobody
    ctx = RoundContext(num_clients=10, sampled=torch.arange(10))
    out = monna(f=3, trusted=9)(x, torch.ones(10), ctx)
    assert out.selected.tolist() == [False] * 3 + [True] * 7


def test_missing_trusted_vector_is_one_line():
    with pytest.raises(ConfigError, match=r"^monna needs a trusted vector: the server's update .* set"
                                          r" federated.server_data.root_size"):
        monna()(X, torch.ones(4))
    with pytest.raises(DataError, match=r"^monna: trusted client 9 has no update in round 0"):
        monna(trusted=9)(X, torch.ones(4))
    with pytest.raises(ConfigError, match=r"^monna needs n > f; got n=2, f=2$"):
        get("monna", f=2).check_rows(2)
