"""Mimic (Karimireddy, He and Jaggi 2022): every malicious row copies one honest row."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError, DataError
from poisonlab.fl.attacks import get
from poisonlab.fl.types import RoundContext


def rows() -> tuple[torch.Tensor, torch.Tensor]:
    """Honest rows spread along the first axis (0, 1, 2, 10) and two malicious rows."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.1], [2.0, -0.1], [10.0, 0.0], [5.0, 5.0], [6.0, 6.0]], dtype=torch.float64)
    return x, torch.arange(6) >= 4


def test_mimic_copies_the_row_farthest_along_the_top_direction():
    x, mal = rows()
    out = get("mimic")(x, mal, RoundContext(num_clients=6))
    # centred honest rows lie along the first axis; |10 - 3.25| is the largest projection
    assert torch.equal(out[mal], x[3].expand(2, 2))


def test_mimic_with_a_target_and_without_omniscience():
    x, mal = rows()
    assert torch.equal(get("mimic", target=1)(x, mal, RoundContext(num_clients=6))[mal], x[1].expand(2, 2))
    own = get("mimic", target=1)(x, mal, RoundContext(num_clients=6, omniscient=False))
    assert torch.equal(own[mal], x[5].expand(2, 2))  # the second of its own rows
    with pytest.raises(DataError, match="target=7"):
        get("mimic", target=7)(x, mal, RoundContext(num_clients=6))
    with pytest.raises(ConfigError, match="target"):
        get("mimic", target=-1)
