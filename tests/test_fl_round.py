"""The shared server steps of a round (poisonlab.fl.round): sampling, adversaries, aggregate-and-apply, record."""

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.adversary import Adversary
from poisonlab.fl.round import aggregate_and_apply, apply_adversaries, round_record, sample_clients, sample_size
from poisonlab.fl.types import Aggregate, RoundContext


def test_sample_size_rounds_half_to_even_counts_and_caps():
    assert sample_size(0.25, 10) == 2  # 2.5 -> 2 (the engine's rule, now Flower's too)
    assert sample_size(0.35, 10) == 4  # 3.5 -> 4
    assert sample_size(0.01, 10) == 1  # at least one
    assert sample_size(1.0, 7) == 7 and sample_size(3, 10) == 3 and sample_size(30, 10) == 10
    for bad in (0, -1, 0.0, True, "0.5"):
        with pytest.raises(ConfigError, match="sample"):
            sample_size(bad, 10)


def test_sample_clients_is_seeded_sorted_and_keeps_forced_ids():
    a = sample_clients(10, 0.3, seed=4, round=2)
    assert torch.equal(a, sample_clients(10, 0.3, seed=4, round=2)) and len(a) == 3
    assert a.tolist() == sorted(set(a.tolist())) and a.dtype == torch.long
    assert any(not torch.equal(a, sample_clients(10, 0.3, seed=4, round=r)) for r in range(3, 8))
    forced = sample_clients(10, 0.3, seed=4, round=2, forced=[8, 9])
    assert {8, 9} <= set(forced.tolist()) and len(forced) == 3
    assert sample_clients(10, 1, seed=4, round=2, forced=[1, 5, 7]).tolist() == [1, 5, 7]  # all forced kept


def test_apply_adversaries_boosts_then_attacks_their_rows_only():
    seen = []

    def attack(updates, malicious, ctx):
        seen.append((updates[malicious].clone(), ctx.omniscient))
        out = updates.clone()
        out[malicious] = -updates[malicious]
        return out

    updates = torch.ones(4, 2)
    masks = [torch.tensor([False, True, False, False]), torch.tensor([False, False, False, True]),
             torch.zeros(4, dtype=torch.bool)]
    advs = [Adversary(boost=3.0, attack=attack, omniscient=False), Adversary(boost=2.0),
            Adversary(boost=100.0, attack=attack)]
    out = apply_adversaries(updates, masks, advs, RoundContext(malicious=masks[0] | masks[1]))
    assert out.tolist() == [[1, 1], [-3, -3], [1, 1], [2, 2]]
    assert len(seen) == 1 and seen[0][0].tolist() == [[3.0, 3.0]] and seen[0][1] is False  # boosted first


def mean_rule(updates, weights, ctx):
    return Aggregate(updates.mean(dim=0), torch.ones(len(updates), dtype=torch.bool))


def test_aggregate_and_apply_moves_by_server_lr_and_keeps_the_model_when_not_finite():
    g = torch.ones(3)
    new, agg, applied = aggregate_and_apply(mean_rule, torch.full((2, 3), 2.0), torch.ones(2), RoundContext(), g, 0.5)
    assert applied and new.tolist() == [2.0, 2.0, 2.0] and agg.update.tolist() == [2.0, 2.0, 2.0]
    nan = torch.tensor([[1.0, float("nan"), 0.0], [1.0, 1.0, 1.0]])
    new, _, applied = aggregate_and_apply(mean_rule, nan, torch.ones(2), RoundContext(), g, 1.0)
    assert not applied and new is g
    huge = torch.full((1, 3), 3.0e38)  # finite aggregate, but global + 2 * it overflows float32
    new, agg, applied = aggregate_and_apply(mean_rule, huge, torch.ones(1), RoundContext(), g, 2.0)
    assert bool(torch.isfinite(agg.update).all()) and not applied and new is g


def test_round_record_flags_from_selection_or_the_rules_own_list():
    sampled = torch.tensor([2, 5, 7, 9])
    malicious = torch.tensor([False, True, True, False])
    updates = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
    agg = Aggregate(torch.zeros(2), torch.tensor([True, False, True, False]))
    rec = round_record(4, sampled, malicious, updates, agg, applied=True)
    assert (rec.round, rec.sampled, rec.malicious) == (4, [2, 5, 7, 9], [5, 7])
    assert rec.selected == [2, 7] and rec.flagged == [5, 9] and (rec.precision, rec.recall) == (0.5, 0.5)
    assert rec.update_norms == [5.0, 1.0, 2.0, 1.0] and rec.applied
    own = Aggregate(torch.zeros(2), torch.ones(4, dtype=torch.bool), info={"flagged": [5, 7]})
    rec = round_record(4, sampled, malicious, updates, own, applied=False)
    assert rec.flagged == [5, 7] and rec.selected == [2, 5, 7, 9] and (rec.precision, rec.recall) == (1.0, 1.0)
    assert not rec.applied
    none = round_record(0, sampled, torch.zeros(4, dtype=torch.bool), updates,
                        Aggregate(torch.zeros(2), torch.ones(4, dtype=torch.bool)), True)
    assert none.precision is None and none.recall is None
