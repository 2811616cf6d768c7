"""RONI: label-flipped candidate groups hurt validation loss; clean groups do not."""

import pytest
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.features import fit_heads, heads_metrics
from poisonlab.errors import ConfigError
from poisonlab.rng import generator
from test_detect_common import single_thread  # noqa: F401 (autouse: torch on one thread)


def blobs(n, seed, d=6, classes=3):
    """Gaussian blobs: class k centred at 3 * e_k."""
    g = generator(seed, "blobs")
    y = torch.randint(classes, (n,), generator=g)
    return Dataset(3.0 * torch.eye(classes, d)[y] + torch.randn(n, d, generator=g), y, tuple("abc"[:classes]))


def test_fit_heads_leaves_out_zero_weight_rows():
    data = blobs(300, 0)
    weights = torch.ones(2, 300)
    weights[1, data.y == 2] = 0.0  # head 1 never sees class 2
    W, b = fit_heads(data.x, data.y, 3, weights=weights, steps=80)
    acc, _ = heads_metrics(W, b, data.x[data.y == 2], data.y[data.y == 2])
    assert acc[0] > 0.9 and acc[1] == 0.0


def test_flipped_groups_have_negative_impact():
    cand = blobs(200, 1)
    y = cand.y.clone()
    mask = torch.zeros(200, dtype=torch.bool)
    mask[:40] = True
    y[mask] = (y[mask] + 1) % 3  # label flips
    det = get("roni", base_size=60, steps=100).scan(data=cand.replace(y=y), validation=blobs(200, 2))
    ev = evaluate_detection(det, mask)
    assert ev.auroc > 0.9 and ev.tpr >= 0.75 and ev.fpr <= 0.05
    assert float(det.scores[mask].mean()) > 0.02 > abs(float(det.scores[~mask].mean()))
    grouped = get("roni", group_size=5, base_size=60, steps=100).scan(data=cand.replace(y=y), validation=blobs(200, 2))
    assert len(set(grouped.scores.tolist())) <= 40  # every member of a group shares its group's score


def test_roni_needs_validation():
    with pytest.raises(ConfigError, match="needs validation"):
        get("roni").scan(data=blobs(10, 0))


def test_impact_is_the_definition_computed_directly():
    from poisonlab.detect.features import standardize

    cand, base, val = blobs(3, 5), blobs(40, 6), blobs(50, 7)
    det = get("roni", steps=60).scan(data=cand, validation=val, clean=base)
    fb, fc, fv = standardize(base.x, cand.x, val.x)
    W0, b0 = fit_heads(fb, base.y, 3, weights=torch.ones(1, 40), steps=60)
    ref = heads_metrics(W0, b0, fv, val.y)[1][0]
    for i in range(3):  # impact(q) = CE_val(B + q) - CE_val(B)
        W, b = fit_heads(torch.cat([fb, fc[i:i + 1]]), torch.cat([base.y, cand.y[i:i + 1]]), 3,
                         weights=torch.ones(1, 41), steps=60)
        assert float(det.scores[i]) == pytest.approx(float(heads_metrics(W, b, fv, val.y)[1][0] - ref), abs=1e-4)
