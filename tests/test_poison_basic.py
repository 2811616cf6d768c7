"""Label flipping, feature noise and the dirty-label backdoor: counts, masks, labels, purity, seeding."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.metrics import attack_success_rate
from poisonlab.poison import POISONS, PatchTrigger, make_poison


def test_targeted_flip_half_of_source(digits):
    y0 = digits.y.clone()
    p = POISONS.get("label_flip", source=7, target=1, fraction=0.5).apply(digits, seed=0)
    n7 = int((y0 == 7).sum())
    assert p.count == round(0.5 * n7)
    assert torch.all(y0[p.mask] == 7) and torch.all(p.data.y[p.mask] == 1)
    assert torch.equal(p.data.y[~p.mask], y0[~p.mask])
    assert torch.equal(digits.y, y0) and torch.equal(p.data.x, digits.x)  # input untouched, features unchanged


def test_random_flip_always_changes_class_and_is_uniform(digits):
    p = POISONS.get("label_flip", count=1000).apply(digits, seed=1)
    assert p.count == 1000
    assert torch.all(p.data.y[p.mask] != digits.y[p.mask])
    shift = (p.data.y[p.mask] - digits.y[p.mask]) % 10
    counts = torch.bincount(shift, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 1000 / 9 * 0.6  # every other class reachable, roughly uniform


def test_flip_seeded(digits):
    a = POISONS.get("label_flip", fraction=0.2).apply(digits, seed=5)
    b = POISONS.get("label_flip", fraction=0.2).apply(digits, seed=5)
    c = POISONS.get("label_flip", fraction=0.2).apply(digits, seed=6)
    assert torch.equal(a.data.y, b.data.y) and not torch.equal(a.data.y, c.data.y)


def test_flip_errors(digits):
    with pytest.raises(ConfigError, match="source=12"):
        POISONS.get("label_flip", source=12, target=1).apply(digits)
    with pytest.raises(ConfigError, match="count=5000"):
        POISONS.get("label_flip", count=5000).apply(digits)
    with pytest.raises(ConfigError, match="exactly one"):
        POISONS.get("label_flip", fraction=0.1, count=3).apply(digits)


def test_feature_noise_bounded(digits):
    p = POISONS.get("feature_noise", fraction=0.25, eps=0.1).apply(digits, seed=0)
    diff = (p.data.x - digits.x).abs()
    assert p.count == round(0.25 * len(digits))
    assert float(diff.max()) <= 0.1 + 1e-6
    assert torch.all(diff[~p.mask] == 0) and float(diff[p.mask].mean()) > 0.01
    assert p.data.x.min() >= 0 and p.data.x.max() <= 1
    assert torch.equal(p.data.y, digits.y)


def test_backdoor_rate_stamp_and_relabel(digits):
    trig = PatchTrigger(size=2, color=1.0, position="top-left")
    bd = POISONS.get("backdoor", trigger=trig, target=3, rate=0.1)
    p = bd.apply(digits, seed=0)
    assert p.count == round(0.1 * len(digits))
    assert torch.all(digits.y[p.mask] != 3) and torch.all(p.data.y[p.mask] == 3)
    assert torch.all(p.data.x[p.mask][:, :, :2, :2] == 1.0)
    assert torch.equal(p.data.x[~p.mask], digits.x[~p.mask]) and torch.equal(p.data.y[~p.mask], digits.y[~p.mask])


def test_backdoor_sources_count_and_triggered(digits):
    bd = make_poison({"name": "backdoor", "params": {"trigger": {"name": "pixel", "params": {"distance": 1}},
                                                     "target": 0, "count": 20, "sources": [4, 5]}})
    p = bd.apply(digits, seed=2)
    assert p.count == 20 and set(digits.y[p.mask].tolist()) <= {4, 5}
    trig = bd.triggered(digits)
    assert torch.equal(trig.y, digits.y)  # TRUE labels kept
    assert torch.all(trig.x[:, :, -1, -1] == 1.0)
    # ASR of a model that always answers 0 is 1; excludes the true-0 rows
    assert attack_success_rate(torch.zeros_like(trig.y), trig.y, bd.target) == 1.0


def test_backdoor_needs_budget():
    with pytest.raises(ConfigError, match="rate"):
        POISONS.get("backdoor", trigger="pixel", target=0)
    with pytest.raises(ConfigError, match="did you mean 'backdoor'"):
        POISONS.get("backdor")


def test_gallery_png(tmp_path, digits):
    from poisonlab.errors import DataError
    from poisonlab.poison.gallery import render_gallery

    x = digits.x[:4]
    png = render_gallery(x, PatchTrigger(2, 1.0, "top-left")(x), tmp_path / "g.png", ["a", "b", "c", "d"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "g.png").read_bytes() == png
    assert not list(tmp_path.glob(".g.png*"))  # no temp file left behind
    with pytest.raises(DataError, match="gallery"):
        render_gallery(x, x[:2], None)
