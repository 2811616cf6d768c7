"""The CPU selection path of median and trimmed mean (numpy partition on column blocks, in threads) against
their definition by a full sort, with NaN/Inf, ties and many blocks; the input is never modified."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from poisonlab.rng import generator

M = importlib.import_module("poisonlab.fl.aggregators.median")


def _matrix(k: int, d: int, seed: int) -> torch.Tensor:
    g = generator(seed, "order-statistics")
    x = torch.randn(k, d, generator=g).round(decimals=1)  # ties
    u = torch.rand(k, d, generator=g)
    x[u < 0.03] = float("nan")
    x[(u >= 0.03) & (u < 0.05)] = float("inf")
    x[(u >= 0.05) & (u < 0.07)] = -float("inf")
    x[(u >= 0.07) & (u < 0.08)] = 3.0e38
    return x


def _by_sort(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Mean (float64) of sorted ranks lo..hi-1 per column, NaN sorting last (torch.sort)."""
    return torch.sort(x, dim=0).values[lo:hi].double().mean(dim=0).float()


@pytest.mark.parametrize("k", [1, 2, 7, 10, 31])
@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20])  # 64 bytes: one column per block, many threads' blocks
def test_selection_equals_the_sorted_definition(k, chunk_bytes):
    x = _matrix(k, 300, k)
    before = x.clone()
    median = M.coordinate_median(x, chunk_bytes)
    torch.testing.assert_close(median, _by_sort(x, (k + 1) // 2 - 1, k // 2 + 1), equal_nan=True, rtol=0, atol=0)
    for cut in sorted({0, k // 4, (k - 1) // 2}):
        got = M.coordinate_trimmed_mean(x, cut, chunk_bytes)
        torch.testing.assert_close(got, _by_sort(x, cut, k - cut), equal_nan=True, rtol=1e-6, atol=0)
    assert torch.equal(x.nan_to_num(7.0), before.nan_to_num(7.0)), "the input must not be reordered in place"


def test_the_median_is_numpys_median_on_finite_input_and_the_torch_path_agrees():
    x = torch.randn(10, 1000, generator=generator(0, "order-statistics", "finite"))
    assert torch.equal(M.coordinate_median(x), torch.from_numpy(np.median(x.numpy(), axis=0)).float())
    torch_path = M.coordinate_median(x.to(torch.float16)).float()  # float16: torch's kthvalue path
    torch.testing.assert_close(torch_path, M.coordinate_median(x), atol=1e-2, rtol=1e-2)
