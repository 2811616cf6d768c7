"""clustering, clipped_clustering, majority_cluster: hand-computed rounds and their defining properties."""

from __future__ import annotations

import itertools

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators import clipped_clustering, clustering, get, majority_cluster
from poisonlab.fl.types import RoundContext


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("linkage", ["single", "complete", "average"])
def test_clustering_keeps_the_larger_direction(linkage):
    # three rows pointing along +x, two along -x: the +x cluster is larger; its weighted mean is the answer
    x = t([[1, 0.1], [2, 0], [3, -0.1], [-1, 0], [-5, 0.2]])
    w = torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0])
    out = clustering(linkage=linkage)(x, w)
    assert out.selected.tolist() == [True, True, True, False, False]
    assert torch.allclose(out.update, t([(1 + 2 + 6) / 4, (0.1 - 0.2) / 4]))


def test_single_linkage_is_the_optimal_bipartition_of_the_paper():
    """Sattler et al.'s bi-partition minimises max_{i in c1, j in c2} cos(x_i, x_j): brute force over all splits."""
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        x = torch.randn(7, 5, generator=g)
        cos = torch.nn.functional.cosine_similarity(x[:, None], x[None, :], dim=2)
        best, best_split = float("inf"), None
        for mask in itertools.product([False, True], repeat=6):
            c1 = torch.tensor((True,) + mask)
            if bool(c1.all()):
                continue
            worst = float(cos[c1][:, ~c1].max())
            if worst < best:
                best, best_split = worst, c1
        out = clustering(linkage="single")(x, torch.ones(7))
        kept = out.selected
        assert torch.equal(kept, best_split) or torch.equal(kept, ~best_split)


def test_clipped_clustering_by_hand_over_two_rounds():
    # round 0: norms 3, 4, 5, 1: tau = median = 3.5; the +x rows (3 of them) kept, clipped to 3, 3.5, 3.5
    x = t([[3, 0], [4, 0], [5, 0], [-1, 0]])
    rule = clipped_clustering()
    out = rule(x, torch.ones(4))
    assert out.selected.tolist() == [True, True, True, False]
    assert out.update.tolist() == pytest.approx([10 / 3, 0.0])
    assert out.info["clip_bound"] == 3.5
    # round 1: the history (1, 1, 3, 4, 5, 10, 10, 10) has median 4.5, the bound every +x row is clipped to
    y = t([[10, 0], [10, 0], [10, 0], [-1, 0]])
    out = rule(y, torch.ones(4), RoundContext(round=1, state=out.state))
    assert out.info["clip_bound"] == 4.5 and out.update.tolist() == pytest.approx([4.5, 0.0])
    assert len(out.state["norms"]) == 8


def test_majority_cluster_by_hand_and_permutation():
    x = t([[0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1], [10, 10], [10, 11], [11, 10]])
    out = majority_cluster()(x, torch.ones(7))
    assert out.selected.tolist() == [True] * 4 + [False] * 3
    assert out.update.tolist() == pytest.approx([0.05, 0.05])
    perm = torch.tensor([6, 2, 4, 0, 5, 1, 3])
    assert torch.allclose(majority_cluster()(x[perm], torch.ones(7)).update, out.update)


def test_majority_cluster_tie_goes_to_the_heavier_cluster_and_scale_does_not_matter():
    x = t([[0, 0], [0.1, 0], [10, 10], [10, 11]])
    out = majority_cluster()(x, torch.tensor([1.0, 1.0, 1.0, 3.0]))
    assert out.selected.tolist() == [False, False, True, True]
    huge = majority_cluster()(x * 1e30, torch.tensor([1.0, 1.0, 1.0, 3.0]))
    assert huge.selected.tolist() == out.selected.tolist()


def test_bad_parameters_are_one_line():
    with pytest.raises(ConfigError, match=r"^clustering: linkage='ward' is not known; accepted: single, complete"):
        get("clustering", linkage="ward")
    with pytest.raises(ConfigError, match=r"^majority_cluster: max_iter=0 is out of range"):
        get("majority_cluster", max_iter=0)
