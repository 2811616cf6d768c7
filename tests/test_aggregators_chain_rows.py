"""A rule left with too few rows after the non-finite guard drops some says so and applies no update (fl/aggregators/base.py: Rule.step)."""

import logging

import torch

from poisonlab.fl.aggregators import build_chain
from poisonlab.fl.types import RoundContext


def test_bulyan_left_with_fewer_than_4f_plus_3_rows_skips_the_round_in_one_warning(caplog):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g)
    x[:10] = float("inf")  # the inf attack: 10 of 50 rows; 40 < 4 * 10 + 3 remain
    rule = build_chain([("bulyan", {"f": 10})])
    with caplog.at_level(logging.WARNING, logger="poisonlab.fl.aggregators"):
        agg = rule(x, torch.ones(50), RoundContext(round=3))
    assert torch.equal(agg.update, torch.zeros(8)) and not bool(torch.as_tensor(agg.selected).any())
    assert agg.info["skipped"] == ("bulyan needs n >= 4f + 3; got n=40, f=10 once 10 of 50 rows were dropped"
                                   " (NaN/Inf or an earlier step): no update this round")
    assert any("got n=40" in r.getMessage() for r in caplog.records)


def test_enough_rows_after_the_guard_aggregate_as_before():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g)
    x[:5] = float("nan")  # 45 >= 43 remain
    agg = build_chain([("bulyan", {"f": 10})])(x, torch.ones(50), RoundContext(round=0))
    assert "skipped" not in agg.info and bool(torch.isfinite(agg.update).all()) and agg.update.abs().sum() > 0
