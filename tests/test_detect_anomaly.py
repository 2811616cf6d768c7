"""Anomaly detection: planted outliers found by each method; z-score by hand; per-class mode."""

import pytest
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.errors import ConfigError
from poisonlab.rng import generator
from test_detect_common import single_thread  # noqa: F401 (autouse: torch on one thread)


def with_outliers(n=300, d=5, k=15, seed=0):
    g = generator(seed, "anomaly")
    x = torch.randn(n, d, generator=g)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:k] = True
    u = torch.randn(k, d, generator=g)
    x[mask] = 12.0 * u / u.norm(dim=1, keepdim=True)  # scattered far points, not a cluster of their own
    return x, mask


@pytest.mark.parametrize("method", ["zscore", "kmeans", "dbscan", "isolation_forest"])
def test_each_method_finds_planted_outliers(method):
    x, mask = with_outliers()
    det = get("anomaly", method=method, contamination=0.05, k=3, epochs=150).scan(data=x)
    ev = evaluate_detection(det, mask)
    assert ev.auroc > 0.95, method
    assert ev.tpr >= 0.8 and ev.fpr <= 0.05, method


def test_autoencoder_flags_points_off_the_learned_subspace():
    g = generator(2, "ae")
    normal = torch.randn(300, 2, generator=g) @ torch.randn(2, 12, generator=g) + 0.05 * torch.randn(300, 12, generator=g)
    mask = torch.zeros(300, dtype=torch.bool)
    mask[:15] = True
    normal[mask] = torch.randn(15, 12, generator=g) * normal.std()  # same scale, off the 2-d subspace
    det = get("anomaly", method="autoencoder", contamination=0.05, hidden=16, epochs=300).scan(data=normal)
    ev = evaluate_detection(det, mask)
    assert ev.auroc > 0.95 and ev.tpr >= 0.8


def test_zscore_by_hand():
    x = torch.tensor([[0.0], [0.0], [0.0], [4.0]])
    det = get("anomaly", method="zscore", threshold=1.4).scan(data=x)
    z = (4.0 - 1.0) / float(torch.tensor([0.0, 0.0, 0.0, 4.0]).std())
    assert float(det.scores[3]) == pytest.approx(z)
    assert det.flagged.tolist() == [False, False, False, True]


def test_per_class_uses_each_class_separately():
    # class 1 lives far away; globally all of class 1 looks anomalous, per class only the planted point does
    g = generator(1, "pc")
    x = torch.cat([torch.randn(100, 3, generator=g), 20 + torch.randn(20, 3, generator=g)])
    x[0] = 6.0
    y = torch.cat([torch.zeros(100), torch.ones(20)]).long()
    det = get("anomaly", method="zscore", per_class=True, threshold=4.0).scan(data=Dataset(x, y, ("a", "b")))
    assert det.flagged.tolist() == [True] + [False] * 119


def test_unknown_method():
    with pytest.raises(ConfigError, match="method='lof'"):
        get("anomaly", method="lof")
