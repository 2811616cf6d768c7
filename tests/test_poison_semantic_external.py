"""Semantic backdoor (subpopulation by a visual property) and external photos (real files, ingest, concat)."""

from __future__ import annotations

import pytest
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, DataError
from poisonlab.poison import POISONS
from poisonlab.poison.semantic import ink, slant, width
from tests.conftest import shared_path


def test_properties_by_hand():
    x = torch.zeros(3, 1, 5, 5)
    x[0, 0, :, 2] = 1.0                     # vertical bar: no shear, width 1
    x[1, 0, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]] = 1.0  # diagonal: col = row, mu11 / mu02 = 1
    x[2, 0, 1:4, 1:4] = 0.6                 # block, width 3 (0.6 > 0.5)
    assert torch.allclose(ink(x), torch.tensor([5 / 25, 5 / 25, 9 * 0.6 / 25]))
    assert torch.allclose(slant(x)[:2], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert torch.equal(width(x), torch.tensor([1.0, 5.0, 3.0]))


def test_semantic_relabels_only_the_subpopulation(digits):
    bd = POISONS.get("semantic_backdoor", source=7, target=1, property="ink", quantile=0.75)
    members = bd.members(digits)
    sevens = torch.nonzero(digits.y == 7).flatten()
    assert abs(len(members) - 0.25 * len(sevens)) <= 2
    assert ink(digits.x[members]).min() >= ink(digits.x[sevens]).quantile(0.75) - 1e-6
    p = bd.apply(digits, seed=0)
    assert torch.equal(torch.nonzero(p.mask).flatten(), members)  # fraction 1.0: all members
    assert torch.all(p.data.y[p.mask] == 1) and torch.equal(p.data.y[~p.mask], digits.y[~p.mask])
    held = bd.triggered(digits)
    assert torch.all(held.y == 7) and len(held) == len(members)  # true labels kept
    with pytest.raises(ConfigError, match="property 'thickness'"):
        POISONS.get("semantic_backdoor", source=7, target=1, property="thickness")


def test_external_photos_concat_and_probe():
    folder = shared_path("poison-images", "rutan-boomerang")
    held = shared_path("poison-images", "test-aircraft")
    base = Dataset(torch.zeros(10, 1, 28, 28), torch.arange(10), tuple(str(i) for i in range(10)), "tiny")
    ext = POISONS.get("external", folder=str(folder), label="3", invert=True, test_folder=str(held))
    p = ext.apply(base, seed=0)
    assert p.count == 27 and len(p.data) == 37  # 26 JPEGs + 1 WebP, concatenated
    assert torch.equal(p.mask, torch.arange(37) >= 10)
    assert torch.all(p.data.y[10:] == 3) and torch.equal(p.data.x[:10], base.x)
    assert p.data.x.shape[1:] == (1, 28, 28) and 0 <= float(p.data.x.min()) and float(p.data.x.max()) <= 1
    assert float(p.data.x[10:].std()) > 0.05  # real image content, not blank
    probe = ext.probe(base)
    assert probe["x"].shape == (5, 1, 28, 28) and probe["target"] == 3
    with pytest.raises(ConfigError, match="label='bird'"):
        POISONS.get("external", folder=str(folder), label="bird").apply(base)


def test_external_errors(tmp_path):
    base = Dataset(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), ("a", "b"))
    with pytest.raises(DataError, match="does not exist"):
        POISONS.get("external", folder=str(tmp_path / "nope")).apply(base)
    with pytest.raises(DataError, match="no image files"):
        POISONS.get("external", folder=str(tmp_path)).apply(base)
