"""Spectral signatures: the formula on a planted direction, the paper's flag rule, the orient extension."""

import numpy as np
import pytest
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.detect import get
from poisonlab.detect.base import Detection, evaluate_detection
from poisonlab.detect.spectral import spectral_scores, split_1d
from poisonlab.errors import ConfigError
from poisonlab.rng import generator
from test_detect_common import backdoor_world, one_thread, single_thread  # noqa: F401 (autouse)


def planted(n=400, d=20, share=0.1, shift=6.0, seed=0):
    """Class 0: isotropic Gaussian rows, a share of them shifted by `shift` along a unit direction u."""
    g = generator(seed, "planted")
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    u /= u.norm()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[: int(share * n)] = True
    x[mask] += shift * u
    return x, mask, u


def test_scores_match_the_definition_by_numpy_svd():
    x, mask, u = planted()
    tau, p = spectral_scores(x)
    centred = x.numpy() - x.numpy().mean(axis=0)
    v = np.linalg.svd(centred, full_matrices=False)[2][0]
    assert np.allclose(tau.numpy(), (centred @ v) ** 2)
    assert np.allclose(p.abs().numpy(), np.abs(centred @ v))
    assert abs(float(torch.from_numpy(v) @ u)) > 0.95  # the top singular vector is the planted direction


def test_paper_rule_flags_top_one_and_a_half_epsilon_and_catches_planted():
    x, mask, _ = planted(share=0.1)
    data = Dataset(x.float(), torch.zeros(len(x), dtype=torch.long), ("a", "b"))
    det = get("spectral_signatures", epsilon=0.1).scan(data=data)
    assert det.num_flagged == 60  # ceil(1.5 * 0.1 * 400)
    assert bool(det.flagged[mask].all())
    assert evaluate_detection(det, mask).auroc > 0.99


def test_paper_rule_is_blind_at_half_poison_but_orient_is_not():
    # class 0: half clean near the origin, half shifted (relabeled from class 1, which sits at the shift)
    x, mask, u = planted(n=400, share=0.5, shift=8.0)
    far = torch.randn(200, x.shape[1], generator=generator(1, "other"), dtype=torch.float64) + 8.0 * u
    data = Dataset(torch.cat([x, far]).float(), torch.cat([torch.zeros(400), torch.ones(200)]).long(), ("0", "1"))
    truth = torch.cat([mask, torch.zeros(200, dtype=torch.bool)])
    paper = get("spectral_signatures", epsilon=0.5, classes=[0]).scan(data=data)
    within = Detection(paper.scores[:400], paper.flagged[:400])
    assert 0.3 < evaluate_detection(within, mask).auroc < 0.7  # symmetric modes: squared projection cannot tell
    oriented = get("spectral_signatures", orient=True, class_index=0.5).scan(data=data)
    ev = evaluate_detection(oriented, truth)
    assert ev.tpr == 1.0 and ev.fpr == 0.0


def test_split_1d_between_modes():
    p = torch.tensor([-5.0, -4.0, -6.0, 5.0, 4.0, 6.0, 5.5], dtype=torch.float64)
    assert -4.0 < split_1d(p) < 4.0


def test_backdoored_model_embeddings_reveal_the_poison():
    poisoned, mask, _, bad, _ = backdoor_world()
    with one_thread():
        det = get("spectral_signatures", epsilon=0.3, classes=[0]).scan(data=poisoned, model=bad)
    assert evaluate_detection(det, mask).tpr >= 0.9


def test_bad_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="epsilon=2"):
        get("spectral_signatures", epsilon=2)
    with pytest.raises(ConfigError, match="does not take parameter 'eps'"):
        get("spectral_signatures", eps=0.1)
