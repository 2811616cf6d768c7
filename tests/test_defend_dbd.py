"""DBD (Huang et al., ICLR 2022): SimCLR's NT-Xent, the symmetric cross-entropy and MixMatch's pieces by hand, the
views' crop, bad params refused, the caller's model untouched, and an invisible backdoor removed end to end."""

import copy
import math

import pytest
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.defend import get
from poisonlab.defend.dbd import lowest, symmetric_cross_entropy
from poisonlab.defend.mixmatch import mix_up, mixmatch_losses, sharpen
from poisonlab.defend.simclr import crop_boxes, nt_xent_loss, resized_crop
from poisonlab.errors import ConfigError
from poisonlab.rng import generator
from poisonlab.training import TrainConfig
from test_detect_common import single_thread  # noqa: F401  (autouse: one torch thread)
from traindef_support import checker_world, digits_patch_world, runs_on_meta_default


def test_nt_xent_by_hand():
    z = torch.eye(2)  # two rows, both views of a row equal: an anchor's dots are 1 (its partner), 0 and 0
    assert float(nt_xent_loss(z, z, 1.0)) == pytest.approx(math.log(math.e + 2) - 1, rel=1e-6)
    assert float(nt_xent_loss(z, z, 0.5)) == pytest.approx(math.log(math.e ** 2 + 2) - 2, rel=1e-6)
    # swapping the second views makes every anchor's partner orthogonal: log(e^(1/t) + 2) - 0
    assert float(nt_xent_loss(z, z.flip(0), 1.0)) == pytest.approx(math.log(math.e + 2), rel=1e-6)


def test_symmetric_cross_entropy_by_hand():
    logits, y = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]), torch.tensor([0, 1])  # p_y = 1/2 and 1/4
    by_hand = [0.1 * math.log(2) + 0.5 * -math.log(1e-4), 0.1 * math.log(4) + 0.75 * -math.log(1e-4)]
    got = symmetric_cross_entropy(logits, y, reduction="none")
    assert got.tolist() == pytest.approx(by_hand, rel=1e-6)
    # RCE from its definition, -sum_k p_k log(one-hot_k clamped to 1e-4)
    p = torch.softmax(logits, 1)
    rce = -(p * torch.log(torch.nn.functional.one_hot(y, 2).float().clamp(min=1e-4))).sum(1)
    assert (got - 0.1 * torch.nn.functional.cross_entropy(logits, y, reduction="none")).tolist() == pytest.approx(
        rce.tolist(), rel=1e-6)
    assert lowest(torch.tensor([3.0, 1.0, 2.0, 0.5]), 0.5).tolist() == [False, True, False, True]


def test_mixmatch_pieces_by_hand():
    assert sharpen(torch.tensor([[0.6, 0.4]]), 0.5)[0].tolist() == pytest.approx([0.36 / 0.52, 0.16 / 0.52])
    x, t = torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed, targets = mix_up(x, t, 0.3, torch.tensor([1, 0]))  # lambda' = max(0.3, 0.7) = 0.7
    assert mixed.flatten().tolist() == pytest.approx([0.7, 0.3])
    assert targets[0].tolist() == pytest.approx([0.7, 0.3])
    lx, lu = mixmatch_losses(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2),
                             torch.tensor([[1.0, 0.0]]))
    assert float(lx) == pytest.approx(math.log(2)) and float(lu) == pytest.approx(0.25)  # ((0.5-1)^2 + 0.5^2) / 2


def test_resized_crop_identity_flip_and_boxes_inside_the_image():
    x = torch.rand(2, 1, 5, 5, generator=generator(0, "t"))
    whole = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2)
    assert torch.allclose(resized_crop(x, whole, torch.tensor([False, True]))[0], x[0], atol=1e-6)
    assert torch.allclose(resized_crop(x, whole, torch.tensor([False, True]))[1], x[1].flip(-1), atol=1e-6)
    boxes = crop_boxes(500, generator(0, "b"), 0.2)
    width, height, cx, cy = boxes.unbind(1)
    assert bool((cx.abs() <= 1 - width + 1e-6).all() and (cy.abs() <= 1 - height + 1e-6).all())
    assert float((width * height).min()) >= 0.2 - 1e-6 and float(width.max()) <= 1.0


def test_bad_params_tabular_data_and_the_callers_model():
    for bad in ({"ssl_epochs": 0}, {"ssl_optimizer": "lbfgs"}, {"temperature": 0.0}, {"epsilon": 1.0},
                {"min_scale": 0.0}, {"head_lr": -1.0}, {"ssl_batch_size": 1}, {"flip": "yes"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get("dbd", **bad)
    table = Dataset(torch.rand(6, 3), torch.tensor([0, 1] * 3), ("a", "b"))
    with pytest.raises(ConfigError, match="image data"):
        get("dbd").defend(data=table, build=lambda: torch.nn.Linear(3, 2), train_cfg=TrainConfig(epochs=1))
    w = digits_patch_world()
    shared = w.build()
    before = copy.deepcopy(shared.state_dict())
    out = get("dbd", ssl_epochs=1, head_epochs=1, finetune_epochs=1).defend(
        data=w.poisoned.subset(torch.arange(64)), build=lambda: shared, train_cfg=w.cfg)
    assert out.model is not shared and out.details["ssl_optimizer"] == "adam"  # the cnn has no batch norm
    assert all(torch.equal(before[k], v) for k, v in shared.state_dict().items())


def test_every_draw_is_made_on_the_cpu_and_moved():
    details = runs_on_meta_default("dbd", ssl_epochs=1, head_epochs=1, finetune_epochs=1, proj_dim=4)
    assert details["labelled"] == 4


def test_dbd_removes_an_invisible_backdoor():
    """Huang et al. 2022 report DBD against BadNets and Blended (CIFAR-10: ASR 0.88% and 0.31%). Here the bars
    set with a +-0.1 checkerboard blended on 10% of the rows (labelled 0): the crops' resampling washes the
    one-pixel checkerboard out of the self-supervised features, so every poisoned row keeps a high SCE loss and
    loses its label (seeds 0-2: 80 of 80 rows unlabelled, ASR 0%, clean accuracy 92.5-100% against 100%)."""
    w = checker_world()
    out = get("dbd").defend(data=w.poisoned, build=w.build, train_cfg=w.cfg, seed=0)
    unlabelled = torch.tensor(out.details["unlabelled_rows"])
    assert int(w.mask[unlabelled].sum()) >= 0.9 * int(w.mask.sum())
    acc, asr = w.scores(out.model)
    assert w.plain[1] > 0.95 and asr < 0.1
    assert acc >= w.plain[0] - 0.1
