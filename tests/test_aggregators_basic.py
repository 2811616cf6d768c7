"""mean, median, trimmed_mean, krum, multi_krum, norm_clip, chain and the NaN policy, checked by hand."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy import stats

from poisonlab.errors import ConfigError, DataError
from poisonlab.fl.aggregators import AGGREGATORS, build_rule, chain, get, krum, median, norm_clip, trimmed_mean
from poisonlab.fl.aggregators.krum import pairwise_sq_distances
from poisonlab.fl.types import RoundContext
from poisonlab.rng import numpy_rng

CTX = RoundContext()


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def ones(k):
    return torch.ones(k)


def test_mean_is_weighted_fedavg():
    out = get("mean")(t([[1, 2], [3, 4], [5, 0]]), torch.tensor([1.0, 1.0, 2.0]), CTX)
    assert out.update.tolist() == [3.5, 1.5]  # (1 + 3 + 2*5) / 4, (2 + 4 + 0) / 4
    assert out.selected.all()


def test_median_odd_and_even_by_hand():
    odd = get("median")(t([[3, 0], [1, 7], [2, -1]]), ones(3), CTX).update
    assert odd.tolist() == [2, 0]
    even = get("median")(t([[1], [5], [2], [10]]), ones(4), CTX).update
    assert even.tolist() == [3.5]  # sorted 1, 2, 5, 10 -> (2 + 5) / 2


def test_trimmed_mean_by_hand():
    x = t([[1], [2], [3], [4], [100]])
    assert get("trimmed_mean", beta=0.2)(x, ones(5), CTX).update.tolist() == [3.0]  # cut 1 each end
    four = t([[1], [2], [3], [100]])
    assert get("trimmed_mean", beta=0.2)(four, ones(4), CTX).update.tolist() == [26.5]  # int(0.8) = 0: mean


@pytest.mark.parametrize("k", [7, 8, 21])
def test_median_and_trimmed_mean_match_numpy_scipy(k):
    x = numpy_rng(1, "agg-test", k).standard_normal((k, 301)).astype(np.float32)
    xt = torch.from_numpy(x)
    small = 301 * k * 4  # force several column chunks
    med = median(chunk_bytes=small // 3)(xt, ones(k), CTX).update.numpy()
    np.testing.assert_allclose(med, np.median(x, axis=0), rtol=0, atol=1e-6)
    for beta in (0.0, 0.1, 0.25, 0.49):
        tm = trimmed_mean(beta=beta, chunk_bytes=small // 3)(xt, ones(k), CTX).update.numpy()
        np.testing.assert_allclose(tm, stats.trim_mean(x, beta, axis=0), rtol=0, atol=1e-5)


def test_krum_scores_by_hand():
    # 1-D points 0, 1, 2, 10, 11; n=5, f=1: each score sums the n - f - 2 = 2 smallest squared distances
    x = t([[0], [1], [2], [10], [11]])
    out = get("krum", f=1)(x, ones(5), CTX)
    torch.testing.assert_close(out.scores, t([5, 2, 5, 65, 82]))  # 1+4, 1+1, 1+4, 1+64, 1+81
    assert out.update.tolist() == [1.0]
    assert out.selected.tolist() == [False, True, False, False, False]
    multi = get("multi_krum", f=1, m=3)(x, ones(5), CTX)
    assert multi.selected.tolist() == [True, True, True, False, False]
    assert multi.update.tolist() == [1.0]  # mean of 0, 1, 2


def test_pairwise_distances_match_direct_and_chunks():
    x = torch.from_numpy(numpy_rng(2, "dist").standard_normal((9, 1000)).astype(np.float32)) + 50.0
    direct = torch.cdist(x.double(), x.double()) ** 2
    for budget in (9 * 4 * 64, 10**9):
        got = pairwise_sq_distances(x, chunk_bytes=budget)
        torch.testing.assert_close(got, direct, rtol=1e-5, atol=1e-3)
        assert (got.diagonal() == 0).all() and (got >= 0).all()


def test_cosine_similarities_match_float64_on_huge_tiny_and_zero_rows_in_chunks():
    from poisonlab.fl.aggregators.base import cosine_similarities

    x = torch.from_numpy(numpy_rng(3, "cos").standard_normal((6, 1000)).astype(np.float32))
    x[1] *= 1e35  # float32 products of these rows would overflow without the per-row scaling
    x[2] *= 1e-40  # denormal entries
    x[3] = 0.0
    x[4] = -x[0] * 3e30  # exactly anti-parallel to row 0
    xd = x.double()
    expected = (xd / xd.norm(dim=1, keepdim=True).clamp_min(1e-300)) @ (xd / xd.norm(dim=1, keepdim=True).clamp_min(1e-300)).T
    for budget in (6 * 4 * 64, 10**9):  # 16 column blocks, and one
        got = cosine_similarities(x, chunk_bytes=budget)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert got[3].abs().max() == 0 and abs(float(got[0, 4]) + 1) < 1e-6


def test_norm_clip_by_hand_alone_and_chained():
    x = t([[3, 4], [0.3, 0.4]])
    out = get("norm_clip", bound=1.0)(x, ones(2), CTX)
    torch.testing.assert_close(out.update, t([0.45, 0.6]))  # (0.6, 0.8) and (0.3, 0.4) averaged
    assert out.selected.tolist() == [False, True]
    torch.testing.assert_close(out.scores, t([5.0, 0.5]))
    x3 = t([[30, 40], [0.3, 0.4], [0.6, 0.0]])
    med = chain(norm_clip(1.0), median())(x3, ones(3), CTX)
    # clipped rows (0.6, 0.8), (0.3, 0.4), (0.6, 0): coordinate medians 0.6, 0.4
    torch.testing.assert_close(med.update, t([0.6, 0.4]))
    assert med.selected.tolist() == [False, True, True]


@pytest.mark.parametrize("name", ["mean", "median", "trimmed_mean", "krum", "multi_krum", "norm_clip"])
def test_nonfinite_drop_zero_error(name, caplog):
    x = torch.from_numpy(numpy_rng(3, "nan").standard_normal((8, 5)).astype(np.float32))
    x[2, 1] = float("nan")
    x[5, 0] = float("inf")
    with caplog.at_level(logging.WARNING, logger="poisonlab.fl.aggregators"):
        out = build_rule(name)(x, ones(8), CTX)
    assert torch.isfinite(out.update).all()
    assert not out.selected[2] and not out.selected[5]
    assert "NaN/Inf" in caplog.text
    clean = build_rule(name)(x[[0, 1, 3, 4, 6, 7]], ones(6), CTX)
    torch.testing.assert_close(out.update, clean.update)
    zeroed = build_rule(name, {"nonfinite": "zero"})(x, ones(8), CTX)
    assert torch.isfinite(zeroed.update).all() and not zeroed.selected[2]
    with pytest.raises(DataError, match=r"clients \[2, 5\]"):
        build_rule(name, {"nonfinite": "error"})(x, ones(8), CTX)


def test_nonfinite_overflowing_but_finite_row_is_kept():
    x = t([[3e38, 3e38], [1.0, 1.0], [2.0, 2.0]])  # the row sum overflows, the values are finite
    out = build_rule("median")(x, ones(3), CTX)
    assert out.selected.all() and out.update.tolist() == [2.0, 2.0]


def test_all_rows_dropped_gives_zero_update():
    x = torch.full((4, 3), float("nan"))
    out = build_rule("median")(x, ones(4), CTX)
    assert out.update.tolist() == [0.0, 0.0, 0.0] and not out.selected.any()


def test_parameter_checks_name_rule_n_and_f():
    x = torch.zeros(6, 3)
    with pytest.raises(ConfigError, match=r"^krum needs n > 2f \+ 2; got n=6, f=2$"):
        get("krum", f=2)(x, ones(6), CTX)
    with pytest.raises(ConfigError, match=r"multi_krum needs 1 <= m <= n - f; got m=6, n=7, f=2"):
        get("multi_krum", f=2, m=6)(torch.zeros(7, 3), ones(7), CTX)
    with pytest.raises(ConfigError, match=r"multi_krum: m=0 is out of range"):
        get("multi_krum", f=1, m=0)
    with pytest.raises(ConfigError, match=r"trimmed_mean needs 0 <= beta < 0.5; got beta=0.5"):
        get("trimmed_mean", beta=0.5)
    with pytest.raises(ConfigError, match=r"krum: f=-1 is out of range"):
        get("krum", f=-1)
    with pytest.raises(ConfigError, match=r"norm_clip: bound=0"):
        get("norm_clip", bound=0)
    with pytest.raises(ConfigError, match="does not take parameter 'beta'"):
        AGGREGATORS.get("krum", beta=0.1)
    with pytest.raises(ConfigError, match="nonfinite='skip' is not a policy"):
        build_rule("mean", {"nonfinite": "skip"})
    with pytest.raises(ConfigError, match="does not take parameter 'nonfinite'"):
        get("mean", nonfinite="drop")  # the bare rule: the policy is the guard's parameter (build_rule)
    with pytest.raises(DataError, match="weights must be finite"):
        build_rule("mean")(x, torch.tensor([1.0, -1, 1, 1, 1, 1]), CTX)


def test_chain_rejects_a_reducer_before_the_end():
    with pytest.raises(TypeError, match="only the last step may reduce"):
        chain(krum(f=1), median())


def test_registry_entries_have_references():
    for entry in AGGREGATORS.entries():
        assert entry.reference and entry.summary, entry.name
