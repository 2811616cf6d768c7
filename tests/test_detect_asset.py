"""ASSET: the medcouple, the adjusted outlyingness and the split threshold by hand, a fresh offset model, bad params
refused, the caller's model unchanged, and the poisons separated on a vector backdoor where the premise holds."""

import math

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from poisonlab.data.dataset import Dataset
from poisonlab.detect import get
from poisonlab.detect.asset import adjusted_outlyingness, fresh_copy, medcouple, split_threshold
from poisonlab.detect.base import evaluate_detection
from poisonlab.errors import ConfigError
from poisonlab.models import make_model
from poisonlab.rng import generator
from poisonlab.training import TrainConfig, train
from test_detect_common import single_thread  # noqa: F401 (autouse)


def test_medcouple_by_hand():
    # [1, 2, 3, 5, 9], median 3: h = (u + l) / (u - l) for u in {6, 2, 0}, l in {0, -1, -2}; the tie (0, 0) is 0:
    # 1, 5/7, 1/2, 1, 1/3, 0, 0, -1, -1 -> median 1/3
    assert medcouple(np.array([9.0, 1, 5, 3, 2])) == pytest.approx(1 / 3)
    assert medcouple(np.array([1.0, 2, 3, 4, 5])) == pytest.approx(0.0)     # symmetric
    assert medcouple(-np.array([1.0, 2, 3, 5, 9])) == pytest.approx(-1 / 3)  # mirrored: skewed left


def test_adjusted_outlyingness_by_hand():
    s = np.array([1.0, 2, 3, 5, 9])
    iqr, mc = 5.0 - 2.0, 1 / 3                                   # q1 = 2, q3 = 5 (linear), MC > 0
    w1, w2 = 2 - 1.5 * math.exp(-4 * mc) * iqr, 5 + 1.5 * math.exp(3 * mc) * iqr
    ao = adjusted_outlyingness(s)
    assert ao[4] == pytest.approx((9 - 3) / (w2 - 3)) and ao[0] == pytest.approx((3 - 1) / (3 - w1))
    assert ao[2] == 0.0
    flat = adjusted_outlyingness(np.array([0.5, 0.5, 0.5, 0.5, 0.9]))   # IQR 0: the odd one out is infinitely far
    assert flat[4] == np.inf and (flat[:4] == 0).all()


def test_split_threshold_is_the_lower_halfs_gaussian_at_density_eps():
    scores = np.array([1.0, 1, 1, 1, 3, 3, 3, 3, 100])
    gm = GaussianMixture(n_components=1).fit(scores[scores <= 3].reshape(-1, 1))   # the reference's fit
    mu, sigma = float(gm.means_[0, 0]), math.sqrt(float(gm.covariances_[0, 0, 0]))
    assert (mu, sigma) == (pytest.approx(2.0), pytest.approx(1.0))
    t = split_threshold(scores, 1e-6)
    density = math.exp(-(t - mu) ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    assert t > mu and density == pytest.approx(1e-6)
    ref = split_threshold(scores, 1e-6, "reference")   # the reference code's expression
    assert ref == pytest.approx(mu + sigma * math.sqrt(-2 * math.log(1e-6) * sigma * math.sqrt(2 * math.pi)))


def test_fresh_copy_has_new_weights_and_leaves_the_model_alone():
    model = make_model("cnn", (1, 8, 8), 4, seed=0, channels=(4, 8), hidden=16).requires_grad_(False)
    before = [p.clone() for p in model.parameters()]
    a, b = fresh_copy(model, 3, "x"), fresh_copy(model, 3, "x")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))          # seeded
    assert not torch.equal(next(a.parameters()), before[0]) and next(a.parameters()).requires_grad
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_bad_params_are_refused():
    for params, match in (({"split": "gmm"}, "split='gmm'"), ({"eps": 0.0}, "eps"), ({"rounds": 0}, "rounds"),
                          ({"batch_size": 1}, "batch_size"), ({"lr": -1.0}, "lr"), ({"outlyingness": -1}, "outlying")):
        with pytest.raises(ConfigError, match=match):
            get("asset", **params)
    with pytest.raises(ConfigError, match="validation"):
        get("asset").scan(data=vector_world()[0], model=vector_world()[2])


def vector_world():
    """(poisoned set, mask, backdoored mlp, clean base set): 3 Gaussian classes in 6-d; a trigger (+4 on the last
    coordinate) on 10% of the rows of classes 1 and 2, relabelled 0."""
    g = generator(0, "asset-test")
    centres = torch.tensor([[2.0, 0, 0, 0, 0, 0], [0, 2.0, 0, 0, 0, 0], [0, 0, 2.0, 0, 0, 0]])

    def draw(n, key):
        y = torch.randint(3, (n,), generator=generator(0, "asset-test", key))
        return centres[y] + 0.5 * torch.randn(n, 6, generator=generator(0, "asset-test", key, "x")), y

    x, y = draw(300, "train")
    mask = torch.zeros(300, dtype=torch.bool)
    mask[torch.nonzero(y != 0).flatten()[torch.randperm(int((y != 0).sum()), generator=g)[:30]]] = True
    x[mask, 5] += 4.0
    y[mask] = 0
    data = Dataset(x, y, ("0", "1", "2"), "vectors")
    model = make_model("mlp", (6,), 3, seed=0, hidden=(32,))
    train(model, data, TrainConfig(epochs=10, batch_size=32, lr=0.05), seed=0)
    bx, by = draw(60, "base")
    return data, mask, model.requires_grad_(False), Dataset(bx, by, ("0", "1", "2"), "vectors")


def test_poisons_separate_on_a_vector_backdoor_and_the_model_is_unchanged():
    data, mask, model, base = vector_world()
    triggered = data.x.clone()
    triggered[:, 5] += 4.0
    assert (model(triggered[data.y != 0]).argmax(1) == 0).float().mean() > 0.9   # the backdoor is in the model
    before = [p.clone() for p in model.parameters()]
    model.eval()
    det = get("asset", batch_size=32, rounds=4, lr=1e-2, vnet_lr=1e-3).scan(data=data, model=model, validation=base)
    ev = evaluate_detection(det, mask)
    assert ev.auroc > 0.95 and ev.tpr >= 0.8 and ev.fpr <= 0.05   # measured: 1.0, 1.0, 0.0
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before)) and not model.training
    assert sum(det.details["selected_per_batch"]) > 0


def test_the_selector_reads_the_last_spatial_map_or_the_penultimate_features():
    cnn = make_model("cnn", (1, 8, 8), 4, seed=0, channels=(4, 8), hidden=16).train()
    x = torch.rand(5, 1, 8, 8, generator=generator(0, "asset-test", "maps"))
    with torch.no_grad():
        spatial = cnn.eval()[:6](x).flatten(1)           # conv, relu, pool, conv, relu, pool: 8 x 2 x 2
    cnn.train()
    got = get("asset").selector_features(cnn, x)
    assert got.shape == (5, 32) and torch.allclose(got, spatial) and cnn.training
    mlp = make_model("mlp", (6,), 3, seed=0, hidden=(7,))
    assert get("asset").selector_features(mlp, torch.zeros(2, 6)).shape == (2, 7)
