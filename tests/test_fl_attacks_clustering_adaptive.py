"""The clustering-adapted attack (Blades' attack on ClippedClustering): a row rotated just past the benign cluster."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import get as get_rule
from poisonlab.fl.attacks import get
from poisonlab.fl.types import RoundContext


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.acos(max(-1.0, min(1.0, float(a @ b / (a.norm() * b.norm())))))


def test_hand_computed_plane_case():
    # benign rows at 0, 30 and 60 degrees (norms 1, 2, 1); every pair is 30 or 60 degrees apart
    degrees = torch.tensor([0.0, 30.0, 60.0]) * math.pi / 180
    benign = torch.stack([torch.cos(degrees), torch.sin(degrees)], dim=1) * torch.tensor([[1.0], [2.0], [1.0]])
    x = torch.cat([benign, torch.zeros(2, 2)]).double()
    mal = torch.tensor([False, False, False, True, True])
    out = get("clustering_adaptive", scale=3.0, margin=0.1)(x, mal, RoundContext(num_clients=5))
    mean = benign.double().mean(dim=0)
    # single linkage cut at two splits off an end row (0 or 60 degrees); the far member of the larger cluster
    # is the other end, 30 degrees from the mean (which lies at 30 degrees); theta_cross = 30 degrees - 0.1
    expected = math.pi / 6 + (math.pi / 6 - 0.1)
    assert abs(angle(out[3], mean) - expected) < 1e-6
    assert abs(float(out[3].norm()) - 3.0 * 1.0) < 1e-9  # scale x the median benign norm (1)
    assert torch.equal(out[3], out[4])
    with pytest.raises(ConfigError, match="linkage"):
        get("clustering_adaptive", linkage="ward")


def test_rows_join_the_clustering_rules_larger_cluster_and_move_it():
    g = torch.Generator().manual_seed(5)
    honest = torch.randn(1, 300, generator=g) + 0.5 * torch.randn(16, 300, generator=g)
    x = torch.cat([honest, torch.zeros(4, 300)])
    mal = torch.arange(20) >= 16
    out = get("clustering_adaptive")(x, mal, RoundContext(num_clients=20))
    agg = get_rule("clustering")(out, torch.ones(20), RoundContext(num_clients=20, malicious=mal))
    assert bool(agg.selected[mal].all())
    clean = honest.mean(dim=0)
    assert angle(agg.update, clean) > 0.3  # the kept mean is pulled away from the honest mean


def test_the_linkage_decides_single_takes_the_rows_in_average_splits_them_off():
    """Why the matrix's ClippedClustering (average linkage) holds while Sattler's clustering (single) falls."""
    g = torch.Generator().manual_seed(5)
    honest = torch.randn(1, 2000, generator=g) + 0.7 * torch.randn(40, 2000, generator=g)
    x = torch.cat([honest, torch.zeros(10, 2000)])
    mal = torch.arange(50) >= 40
    out = get("clustering_adaptive")(x, mal, RoundContext(num_clients=50))
    ctx = RoundContext(num_clients=50, malicious=mal)
    for rule, linkage, kept in [("clustering", "single", 10), ("clustering", "average", 0),
                                ("clipped_clustering", "single", 10), ("clipped_clustering", "average", 0)]:
        agg = get_rule(rule, linkage=linkage)(out, torch.ones(50), ctx)
        assert int(agg.selected[mal].sum()) == kept, (rule, linkage)
