"""bucketing: random buckets keyed by client id and round, their weighted means, composed through chain."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import bucketing, build_rule, chain, get, krum, mean, median
from poisonlab.fl.types import RoundContext


def ctx(k, round=0, seed=0, ids=None):
    return RoundContext(round=round, num_clients=k, sampled=torch.arange(k) if ids is None else ids, seed=seed)


def test_buckets_are_the_weighted_means_of_their_members():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [10.0, 20.0], [7.0, 7.0]])
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0])
    agg = bucketing(s=2).step(x, w, ctx(5))
    bucket = torch.tensor(agg.info["bucket"])
    assert sorted(torch.bincount(bucket).tolist()) == [1, 2, 2]  # ceil(5 / 2) = 3 buckets, one of the leftover row
    for b in range(3):
        members = bucket == b
        total = w[members].sum()
        want = (w[members, None] * x[members]).sum(0) / total if total > 0 else x[members].mean(0)
        torch.testing.assert_close(agg.rows[b], want)
        assert agg.weights[b] == total


def test_alone_or_before_mean_it_is_the_weighted_mean():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(9, 4, generator=g), torch.arange(1.0, 10.0)
    want = (w[:, None] * x).sum(0) / w.sum()
    torch.testing.assert_close(bucketing(s=2)(x, w, ctx(9)).update, want)
    torch.testing.assert_close(chain(bucketing(s=4), mean())(x, w, ctx(9)).update, want)


def test_s_one_changes_nothing_and_s_k_is_one_bucket():
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(7, 3, generator=g), torch.ones(7)
    torch.testing.assert_close(chain(bucketing(s=1), median())(x, w, ctx(7)).update, median()(x, w).update)
    assert len(chain(bucketing(s=7), median())(x, w, ctx(7)).info["group_selected"]) == 1


def test_buckets_follow_client_ids_and_change_with_the_round():
    k = 10
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(3))
    ids = torch.arange(k)
    x = torch.randn(k, 3, generator=torch.Generator().manual_seed(4))
    a = bucketing(s=3).step(x, torch.ones(k), ctx(k, round=5, ids=ids))
    b = bucketing(s=3).step(x[perm], torch.ones(k), ctx(k, round=5, ids=ids[perm]))
    assert torch.tensor(b.info["bucket"]).tolist() == torch.tensor(a.info["bucket"])[perm].tolist()
    rule = chain(bucketing(s=3), median())
    torch.testing.assert_close(rule(x[perm], torch.ones(k), ctx(k, 5, ids=ids[perm])).update,
                               rule(x, torch.ones(k), ctx(k, 5)).update)
    rounds = {tuple(bucketing(s=3).step(x, torch.ones(k), ctx(k, round=r)).info["bucket"]) for r in range(6)}
    assert len(rounds) > 1  # a new draw each round


def test_f_attackers_spoil_at_most_f_buckets():
    """The paper's argument: every bucket without an attacker is a mean of honest rows only."""
    x = torch.zeros(12, 2)
    x[[3, 8]] = 1e6
    for round in range(5):
        agg = bucketing(s=2).step(x, torch.ones(12), ctx(12, round=round))
        assert int((agg.rows.abs().sum(1) > 0).sum()) <= 2
        # 6 buckets, at most 2 spoiled: their median is an honest bucket's
        assert chain(bucketing(s=2), median())(x, torch.ones(12), ctx(12, round)).update.abs().max() == 0


def test_the_rule_after_it_is_checked_on_the_buckets():
    rule = chain(bucketing(s=2), krum(f=1))
    rule.check_rows(10)  # 5 buckets > 2f + 2
    with pytest.raises(ConfigError, match=r"krum needs n > 2f \+ 2; got n=4, f=1"):
        rule.check_rows(8)
    out = build_rule("bucketing", {"s": 2})(torch.ones(3, 2), torch.ones(3))
    torch.testing.assert_close(out.update, torch.ones(2))


def test_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"^bucketing: s=0 is out of range; accepted: integer >= 1$"):
        get("bucketing", s=0)


def test_a_config_chain_is_checked_on_the_buckets_before_it_runs():
    from poisonlab.config import parse
    from poisonlab.config.validate import check_components

    doc = {"seed": 0, "data": {"dataset": "digits"}, "model": {"name": "mlp"},
           "federated": {"clients": 8, "sample": 1.0, "rounds": 1,
                         "aggregator": [{"name": "bucketing", "params": {"s": 2}}, {"name": "krum", "params": {"f": 1}}]}}
    with pytest.raises(ConfigError, match=r"^federated.aggregator.1: krum needs n > 2f \+ 2; got n=4, f=1 .*4 rows"
                                          r" after the earlier steps' regrouping"):
        check_components(parse(doc))
    doc["federated"]["aggregator"][0]["params"]["s"] = 1
    check_components(parse(doc))
