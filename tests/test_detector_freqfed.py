"""freqfed: the DCT against scipy.fft.dct, the majority cluster of low-frequency components, fuzzed rounds."""

from __future__ import annotations

import pytest
import scipy.fft
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get
from poisonlab.fl.aggregators.freqfed import dct_low
from tests.detector_support import fuzz_rounds


@pytest.mark.parametrize("d", [1, 2, 5, 8, 33])
def test_dct_low_frequencies_match_scipy(d):
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(d))
    m = d // 2 + 1
    want = scipy.fft.dct(x.double().numpy(), type=2, norm="ortho", axis=1)[:, :m]
    torch.testing.assert_close(dct_low(x, m, chunk_bytes=64), torch.from_numpy(want))


def test_hand_computed_dct_of_a_tiny_input():
    # d = 2: X0 = (x0 + x1) / sqrt 2, X1 = (x0 - x1) / sqrt 2 (cos(pi/4) = cos(-3 pi/4) up to sign)
    out = dct_low(torch.tensor([[3.0, 1.0]]), 2)
    torch.testing.assert_close(out, torch.tensor([[4 / 2**0.5, 2 / 2**0.5]], dtype=torch.float64))


def test_a_minority_with_another_low_frequency_profile_is_left_out():
    g = torch.Generator().manual_seed(0)
    smooth = torch.linspace(0, 1, 64)
    x = smooth + 0.05 * torch.randn(10, 64, generator=g)  # honest: one low-frequency shape
    x[7:] = -smooth + 0.05 * torch.randn(3, 64, generator=g)  # 3 attackers: the opposite shape
    out = get("freqfed", fraction=0.1)(x, torch.ones(10))  # the first 7 of 64 coefficients
    assert out.selected.tolist() == [True] * 7 + [False] * 3
    torch.testing.assert_close(out.update, x[:7].mean(0))
    perm = torch.randperm(10, generator=g)  # permutation invariance of what is selected
    assert torch.equal(get("freqfed", fraction=0.1)(x[perm], torch.ones(10)).selected, out.selected[perm])


def test_fraction_is_checked_in_one_line():
    for bad in (0, 0.6, "x"):
        with pytest.raises(ConfigError, match="^freqfed: fraction="):
            get("freqfed", fraction=bad)


def test_fuzzed_rounds():
    fuzz_rounds("freqfed", {"fraction": 0.25}, rounds=2)
