"""Poisoned-data clients: DBA trigger pieces, the tabular feature trigger, edge-case photos, persistence, synthetic data."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError, DataError
from poisonlab.poison.dba import PieceTrigger, dba_backdoors, footprint, piece_masks
from poisonlab.poison.edge_case import EdgeCase, photo_files
from poisonlab.poison.triggers import FeatureTrigger
from poisonlab.fl.persistence import persistence
from poisonlab.data.synthetic import client_sizes, synthetic
from poisonlab.metrics import attack_success_rate
from poisonlab.poison import POISONS, TRIGGERS, make_trigger
from tests.conftest import shared_path

PATCH = {"name": "patch", "params": {"size": 4, "color": 1.0, "position": "bottom-right"}}


def test_feature_trigger_sets_only_the_listed_features():
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    out = FeatureTrigger(features=(1, 6), value=2.5)(x)
    assert torch.all(out[:, [1, 6]] == 2.5)
    keep = [0, 2, 3, 4, 5, 7]
    assert torch.equal(out[:, keep], x[:, keep]) and not torch.equal(out, x)
    assert "features" in TRIGGERS
    with pytest.raises(ConfigError, match="features"):
        FeatureTrigger(features=(9,))(x)


def test_feature_trigger_backdoor_through_poisons():
    data = synthetic(num_samples=200, seed=1)
    bd = POISONS.get("backdoor", trigger={"name": "features", "params": {"features": [0, 1, 2, 3], "value": 4.0}},
                     target=2, rate=0.3)
    p = bd.apply(data, seed=0)
    assert p.count == 60
    assert torch.all(p.data.x[p.mask][:, :4] == 4.0) and torch.all(p.data.y[p.mask] == 2)
    assert torch.equal(p.data.x[~p.mask], data.x[~p.mask])


@pytest.mark.parametrize("layout,pieces", [("grid", 4), ("rows", 2), ("cols", 4), ("grid", 2)])
def test_dba_pieces_partition_the_full_trigger(layout, pieces):
    full = make_trigger(PATCH)
    mask = footprint(full, (1, 12, 12))
    assert int(mask.sum()) == 16 and bool(mask[0, 8:, 8:].all())
    parts = piece_masks(mask, pieces, layout)
    assert len(parts) == pieces
    total = torch.stack(parts).sum(0)
    assert torch.equal(total.bool(), mask) and int(total.max()) == 1  # disjoint, covering
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    stamped = x
    for i in range(pieces):
        piece = PieceTrigger(full, i, pieces, layout)(x)
        assert torch.equal(piece[:, ~parts[i]], x[:, ~parts[i]])  # only its piece changes
        stamped = PieceTrigger(full, i, pieces, layout)(stamped)
    assert torch.equal(stamped, full(x))  # all pieces together are the global trigger


def test_dba_grid_quadrants_and_tabular_split():
    parts = piece_masks(footprint(make_trigger(PATCH), (1, 8, 8)), 4, "grid")
    assert bool(parts[0][0, 4:6, 4:6].all()) and int(parts[0].sum()) == 4
    assert bool(parts[3][0, 6:8, 6:8].all())
    tab = FeatureTrigger(features=(0, 1, 2, 3, 4, 5), value=3.0)
    groups = [torch.nonzero(m).flatten().tolist() for m in piece_masks(footprint(tab, (10,)), 3)]
    assert groups == [[0, 1], [2, 3], [4, 5]]


def test_dba_backdoors_and_errors():
    local, full = dba_backdoors(PATCH, 4, target=0, rate=0.2)
    assert len(local) == 4 and isinstance(local[2].trigger, PieceTrigger) and local[2].trigger.piece == 2
    data = synthetic(num_samples=50).replace(x=torch.zeros(50, 1, 8, 8))
    assert torch.all(full.triggered(data).x[:, 0, 4:, 4:] == 1.0)
    assert local[0].apply(data).data.x[:, 0, 4:, 4:].sum() > 0
    assert PieceTrigger(PATCH, 1, 4).to_dict()["params"]["trigger"]["name"] == "patch"
    with pytest.raises(ConfigError, match="fixed"):
        footprint(make_trigger({"name": "patch", "params": {"size": 2, "position": "random"}}), (1, 8, 8))
    with pytest.raises(ConfigError, match="cannot be split"):
        piece_masks(footprint(make_trigger("pixel"), (1, 8, 8)), 2)
    with pytest.raises(ConfigError, match="piece"):
        PieceTrigger(PATCH, 4, 4)


def test_persistence_counts_rounds_until_asr_drops():
    asr = [0.1, 0.9, 0.95, 0.97, 0.8, 0.6, 0.4, 0.2]
    history = [{"round": r, "attack_success_rate": a} for r, a in enumerate(asr)]
    p = persistence(history, last_attack_round=3, threshold=0.5)
    assert (p.rounds, p.censored, p.first_below) == (2, False, 6)  # rounds 4, 5 still >= 0.5
    p = persistence(history, last_attack_round=3, threshold=0.1)
    assert p.censored and p.rounds == 4 and p.first_below is None
    gaps = [{"round": r, "attack_success_rate": (a if r % 2 == 0 else None)} for r, a in enumerate(asr)]
    assert persistence(gaps, 3, 0.5).first_below == 6
    with pytest.raises(ConfigError, match="threshold"):
        persistence(history, 3, 1.5)


def test_synthetic_is_seeded_and_balanced():
    a, b = synthetic(num_samples=1000, seed=3), synthetic(num_samples=1000, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape == (1000, 32) and a.num_classes == 10
    assert torch.equal(a.class_counts(), torch.full((10,), 100))
    assert not torch.equal(a.x, synthetic(num_samples=1000, seed=4).x)
    sizes = client_sizes(200, seed=1)
    assert min(sizes) >= 50 and max(sizes) <= 150 and len(set(sizes)) > 20


def test_edge_case_photos_are_appended_and_held_out():
    folder = shared_path("poison-images", "rutan-boomerang")
    files = photo_files(folder)
    assert len(files) == 26 and sum(f.stem == "rb-14" for f in files) == 1
    data = synthetic(num_samples=40).replace(x=torch.zeros(40, 1, 28, 28))
    edge = EdgeCase(str(folder), target=7, test_fraction=0.3)
    p = edge.apply(data)
    assert len(p.data) == 40 + 18 and p.count == 18 and torch.all(p.data.y[p.mask] == 7)
    held = edge.triggered(data)
    assert len(held) == 8 and held.input_shape == (1, 28, 28)
    train_x = p.data.x[p.mask]
    assert not any(torch.equal(h, t) for h in held.x for t in train_x)  # disjoint photos
    assert attack_success_rate(torch.full((8,), 7), held.y, 7) == 1.0
    with pytest.raises(DataError, match="does not exist"):
        EdgeCase("/nonexistent/folder").apply(data)


def test_dba_poison_trains_on_its_piece_and_is_measured_with_the_full_trigger():
    data = synthetic(num_samples=40).replace(x=torch.zeros(40, 1, 8, 8))
    p = POISONS.get("dba", trigger=PATCH, piece=3, pieces=4, target=0, rate=0.25)
    out = p.apply(data, seed=0)
    assert out.count == 10 and out.info["piece"] == 3
    stamped = out.data.x[out.mask][:, 0]
    assert torch.all(stamped[:, 6:, 6:] == 1) and int(stamped.sum()) == 10 * 4  # its 2x2 quadrant only
    assert torch.all(p.triggered(data).x[:, 0, 4:, 4:] == 1)  # the full 4x4 patch


def test_edge_case_is_a_registered_poison():
    folder = shared_path("poison-images", "rutan-boomerang")
    p = POISONS.get("edge_case", path=str(folder), target=0, copies=2)
    data = synthetic(num_samples=20).replace(x=torch.zeros(20, 1, 28, 28))
    out = p.apply(data)
    assert out.count == 36 and torch.equal(out.data.x[:20], data.x)
