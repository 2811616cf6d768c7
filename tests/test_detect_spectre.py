"""SPECTRE: QUE scores by hand, the robust-covariance filter on a planted cluster, the backdoor found."""

import math

import numpy as np
import pytest
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.spectre import inv_sqrt, k_grid, que_scores, robust_selection
from poisonlab.errors import ConfigError
from poisonlab.rng import numpy_rng
from test_detect_common import TARGET, backdoor_world, one_thread, single_thread  # noqa: F401 (autouse)


def test_que_scores_by_hand():
    # rows (+-sqrt(3), 0) and (0, +-1): covariance S = diag(3, 1) * 4/3 (unbiased, 4 rows, mean 0)
    w = np.array([[math.sqrt(3), 0.0], [-math.sqrt(3), 0.0], [0.0, 1.0], [0.0, -1.0]])
    s1, s2 = 2.0, 2.0 / 3.0                       # (3 + 3) / 3 and (1 + 1) / 3
    e1, e2 = math.exp(4 * (s1 - 1) / (s1 - 1)), math.exp(4 * (s2 - 1) / (s1 - 1))  # M = expm(4 (S - I) / (||S|| - 1))
    tau, value = que_scores(w, alpha=4.0)
    assert tau[0] == pytest.approx(3 * e1 / (e1 + e2)) and tau[2] == pytest.approx(e2 / (e1 + e2))
    assert value == pytest.approx((s1 * e1 + s2 * e2) / (e1 + e2))


def test_inverse_square_root_whitens():
    a = np.array([[4.0, 1.0], [1.0, 2.0]])
    r = inv_sqrt(a)
    assert np.allclose(r @ a @ r, np.eye(2))


def test_filter_removes_a_planted_cluster_and_nothing_from_clean_data():
    rng = numpy_rng(0, "spectre-test")
    clean = rng.standard_normal((950, 6))
    planted = rng.standard_normal((50, 6)) * 0.1 + np.array([0, 0, 0, 0, 0, 10.0])
    x = np.vstack([clean, planted])
    kept = robust_selection(x - x.mean(axis=0), 0.05, 0.1, limit=100)
    assert (~kept[950:]).all() and (~kept[:950]).sum() <= 50   # the cluster goes, within the 2 eps limit
    # a 5% cluster has a fourth moment the filter must act on; clean data is certified at once
    assert robust_selection(clean - clean.mean(axis=0), 0.05, 0.1, limit=100).all()


def test_k_grid_is_the_references():
    assert k_grid(100, 10) == [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]
    assert k_grid(32, 6) == [1, 4, 8, 14, 22, 32]


def test_backdoored_model_target_found_and_poison_flagged():
    poisoned, mask, _, bad, _ = backdoor_world()
    before = [p.clone() for p in bad.parameters()]
    det = get("spectre", epsilon=0.3).scan(data=poisoned, model=bad)
    assert det.details["strongest_class"] == TARGET
    ev = evaluate_detection(det, mask)
    assert ev.auroc > 0.97 and ev.tpr >= 0.9 and not det.flagged[poisoned.y != TARGET].any()
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))
    clean_scan = get("spectre", epsilon=0.3, flag="all").scan(data=poisoned, model=bad)
    assert clean_scan.flagged[poisoned.y != TARGET].any()  # BackdoorBench's mode flags 1.5 eps in every class


def test_raw_inputs_without_a_model():
    x = torch.cat([torch.zeros(60, 1, 2, 2), torch.ones(60, 1, 2, 2)]) + 0.01 * torch.arange(120.0)[:, None, None, None]
    det = get("spectre", epsilon=0.1, rows_per_dim=20).scan(data=Dataset(x, torch.zeros(120, dtype=torch.long), ("a",)))
    assert len(det) == 120 and det.num_flagged == 18  # 1.5 * round(0.1 * 120)


def test_bad_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="epsilon=0.7"):
        get("spectre", epsilon=0.7)
    with pytest.raises(ConfigError, match="flag='some'"):
        get("spectre", flag="some")
    with pytest.raises(ConfigError, match="alpha=0"):
        get("spectre", alpha=0)
