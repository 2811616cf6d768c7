"""D-ST (Chen, Wu & Wang, NeurIPS 2022): the semi-supervised contrastive loss and the mixed cross-entropy by
hand, bad params refused, the caller's model untouched, and a 10% patch backdoor on digits weakened."""

import copy
import math

import pytest
import torch

from poisonlab.defend import get
from poisonlab.defend.d_st import mixed_cross_entropy, ss_ctl_loss
from poisonlab.errors import ConfigError
from test_detect_common import single_thread  # noqa: F401  (autouse: one torch thread)
from traindef_support import digits_patch_world, runs_on_meta_default

L = math.log(2 + math.e)   # log of the softmax denominator over the three other views (dots 0, 1, 0)


def test_ss_ctl_by_hand():
    z = torch.eye(2)                       # two rows, each view (1, 0) or (0, 1); both views of a row equal
    # different labels, both trusted: each anchor's one positive is its row's other view (dot 1): 1 - L
    both = ss_ctl_loss(z, z, torch.tensor([0, 1]), torch.tensor([True, True]), temperature=1.0)
    assert float(both) == pytest.approx(-(1 / 0.07) * (1 - L), rel=1e-5)
    # one label, row 1 untrusted: row 0's anchors average three positives (1/3 - L), row 1's keep its own view
    mixed = ss_ctl_loss(z, z, torch.tensor([0, 0]), torch.tensor([True, False]), temperature=1.0)
    assert float(mixed) == pytest.approx(-(1 / 0.07) * (2 / 3 - L), rel=1e-5)


def test_mixed_cross_entropy_by_hand():
    logits, y = torch.zeros(3, 2), torch.tensor([0, 1, 0])
    assert float(mixed_cross_entropy(logits, y, torch.tensor([True, True, False]))) == pytest.approx(
        math.log(2) * (1 - 0.001))
    assert float(mixed_cross_entropy(logits, y, torch.tensor([True, True, True]))) == pytest.approx(math.log(2))


def test_bad_params_and_the_callers_model():
    for bad in ({"clean_ratio": 1.0}, {"extractor_epochs": 0}, {"temperature": 0.0}, {"proj_dim": 0},
                {"classifier_lr": -1.0}, {"extractor_batch_size": 1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get("d_st", **bad)
    w = digits_patch_world()
    given, shared = w.build(), w.build()
    before = [copy.deepcopy(m.state_dict()) for m in (given, shared)]
    out = get("d_st", extractor_epochs=1, classifier_epochs=1).defend(
        model=given, data=w.poisoned.subset(torch.arange(64)), build=lambda: shared, train_cfg=w.cfg)
    assert out.model is not given and out.model is not shared
    for m, b in zip((given, shared), before):
        assert all(torch.equal(b[k], v) for k, v in m.state_dict().items())


def test_every_draw_is_made_on_the_cpu_and_moved():
    assert runs_on_meta_default("d_st", extractor_epochs=1, classifier_epochs=1, proj_dim=4)["poisoned"] == 1


def test_d_st_weakens_a_patch_backdoor_on_digits():
    """Chen et al. 2022: the FCT split, a contrastive extractor that trusts labels only on the clean part, and a
    head that never learns the poisoned part's labels. On 1,257 8x8 digits the tiny cnn's contrastive extractor
    is weak (seeds 0-2: 64-74% clean accuracy, ASR 2-41%; on MNIST it keeps the accuracy, docs/backdoor-defenses.md),
    hence the wide margins."""
    w = digits_patch_world(0.1)
    out = get("d_st").defend(data=w.poisoned, build=w.build, train_cfg=w.cfg, seed=0)
    rows = torch.tensor(out.details["poisoned_rows"])
    assert float(w.mask[rows].float().mean()) > 0.7
    acc, asr = w.scores(out.model)
    assert w.plain[1] > 0.95 and asr < 0.5
    assert acc >= w.plain[0] - 0.25
