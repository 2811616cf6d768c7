"""arc: clip the floor(2f(n-f)/n) largest rows to the next largest norm."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import arc, chain, get, krum
from poisonlab.fl.aggregators.arc import arc_count


def test_hand_computed_clipping():
    x = torch.tensor([[1.0], [2.0], [-3.0], [4.0], [10.0]])
    assert arc_count(5, 1) == 1 and arc_count(5, 2) == 2 and arc_count(10, 0) == 0
    out = arc(f=1)(x, torch.ones(5))  # c = floor(2 * 1/5 * 4) = 1: 10 is clipped to 4
    torch.testing.assert_close(out.update, torch.tensor([(1 + 2 - 3 + 4 + 4) / 5]))
    assert out.selected.tolist() == [True, True, True, True, False]
    two = arc(f=2).step(x, torch.ones(5))  # c = floor(2 * 2/5 * 3) = 2: 4 and 10 are clipped to 3
    torch.testing.assert_close(two.scale, torch.tensor([1.0, 1.0, 1.0, 3 / 4, 3 / 10]))
    assert two.info["arc_bound"] == 3.0


def test_only_c_rows_change_and_no_norm_grows():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 6, generator=g) * torch.rand(20, 1, generator=g) * 10
    agg = arc(f=4).step(x, torch.ones(20))
    assert int((agg.scale < 1).sum()) <= arc_count(20, 4) and bool((agg.scale <= 1).all())
    clipped = x * agg.scale[:, None]
    assert float(clipped.norm(dim=1).max()) <= agg.info["arc_bound"] * (1 + 1e-6)


def test_composes_with_a_rule_and_checks():
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(1))
    x[0] = 1e6
    out = chain(arc(f=2), krum(f=2))(x, torch.ones(9))
    assert float(out.update.norm()) < 10
    with pytest.raises(ConfigError, match=r"^arc needs n > 2f; got n=4, f=2$"):
        arc(f=2).check_rows(4)
    with pytest.raises(ConfigError, match=r"^arc: f='a' must be an integer >= 0$"):
        get("arc", f="a")
