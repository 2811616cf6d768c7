"""The aggregator protocol: rule(updates, weights, ctx=None) -> Aggregate, explicit state, bare get(),
chain state keys, the config builder (guard first), row requirements and memory reported by the rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import (AGGREGATORS, build_chain, build_rule, chain, check_rule_params, get, mean,
                                      median, multi_krum, nonfinite_guard, norm_clip)
from poisonlab.fl.types import RoundContext


def rows(k=9, d=6, seed=0):
    return torch.randn(k, d, generator=torch.Generator().manual_seed(seed))


def test_a_rule_runs_without_a_round_context():
    x = rows()
    assert torch.equal(get("mean")(x, torch.ones(9)).update, (torch.ones(9) / 9) @ x)
    assert get("median")(x, torch.ones(9)).selected.all()
    with pytest.raises(ConfigError, match=r"^fltrust needs .*set federated\.server_data\.root_size"):
        get("fltrust")(x, torch.ones(9))


def test_get_is_the_bare_rule_and_build_rule_puts_the_guard_first():
    x = rows()
    x[2, 0] = float("nan")
    assert repr(get("median")) == "median()"
    assert not torch.isfinite(get("mean")(x, torch.ones(9)).update).all()  # no silent guard
    assert repr(build_rule("median", {"nonfinite": "zero"})) == "chain(nonfinite('zero'), median())"
    out = build_rule("mean")(x, torch.ones(9))
    assert torch.isfinite(out.update).all() and not out.selected[2]
    steps = build_chain([("norm_clip", {"bound": 1.0, "nonfinite": "error"}), ("median", {"nonfinite": "zero"})])
    assert repr(steps) == "chain(nonfinite('error'), norm_clip(1.0), median())"  # the first step's policy


def test_check_rule_params_accepts_the_guard_policy_and_names_it():
    check_rule_params("krum", {"f": 1, "nonfinite": "zero"})
    with pytest.raises(ConfigError, match=r"does not take parameter 'ff'; did you mean 'f'\? accepted: f,"
                                          r" chunk_bytes, nonfinite"):
        check_rule_params("krum", {"ff": 1})


def test_no_rule_keeps_state_of_its_own():
    """Every registered rule called twice with the same (state-less) context gives the same answer."""
    x, w = rows(11, 8, 1), torch.arange(1.0, 12.0)
    ctx = RoundContext(round=2, num_clients=11, sampled=torch.arange(11), seed=1, global_params=torch.zeros(8),
                       extras={"server_update": torch.ones(8), "base_accuracy": 0.5,
                               "validate": lambda c: 1 / (1 + torch.linalg.vector_norm(c.double(), dim=1))})
    small = {"deepsight": {"classes": 2, "features": 1}}  # rules whose defaults need a larger model than d = 8
    for name in AGGREGATORS.names():
        rule = get(name, **small.get(name, {}))
        first, again = rule(x, w, ctx), rule(x, w, ctx)
        assert torch.equal(first.update, again.update), name


def test_chain_nests_step_states_under_their_index():
    x, w = rows(), torch.ones(9)
    rule = chain(norm_clip(10.0), get("centered_clipping", tau=1.0))
    ctx = RoundContext(sampled=torch.arange(9), num_clients=9)
    first = rule(x, w, ctx)
    assert set(first.state) == {"1.center"}
    second = rule(x, w, dataclasses.replace(ctx, state=first.state))
    alone = get("centered_clipping", tau=1.0)
    want = alone(x, w, dataclasses.replace(ctx, state={"center": first.state["1.center"]}))
    torch.testing.assert_close(second.update, want.update)


def test_a_round_with_every_row_dropped_keeps_the_state():
    rule = build_rule("foolsgold")
    ctx = RoundContext(sampled=torch.arange(3), num_clients=3)
    first = rule(torch.ones(3, 2), torch.ones(3), ctx)
    empty = rule(torch.full((3, 2), float("nan")), torch.ones(3), dataclasses.replace(ctx, state=first.state))
    assert empty.info["empty"] and empty.state.keys() == first.state.keys()
    assert torch.equal(empty.state["1.history"], first.state["1.history"])


def test_a_passing_step_alone_is_the_weighted_mean_of_what_it_passes_on():
    x, w = rows() * 3, torch.arange(1.0, 10.0)
    clip = norm_clip(1.0)
    alone = clip(x, w)
    chained = chain(clip, mean())(x, w)
    torch.testing.assert_close(alone.update, chained.update)
    assert torch.equal(alone.selected, chained.selected) and torch.equal(alone.scores, chained.scores)
    guard = nonfinite_guard("drop")(x, w)
    torch.testing.assert_close(guard.update, mean()(x, w).update)


def test_rows_dropped_below_a_rules_requirement_skip_the_round():
    """A NaN row dropped by the guard leaves too few rows for multi_krum's m: a zero update, not a crash."""
    x = rows(6, 4)
    x[0, 0] = float("nan")
    rule = chain(nonfinite_guard(), multi_krum(f=1, m=5))
    rule.check_rows(6)  # 6 rows would do (n > 2f + 2 and m <= n - f)
    out = rule(x, torch.ones(6))
    assert out.info["too_few_rows"] == 5 and out.info["empty"] and not out.selected.any()
    with pytest.raises(ConfigError, match="multi_krum needs 1 <= m <= n - f; got m=5, n=5, f=1"):
        multi_krum(f=1, m=5)(x[1:], torch.ones(5))  # without a dropping step it is the config's mistake


def test_requirements_and_memory_are_reported_by_the_rule():
    for name in AGGREGATORS.names():
        rule = get(name)
        rule.check_rows(100)
        assert all(b >= 0 for b in rule.memory_parts(10, 1000, 50).values()), name
    with pytest.raises(ConfigError, match=r"^bulyan needs n >= 4f \+ 3; got n=6, f=1$"):
        get("bulyan", f=1).check_rows(6)
    with pytest.raises(ConfigError, match=r"^krum needs n > 2f \+ 2"):
        build_rule("audited", {"rule": "krum", "params": {"f": 3}}).check_rows(8)
    parts = chain(norm_clip(1.0), median(chunk_bytes=100)).memory_parts(4, 10)
    assert parts == {"median column chunks": 100}
    assert get("krum").memory_bytes(5, 10) == 2 * 8 * 25 + 4 * 5 * 10
    assert get("foolsgold").memory_parts(5, 10, clients=50) == {"foolsgold history ({clients} x {d})": 4 * 50 * 10
                                                                 + 8 * 25}
