"""Activation clustering: a planted cluster in one class, the three analyses, reclassification, orient."""

import pytest
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.errors import ConfigError
from poisonlab.rng import generator
from test_detect_common import backdoor_world, one_thread, single_thread  # noqa: F401 (autouse)


def planted(share=0.25, n_per_class=200, d=12, seed=0):
    """3 classes of isotropic Gaussian features at different means; class 0 has a planted far cluster."""
    g = generator(seed, "ac")
    means = torch.eye(3, d) * 10.0
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = means[y] + torch.randn(len(y), d, generator=g)
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[: int(share * n_per_class)] = True
    x[mask] = means[1] + torch.randn(int(mask.sum()), d, generator=g) + torch.eye(d)[5] * 4.0  # near class 1
    return Dataset(x, y, ("0", "1", "2")), mask


def test_silhouette_analysis_flags_only_the_planted_cluster():
    data, mask = planted()
    det = get("activation_clustering", dims=5).scan(data=data)
    per = det.details["per_class"]
    assert per[0]["suspicious"] and not per[1]["suspicious"] and not per[2]["suspicious"]
    assert per[0]["suspicious_share"] == pytest.approx(0.25)
    ev = evaluate_detection(det, mask)
    assert ev.tpr == 1.0 and ev.fpr == 0.0 and ev.auroc == 1.0


def test_relative_size_and_smaller_analyses():
    data, mask = planted(share=0.25)
    rel = get("activation_clustering", dims=5, analysis="relative_size", size_threshold=0.3).scan(data=data)
    assert bool(rel.flagged[mask].all())
    small = get("activation_clustering", dims=5, analysis="smaller").scan(data=data)
    assert small.num_flagged > rel.num_flagged  # 'smaller' flags a cluster in every class
    too_big = get("activation_clustering", dims=5, analysis="relative_size", size_threshold=0.2).scan(data=data)
    assert not bool(too_big.flagged[mask].any())  # a 25% cluster is above a 20% size threshold


def test_exclusionary_reclassification_keeps_poison_and_orient_breaks_size_ties():
    data, mask = planted(share=0.25)
    det = get("activation_clustering", dims=5, exclusionary=True).scan(data=data)
    assert det.details["per_class"][0]["reclassification_ratio"]["smaller"] < 1.0
    assert bool(det.flagged[mask].all()) and not bool(det.flagged[~mask].any())
    # poison is 60% of class 0: 'smaller' picks the clean part, orient picks the part near class 1
    data, mask = planted(share=0.6)
    plain = get("activation_clustering", dims=5).scan(data=data)
    oriented = get("activation_clustering", dims=5, orient=True).scan(data=data)
    assert not bool(plain.flagged[mask].any())
    assert evaluate_detection(oriented, mask).tpr == 1.0 and evaluate_detection(oriented, mask).fpr == 0.0


def test_ica_reduction_finds_the_planted_cluster():
    data, mask = planted()
    det = get("activation_clustering", dims=5, reduce="ica", analysis="relative_size").scan(data=data)
    assert evaluate_detection(det, mask).tpr == 1.0


def test_backdoored_embeddings():
    poisoned, mask, _, bad, _ = backdoor_world()
    with one_thread():
        det = get("activation_clustering", analysis="relative_size").scan(data=poisoned, model=bad)
    assert evaluate_detection(det, mask).tpr == 1.0
    per = det.details["per_class"][0]
    assert per["suspicious"] and per["suspicious_share"] == pytest.approx(float(mask.sum()) / float((poisoned.y == 0).sum()))


def test_bad_names_are_config_errors():
    with pytest.raises(ConfigError, match="analysis='size'"):
        get("activation_clustering", analysis="size")
    with pytest.raises(ConfigError, match="reduce='svd'"):
        get("activation_clustering", reduce="svd")


def test_distance_analysis_by_hand_flags_the_cluster_nearer_another_class():
    # class 0: 3 rows at the origin and 2 at (10, 0); class 1: 4 rows around (10, 1). Medians: class 0 (0, 0),
    # class 1 (10, 1); cluster at (10, 0) is 10 from its class and 1 from class 1 -> poisonous (ratio 10)
    x = torch.tensor([[0.0, 0], [0, 0], [0, 0], [10, 0], [10, 0], [10, 0.8], [10, 1], [10, 1], [10, 1.2]])
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1])
    det = get("activation_clustering", dims=2, analysis="distance").scan(data=Dataset(x, y, ("0", "1")))
    assert det.flagged.tolist() == [False] * 3 + [True] * 2 + [False] * 4
    assert det.details["per_class"][0]["poisonous_clusters"] == ["smaller"]
    assert float(det.scores[3]) == pytest.approx(10.0) and not det.details["per_class"][1]["suspicious"]


def test_distance_analysis_finds_the_planted_cluster():
    data, mask = planted(share=0.25)
    det = get("activation_clustering", dims=5, analysis="distance").scan(data=data)
    ev = evaluate_detection(det, mask)
    assert ev.tpr == 1.0 and ev.fpr == 0.0
    with pytest.raises(ConfigError, match="distance_space='raw'"):
        get("activation_clustering", analysis="distance", distance_space="raw")
