"""Augmentation (issue 17 item 6): random crop with zero padding and horizontal flip, checked against a hand-computed
case and a per-sample definition; seeded draws; identical draws in centralized training and in both federated
engines; one-line errors for bad settings and non-image data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poisonlab.config import parse
from poisonlab.config.local import LocalConfig
from poisonlab.config.train import TrainConfig
from poisonlab.data.augment import Draws, apply, augment, draw
from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, DataError
from poisonlab.fl.batching import plan_batches
from poisonlab.fl.local import flat_params, local_updates
from poisonlab.fl.reference import reference_updates
from poisonlab.models import make_model
from poisonlab.rng import generator
from poisonlab.training import train

X = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4)  # [[0 1 2 3] [4 5 6 7] [8 9 10 11]]


def by_definition(x: torch.Tensor, dy: int, dx: int, flip: bool, p: int) -> torch.Tensor:
    """One image (C, H, W) the slow, obvious way: zero-pad p, slice the crop at (p + dy, p + dx), mirror."""
    h, w = x.shape[-2:]
    crop = F.pad(x, (p, p, p, p))[:, p + dy:p + dy + h, p + dx:p + dx + w]
    return torch.flip(crop, dims=[-1]) if flip else crop


def test_crop_and_flip_of_a_small_image_computed_by_hand():
    shifted = apply(X, Draws(torch.tensor([[1, -1]]), torch.tensor([False])))  # crop[r, s] = x[r + 1, s - 1]
    assert shifted[0, 0].tolist() == [[0, 4, 5, 6], [0, 8, 9, 10], [0, 0, 0, 0]]
    both = apply(X, Draws(torch.tensor([[1, -1]]), torch.tensor([True])))
    assert both[0, 0].tolist() == [[6, 5, 4, 0], [10, 9, 8, 0], [0, 0, 0, 0]]
    flipped = apply(X, Draws(torch.tensor([[0, 0]]), torch.tensor([True])))
    assert flipped[0, 0].tolist() == [[3, 2, 1, 0], [7, 6, 5, 4], [11, 10, 9, 8]]
    up_right = apply(X, Draws(torch.tensor([[-2, 3]]), torch.tensor([False])))
    assert up_right[0, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [3, 0, 0, 0]]


@pytest.mark.parametrize("channels", [1, 3])
def test_batch_equals_the_per_sample_definition(channels):
    g = generator(0, "test-augment")
    x = torch.rand(40, channels, 7, 9, generator=g)
    d = draw(40, generator(1, "draws"), crop_padding=3, flip=True)
    out = apply(x, d)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(40):
        dy, dx = d.shift[i].tolist()
        assert torch.equal(out[i], by_definition(x[i], dy, dx, bool(d.flip[i]), 3)), i
    assert not torch.equal(out, x)


def test_any_leading_shape_and_both_channel_counts():
    for c in (1, 3):
        x = torch.rand(2, 3, 5, c, 6, 6, generator=generator(c, "lead"))
        d = draw(30, generator(2, "lead"), crop_padding=2)
        d = Draws(d.shift.reshape(2, 3, 5, 2), d.flip.reshape(2, 3, 5))
        out = apply(x, d)
        flat = apply(x.reshape(30, c, 6, 6), Draws(d.shift.reshape(30, 2), d.flip.reshape(30)))
        assert out.shape == (2, 3, 5, c, 6, 6) and torch.equal(out.reshape(30, c, 6, 6), flat)
        assert torch.equal(apply(x, d)[1, 2], apply(x[1, 2], d[1, 2]))  # indexing draws like the batch


def test_padding_region_is_zero_and_the_rest_is_the_image():
    x = torch.rand(200, 2, 8, 8, generator=generator(3, "pad")) + 1.0  # every pixel >= 1
    d = draw(200, generator(3, "draws"), crop_padding=4, flip=True)
    out = apply(x, d)
    r = torch.arange(8)
    rows_in = ((r + d.shift[:, :1]) >= 0) & ((r + d.shift[:, :1]) < 8)  # (n, H)
    cols_in = ((r + d.shift[:, 1:]) >= 0) & ((r + d.shift[:, 1:]) < 8)  # before the flip
    cols_in = torch.where(d.flip[:, None], cols_in.flip(1), cols_in)
    inside = (rows_in[:, :, None] & cols_in[:, None, :])[:, None].expand_as(out)
    assert bool((out[~inside] == 0).all()) and bool((out[inside] >= 1).all())
    assert 0 < int(inside.sum()) < inside.numel()


def test_no_padding_and_no_flip_is_the_identity():
    x = torch.rand(16, 3, 5, 5, generator=generator(4, "id"))
    d = draw(16, generator(4, "draws"), crop_padding=0, flip=False)
    assert not d.shift.any() and not d.flip.any()
    assert torch.equal(apply(x, d), x)
    assert torch.equal(augment(x, generator(9, "any"), crop_padding=0, flip=False), x)


def test_same_generator_same_result_and_draws_cover_their_range():
    x = torch.rand(500, 1, 6, 6, generator=generator(5, "x"))
    a = augment(x, generator(7, "augment", 0), crop_padding=2)
    b = augment(x, generator(7, "augment", 0), crop_padding=2)
    c = augment(x, generator(7, "augment", 1), crop_padding=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = draw(4000, generator(8, "range"), crop_padding=2, flip=True)
    assert set(d.shift.flatten().tolist()) == {-2, -1, 0, 1, 2}
    assert 0.45 < float(d.flip.float().mean()) < 0.55


def test_the_global_random_state_is_not_touched():
    before = torch.random.get_rng_state()
    augment(torch.rand(8, 1, 4, 4, generator=generator(0, "g")), generator(1, "g"))
    assert torch.equal(before, torch.random.get_rng_state())


def test_non_images_and_bad_settings_are_one_line_errors(digits):
    with pytest.raises(DataError, match=r"needs images of shape \(5,\) \+ \(C, H, W\); got a batch of shape \(5, 64\)"):
        augment(torch.rand(5, 64), generator(0, "x"))
    flat = Dataset(digits.x.flatten(1), digits.y, digits.classes, "digits-flat")
    with pytest.raises(ConfigError, match=r"train.augment: random crop and flip need image samples .* \(64,\)"):
        train(make_model("mlp", (64,), 10), flat, TrainConfig(epochs=1, augment={}))
    with pytest.raises(ConfigError, match="augment.crop_padding=-1 is out of range"):
        LocalConfig(augment={"crop_padding": -1})
    with pytest.raises(ConfigError) as err:
        parse({"name": "x", "train": {"augment": {"crop_padding": 2, "flip": "maybe"}}})
    assert "train.augment.flip" in str(err.value) and "\n" not in str(err.value)
    assert parse({"name": "x", "train": {"augment": None}}).train.augment is None
    assert parse({"name": "x", "train": {"augment": {}}}).train.augment.crop_padding == 4  # the CIFAR default


def test_centralized_training_augments_deterministically(digits):
    data = digits.subset(torch.arange(256))
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment={"crop_padding": 1, "flip": False})
    runs = []
    for c in (cfg, cfg, TrainConfig(epochs=2, batch_size=32, lr=0.05)):
        model = make_model("cnn", data.input_shape, 10, seed=0)
        train(model, data, c, seed=0)
        runs.append(flat_params(model))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def _clients(sizes, shape=(1, 10, 10)):
    g = generator(0, "test-augment-clients")
    return [Dataset(torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g),
                    tuple(str(i) for i in range(10))) for n in sizes]


def _gens(k):
    return [generator(0, "local", 0, i) for i in range(k)]


def test_plan_draws_follow_the_permutations_and_leave_padding_alone():
    sizes = [20, 7]
    plain = plan_batches(sizes, LocalConfig(epochs=2, batch_size=8), _gens(2))
    cfg = LocalConfig(epochs=2, batch_size=8, augment={"crop_padding": 3})
    plan = plan_batches(sizes, cfg, _gens(2))
    assert torch.equal(plan.index, plain.index)  # drawn after the permutations: the batches are unchanged
    assert plan.augment.shape == plan.index.shape and plan.augment.shift.shape == (*plan.index.shape, 2)
    padding = plan.weight == 0
    assert not plan.augment.shift[padding].any() and not plan.augment.flip[padding].any()
    g = _gens(2)[1]
    for _ in range(2):
        torch.randperm(7, generator=g)
    expected = draw(2 * 7, g, 3, True)  # client 1: its own generator, after its 2 permutations
    real = plan.weight[:, 1] > 0
    assert torch.equal(plan.augment.shift[:, 1][real], expected.shift)
    assert torch.equal(plan.augment.flip[:, 1][real], expected.flip)
    again = plan_batches(sizes, cfg, _gens(2))
    assert torch.equal(again.augment.shift, plan.augment.shift)


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_vectorized_equals_reference_with_augmentation(name):
    shape = (1, 10, 10)
    model = make_model(name, shape, 10, seed=1)
    datasets = _clients([30, 11, 45, 24])  # unequal step counts: clients reordered and padded
    gp = flat_params(model)
    cfg = LocalConfig(epochs=2, batch_size=8, lr=0.05, momentum=0.9, augment={"crop_padding": 2, "flip": True})
    fast = local_updates(model, gp, datasets, cfg, _gens(4))
    ref = reference_updates(model, gp, datasets, cfg, _gens(4))
    assert torch.allclose(fast, ref, atol=2e-5, rtol=1e-4)
    plain = reference_updates(model, gp, datasets, LocalConfig(epochs=2, batch_size=8, lr=0.05, momentum=0.9), _gens(4))
    assert float((ref - plain).norm(dim=1).min()) > 1e-4  # augmentation changed every client's update


def test_federated_augmentation_of_tabular_data_is_refused_before_training():
    from poisonlab.builders import build_federation, load_split

    config = parse({"name": "x", "data": {"dataset": "breast_cancer"},
                    "federated": {"clients": 2, "rounds": 1, "local": {"augment": {"crop_padding": 2}}}})
    train_set, test_set = load_split(config)
    with pytest.raises(ConfigError, match=r"^federated.local.augment: random crop and flip need image samples"):
        build_federation(config, train_set, test_set)


def test_a_yaml_federation_augments_its_clients_the_same_in_both_engines():
    from poisonlab.builders import build_federation, load_split

    def final(augment, engine="vectorized"):
        config = parse({"name": "x", "data": {"dataset": "digits"}, "model": {"name": "cnn"},
                        "federated": {"clients": 3, "rounds": 2, "local": {"epochs": 1, "batch_size": 16, "lr": 0.05,
                                                                          "augment": augment}}})
        fed = build_federation(config, *load_split(config))
        fed.config = fed.config.model_copy(update={"engine": engine})
        assert fed.config.local.augment == (None if augment is None else config.federated.local.augment)
        return fed.run().params

    on = final({"crop_padding": 1, "flip": False})
    assert torch.allclose(on, final({"crop_padding": 1, "flip": False}, "reference"), atol=1e-5)
    assert not torch.allclose(on, final(None), atol=1e-3)
