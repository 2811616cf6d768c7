"""The one MAD z-score (poisonlab.stats): by hand, its zero-MAD policies, and Neural Cleanse's signed index."""

import torch

from poisonlab.stats import anomaly_index, robust_z


def test_robust_z_by_hand():
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    # median 3, |v - 3| = 2 1 0 1 97 -> MAD 1 -> scale 1.4826
    torch.testing.assert_close(robust_z(v), (v - 3.0) / 1.4826)
    ref = torch.tensor([0.0, 10.0, 20.0])  # median 10, MAD 10
    torch.testing.assert_close(robust_z(torch.tensor([25.0]), ref), torch.tensor([15.0 / 14.826]))


def test_zero_mad_falls_back_to_mean_deviation_then_zero():
    v = torch.tensor([5.0, 5.0, 5.0, 9.0])  # lower median 5, MAD 0; mean |dev| = 1
    torch.testing.assert_close(robust_z(v), (v - 5.0) / 1.2533)
    assert torch.equal(robust_z(torch.full((4,), 2.0)), torch.zeros(4))
    assert robust_z(torch.zeros(0)).numel() == 0


def test_floor_is_the_neural_cleanse_clamp():
    v = torch.tensor([5.0, 5.0, 5.0, 9.0], dtype=torch.float64)
    assert torch.equal(robust_z(v, floor=1e-12), (v - 5.0) / 1e-12)


def test_anomaly_index_is_the_old_neural_cleanse_formula_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 10, 11):
        norms = torch.rand(n, generator=g) * 50
        norms[0] = norms.median()  # an entry on the median: +0.0, never -0.0
        med = norms.double().median()
        old = (med - norms.double()) / ((norms.double() - med).abs().median() * 1.4826).clamp_min(1e-12)
        new = anomaly_index(norms)
        assert new.dtype == torch.float64 and torch.equal(new, old)
        assert not torch.signbit(new[new == 0]).any()
