"""Neural Cleanse: the MAD anomaly index by hand; the backdoor target found; nothing on a clean model."""

import pytest
import torch

from poisonlab.detect import get
from poisonlab.detect.neural_cleanse import anomaly_index, apply_trigger
from test_detect_common import TARGET, backdoor_world, one_thread, single_thread  # noqa: F401 (autouse)


def test_anomaly_index_by_hand():
    norms = torch.tensor([10.0, 11.0, 9.0, 10.0, 2.0])
    # median 10, |dev| = 0,1,1,0,8 -> MAD 1 -> scale 1.4826
    idx = anomaly_index(norms)
    assert float(idx[4]) == pytest.approx(8 / 1.4826)
    assert float(idx[1]) == pytest.approx(-1 / 1.4826)


def test_apply_trigger_blends_by_mask():
    x = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    out = apply_trigger(x, mask, torch.ones(1, 2, 2))
    assert out.flatten().tolist() == [1.0, 0.0, 0.5, 0.0]


def test_reverses_the_smallest_trigger_for_the_backdoor_target():
    # 4 labels only, so the MAD test uses threshold 1 here (the MNIST check with 10 labels and the
    # paper's threshold 2 is in benchmarks/detection_experiments.py)
    _, _, test_set, bad, good = backdoor_world()
    before = [p.clone() for p in bad.parameters()]
    nc = get("neural_cleanse", steps=150, batch_size=24, samples=200, threshold=1.0)
    with one_thread():
        det_bad, det_good = nc.scan(model=bad, clean=test_set), nc.scan(model=good, clean=test_set)
    assert det_bad.details["flagged_labels"] == [TARGET]
    assert int(torch.argmin(torch.tensor(det_bad.details["mask_l1"]))) == TARGET
    assert int(torch.argmax(det_bad.scores)) == TARGET
    assert TARGET not in det_good.details["flagged_labels"]
    assert det_good.details["mask_l1"][TARGET] > 2 * det_bad.details["mask_l1"][TARGET]
    mask = det_bad.details["masks"][TARGET, 0]
    assert mask[6:, 6:].mean() > mask.mean() * 4  # the reversed mask sits on the planted 2x2 corner
    assert all(torch.equal(a, b) for a, b in zip(before, bad.parameters()))  # the caller's model is untouched
