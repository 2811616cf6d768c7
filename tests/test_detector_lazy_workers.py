"""lazy_workers: zero, stale and copied updates flagged across rounds (hand-computed cases), its state
through a checkpoint, fuzzed rounds."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get
from poisonlab.fl.aggregators.lazy_workers import count_sketch
from poisonlab.fl.types import RoundContext
from tests.detector_support import fuzz_rounds, resumes_exactly


def ctx(r: int, k: int, state=None, sampled=None) -> RoundContext:
    return RoundContext(round=r, num_clients=10, sampled=torch.arange(k) if sampled is None else sampled, state=state)


def test_a_worker_repeating_its_update_is_flagged_in_round_2():
    g = torch.Generator().manual_seed(0)
    rule = get("lazy_workers")
    first = torch.randn(4, 30, generator=g)
    a = rule(first, torch.ones(4), ctx(0, 4))
    assert a.selected.all()
    second = torch.randn(4, 30, generator=g)
    second[2] = first[2]  # client 2 resends its round-1 update
    b = rule(second, torch.ones(4), ctx(1, 4, a.state))
    assert b.selected.tolist() == [True, True, False, True] and b.info["stale"] == [2]
    torch.testing.assert_close(b.update, second[[0, 1, 3]].mean(0))


def test_copies_keep_the_smallest_id_and_zero_updates_are_flagged():
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    x[4] = x[1]  # client 4 copies client 1 this round
    x[3] = 0
    out = get("lazy_workers")(x, torch.ones(5))
    assert out.info == {"zero": [3], "stale": [], "copy": [4]}
    assert out.selected.tolist() == [True, True, True, False, False]


def test_stale_updates_older_than_the_window_are_forgotten():
    rule = get("lazy_workers", window=1)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    s0 = rule(x, torch.ones(3), ctx(0, 3)).state
    s1 = rule(x + 1, torch.ones(3), ctx(1, 3, s0)).state
    assert rule(x, torch.ones(3), ctx(2, 3, s1)).selected.all()  # round 0 is outside window=1
    assert not rule(x + 1, torch.ones(3), ctx(2, 3, s1)).selected.any()


def test_distinct_updates_are_never_flagged_and_the_sketch_preserves_norms():
    """The defining property the other way round: honest (distinct) updates pass; and the CountSketch
    is an unbiased norm estimate (E ||s||^2 = ||x||^2: the mean over 2000 coordinates of rows is close)."""
    g = torch.Generator().manual_seed(3)
    rule, state = get("lazy_workers"), None
    for r in range(4):
        out = rule(torch.randn(8, 50, generator=g), torch.ones(8), ctx(r, 8, state))
        assert out.selected.all()
        state = out.state
    x = torch.randn(50, 4000, generator=g)
    ratio = count_sketch(x, 1024, 0).norm(dim=1) ** 2 / x.double().norm(dim=1) ** 2
    assert abs(float(ratio.mean()) - 1) < 0.02


def test_state_survives_a_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(4)
    x = [torch.randn(4, 9, generator=g) for _ in range(3)]
    x[2][1] = x[0][3]
    resumes_exactly(get("lazy_workers"), [(x[r], ctx(r, 4)) for r in range(3)], tmp_path)


def test_parameters_are_checked_in_one_line():
    for bad in ({"tol": -1}, {"window": 0}, {"buckets": 4}):
        with pytest.raises(ConfigError, match="^lazy_workers: "):
            get("lazy_workers", **bad)


def test_fuzzed_rounds():
    fuzz_rounds("lazy_workers", {})
