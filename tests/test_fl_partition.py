"""Partitioners: disjoint covers, determinism, and each one's class statistics."""

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.partition import PARTITIONS, class_histogram, partition

LABELS = torch.arange(10).repeat_interleave(200)  # 2000 samples, 10 balanced classes


def _is_disjoint_cover(parts, n, exact=True):
    allidx = torch.cat(parts)
    assert len(allidx.unique()) == len(allidx)
    if exact:
        assert len(allidx) == n


@pytest.mark.parametrize("name,params", [("iid", {}), ("dirichlet", {"alpha": 0.3}),
                                         ("shards", {"classes_per_client": 2}), ("quantity_skew", {"beta": 0.5})])
def test_disjoint_cover_and_deterministic(name, params):
    a = partition(name, LABELS, 20, seed=3, **params)
    b = partition(name, LABELS, 20, seed=3, **params)
    c = partition(name, LABELS, 20, seed=4, **params)
    assert len(a) == 20 and all(len(p) >= 1 for p in a)
    _is_disjoint_cover(a, len(LABELS))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def _mean_tv_to_global(hist):
    """Mean total-variation distance between each client's label distribution and the uniform one."""
    p = hist.double() / hist.sum(dim=1, keepdim=True)
    return float((p - 0.1).abs().sum(dim=1).mean() / 2)


def test_iid_is_balanced_and_dirichlet_small_alpha_is_skewed():
    h_iid = class_histogram(partition("iid", LABELS, 20, seed=0), LABELS, 10)
    h_dir = class_histogram(partition("dirichlet", LABELS, 20, seed=0, alpha=0.1), LABELS, 10)
    h_big = class_histogram(partition("dirichlet", LABELS, 20, seed=0, alpha=100.0), LABELS, 10)
    sizes = h_iid.sum(dim=1)
    assert int(sizes.max() - sizes.min()) <= 1
    # iid clients (100 samples) hold nearly uniform labels; alpha=0.1 clients are dominated by few classes
    assert _mean_tv_to_global(h_iid) < 0.2
    assert _mean_tv_to_global(h_dir) > 0.5
    assert _mean_tv_to_global(h_big) < 0.2
    assert float((h_dir > 0).sum(dim=1).double().mean()) < 5  # few classes per client


def test_shards_give_exactly_c_classes():
    for c in (1, 2, 3):
        h = class_histogram(partition("shards", LABELS, 20, seed=1, classes_per_client=c), LABELS, 10)
        assert torch.equal((h > 0).sum(dim=1), torch.full((20,), c))


def test_quantity_skew_sizes_unequal_labels_iid():
    parts = partition("quantity_skew", LABELS, 10, seed=2, beta=0.5)
    sizes = torch.tensor([len(p) for p in parts]).double()
    assert float(sizes.max() / sizes.min()) > 3
    h = class_histogram(parts, LABELS, 10)
    big = h[sizes.argmax()]
    assert (big > 0).all()  # the largest client sees every class


def test_class_histogram_counts():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    h = class_histogram([torch.tensor([0, 3]), torch.tensor([1, 2, 4, 5])], labels, 3)
    assert h.tolist() == [[1, 0, 1], [0, 2, 2]]


def test_bad_parameters_raise_config_error():
    with pytest.raises(ConfigError, match="alpha"):
        PARTITIONS.get("dirichlet", alpha=0.0)
    with pytest.raises(ConfigError, match="classes_per_client"):
        partition("shards", LABELS, 5, classes_per_client=11)
    with pytest.raises(ConfigError, match="did you mean 'iid'"):
        PARTITIONS.get("idd")
