"""SCAn: the test statistic, the split and the MAD index by hand, the EM on a known two-component model, the
backdoor's target class found and its poison flagged."""

import numpy as np
import pytest
import torch

from poisonlab.detect import get
from poisonlab.detect.base import evaluate_detection
from poisonlab.detect.scan import anomaly_index, find_split, global_model, j_statistic
from poisonlab.errors import ConfigError, DataError
from poisonlab.rng import numpy_rng
from test_detect_common import TARGET, backdoor_world, bars, single_thread  # noqa: F401 (autouse)


def reference_calc_test(x, s_u, s_e, group, u1, u2):
    """The reference's calc_test (backdoor-toolbox SCAn.py), loops and all."""
    n = len(x)
    f = np.linalg.pinv(s_e)
    g = -np.linalg.pinv(n * s_u + s_e)
    mu = np.zeros(x.shape[1])
    for i in range(n):
        mu = mu - s_e @ g @ x[i]
    b1, b2 = mu @ f @ mu - u1 @ f @ u1, mu @ f @ mu - u2 @ f @ u2
    n1 = int(group.sum())
    sc = n1 * b1 + (n - n1) * b2
    for i in range(n):
        sc -= 2 * x[i] @ f @ (mu - (u1 if group[i] else u2))
    return sc / n


def test_j_by_hand_and_as_the_reference_expands_it():
    # 1-D: x = -1, 1; S_u = S_e = 1: mu = 1/(2+1) * 0 = 0; two identities u = -1, 1 fit exactly:
    # J = mean[(x - 0)^2 - 0] = 1
    x = np.array([[-1.0], [1.0]])
    assert j_statistic(x, np.eye(1), np.eye(1), np.array([False, True]), np.array([1.0]), np.array([-1.0])) == \
        pytest.approx(1.0)
    rng = numpy_rng(0, "scan-test")
    x, a, b = rng.normal(size=(30, 3)), rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    s_u, s_e = a @ a.T + np.eye(3), b @ b.T + np.eye(3)
    group = rng.random(30) > 0.4
    u1, u2 = x[group].mean(axis=0), x[~group].mean(axis=0)
    assert j_statistic(x, s_u, s_e, group, u1, u2) == pytest.approx(reference_calc_test(x, s_u, s_e, group, u1, u2))


def test_split_recovers_two_separated_groups():
    rng = numpy_rng(1, "scan-test")
    x = np.concatenate([rng.normal(size=(20, 2)), rng.normal(size=(10, 2)) + 8.0])
    group, u1, u2 = find_split(x, np.eye(2), numpy_rng(0, "split"))
    truth = np.arange(30) >= 20
    assert np.array_equal(group, truth) or np.array_equal(group, ~truth)
    assert np.allclose(sorted([u1[0], u2[0]]), [x[:20, 0].mean(), x[20:, 0].mean()])


def test_anomaly_index_by_hand():
    # a = J / max = [1, .1, .12, .08, .1]; median .1; |a - .1| = [.9, 0, .02, .02, 0], median .02
    index = anomaly_index(np.array([10.0, 1.0, 1.2, 0.8, 1.0]))
    assert index[0] == pytest.approx(0.9 / (1.4826 * 0.02)) and index[3] == pytest.approx(-0.02 / (1.4826 * 0.02))


def test_em_recovers_the_two_covariances():
    # 300 classes of 30 samples: identities ~ N(0, diag(4, 1)), variation ~ N(0, diag(1, .25))
    rng = numpy_rng(2, "scan-em")
    labels = np.repeat(np.arange(300), 30)
    x = (rng.normal(size=(300, 2)) * [2.0, 1.0])[labels] + rng.normal(size=(9000, 2)) * [1.0, 0.5]
    s_u, s_e, _ = global_model(x - x.mean(axis=0), labels, 300)
    assert np.allclose(np.diag(s_u), [4.0, 1.0], rtol=0.2) and np.allclose(np.diag(s_e), [1.0, 0.25], rtol=0.1)
    assert abs(s_u[0, 1]) < 0.3 and abs(s_e[0, 1]) < 0.05


def test_the_target_class_is_infected_and_its_poison_flagged():
    poisoned, mask, test_set, bad, _ = backdoor_world()
    det = get("scan").scan(data=poisoned, model=bad, validation=test_set)
    assert det.details["infected"] == [TARGET] and det.details["anomaly_index"][TARGET] > np.e ** 2  # measured: 36.7
    ev = evaluate_detection(det, mask)
    assert ev.tpr >= 0.9 and ev.fpr <= 0.05  # measured: 1.0 at 0.0
    clean = get("scan").scan(data=bars(800, 1), model=bad, validation=test_set)  # the same model, unpoisoned data
    assert clean.details["infected"] == [] and clean.num_flagged == 0


def test_bad_inputs():
    with pytest.raises(ConfigError, match="threshold=0"):
        get("scan", threshold=0)
    _, _, _, bad, _ = backdoor_world()
    with pytest.raises(DataError, match="labelled datasets"):
        get("scan").scan(data=torch.zeros(4, 1, 8, 8), model=bad)


def test_as_a_training_defense_filter_retrain_removes_the_backdoor():
    from poisonlab.defend import get as get_defense
    from poisonlab.defend.base import Defended
    from poisonlab.defend.evaluate import backdoor_scores
    from poisonlab.models import make_model
    from poisonlab.training import TrainConfig
    from test_detect_common import stamp

    poisoned, mask, test_set, bad, _ = backdoor_world()
    triggered = test_set.replace(x=stamp(test_set.x))
    before = backdoor_scores(Defended(bad), test_set, triggered, TARGET)
    out = get_defense("filter_retrain", detector="scan").defend(
        model=bad, data=poisoned, clean=test_set, seed=0, train_cfg=TrainConfig(epochs=8, batch_size=32, lr=0.05),
        build=lambda: make_model("cnn", (1, 8, 8), 4, seed=0, channels=(8, 16), hidden=32))
    after = backdoor_scores(out, test_set, triggered, TARGET)
    assert out.details["removed"] >= int(mask.sum())  # measured: exactly the 80 poisoned samples
    assert before.attack_success_rate > 0.9 and after.attack_success_rate < 0.1
    assert after.clean_accuracy >= before.clean_accuracy - 0.03
