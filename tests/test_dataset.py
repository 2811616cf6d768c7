"""Dataset: validation, seeded stratified split, subset, concat."""

from __future__ import annotations

import pytest
import torch

from poisonlab.data import Dataset
from poisonlab.errors import ConfigError, DataError


def _toy(n_per_class=(50, 30, 20)) -> Dataset:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    x = torch.arange(len(y), dtype=torch.float32).reshape(-1, 1).repeat(1, 3)  # row i holds i: traceable
    return Dataset(x, y, ("a", "b", "c"), "toy")


def test_split_is_stratified_disjoint_and_complete():
    data = _toy()
    train, test = data.split(0.2, seed=0)
    assert test.class_counts().tolist() == [10, 6, 4] and train.class_counts().tolist() == [40, 24, 16]
    ids_train, ids_test = set(train.x[:, 0].long().tolist()), set(test.x[:, 0].long().tolist())
    assert not ids_train & ids_test and ids_train | ids_test == set(range(len(data)))
    # labels still belong to their rows
    assert torch.equal(data.y[train.x[:, 0].long()], train.y)


def test_split_is_deterministic_per_seed():
    data = _toy()
    a, b = data.split(0.25, seed=3)[1], data.split(0.25, seed=3)[1]
    c = data.split(0.25, seed=4)[1]
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    unstrat = data.split(0.3, seed=0, stratify=False)[1]
    assert len(unstrat) == 30
    assert torch.equal(unstrat.x, data.split(0.3, seed=0, stratify=False)[1].x)


def test_split_rejects_bad_fraction():
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match=rf"test_fraction={bad} is out of range; accepted: \(0.0, 1.0\)"):
            _toy().split(bad)


def test_split_does_not_modify_input():
    data = _toy()
    x, y = data.x.clone(), data.y.clone()
    data.split(0.5, seed=1)
    assert torch.equal(data.x, x) and torch.equal(data.y, y)


def test_subset_by_index_and_mask():
    data = _toy()
    sub = data.subset([5, 2, 99])
    assert sub.x[:, 0].tolist() == [5, 2, 99] and sub.y.tolist() == [0, 0, 2]
    mask = data.y == 1
    assert len(data.subset(mask)) == 30 and data.subset(mask).y.unique().tolist() == [1]
    assert sub.classes == data.classes and sub.name == "toy"


def test_concat_and_its_errors():
    data = _toy()
    both = data.concat(data.subset([0, 1]), name="more")
    assert len(both) == len(data) + 2 and both.name == "more" and torch.equal(both.x[-2:], data.x[:2])
    other_shape = Dataset(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), data.classes, "wide")
    with pytest.raises(DataError, match=r"cannot concat 'wide' with sample shape \(4,\) onto 'toy' with \(3,\)"):
        data.concat(other_shape)
    other_classes = Dataset(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), ("x", "y", "z"), "renamed")
    with pytest.raises(DataError, match="cannot concat 'renamed': its classes"):
        data.concat(other_classes)


def test_validation_and_dtypes():
    d = Dataset(torch.zeros(3, 1, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 1], dtype=torch.int32), ("a", "b"))
    assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64 and d.is_image and d.input_shape == (1, 2, 2)
    with pytest.raises(DataError, match=r"labels span \[0, 2\] but there are 2 classes"):
        Dataset(torch.zeros(3, 2), torch.tensor([0, 1, 2]), ("a", "b"), "bad")
    with pytest.raises(DataError, match=r"y has shape \(2,\); expected \(3,\)"):
        Dataset(torch.zeros(3, 2), torch.tensor([0, 1]), ("a", "b"))
    with pytest.raises(DataError, match=r"x has shape \(3,\)"):
        Dataset(torch.zeros(3), torch.tensor([0, 1, 1]), ("a", "b"))


def test_empty_subset():
    empty = _toy().subset([])
    assert len(empty) == 0 and empty.input_shape == (3,) and empty.classes == ("a", "b", "c")
