"""Feature layers: features of any nn.Module read as the input of a named module (a forward pre-hook)."""

import pytest
import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.detect import get
from poisonlab.errors import ConfigError
from poisonlab.models import default_feature_layer, features, make_model
from poisonlab.rng import generator


class TinyRes(nn.Module):
    """Not an nn.Sequential: a conv stem, one residual block (x + f(x)), pooling, an MLP neck and a final fc."""

    def __init__(self, classes: int = 3):
        super().__init__()
        g = generator(0, "tiny_res")
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.neck = nn.Linear(4 * 4 * 4, 12)
        self.fc = nn.Linear(12, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def penultimate(self, x):
        """The fc input, computed here directly (the reference the hook must reproduce)."""
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.block(h))
        return torch.relu(self.neck(nn.functional.avg_pool2d(h, 2).flatten(1)))

    def forward(self, x):
        return self.fc(self.penultimate(x))


def world(n=60, classes=3):
    g = generator(1, "world")
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.arange(n) % classes
    return Dataset(x, y, tuple(str(c) for c in range(classes)), "tiny")


def no_hooks(model):
    return all(not m._forward_pre_hooks for m in model.modules())


def test_default_is_the_last_linear_and_features_are_its_input():
    model, data = TinyRes(), world()
    assert default_feature_layer(model) == "fc"
    with torch.no_grad():
        reference = model.eval().penultimate(data.x)
    got = features(model, data.x, batch_size=7)
    assert got.shape == (60, 12) and torch.equal(got, reference)
    assert no_hooks(model)


def test_explicit_layer_reads_its_input_flattened():
    model, data = TinyRes(), world()
    seen = []
    handle = model.neck.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        model.eval()(data.x)
    handle.remove()
    assert torch.equal(features(model, data.x, "neck"), seen[0].flatten(1))
    assert features(model, data.x, "block").shape == (60, 4 * 8 * 8)


def test_bad_names_are_one_line_config_errors():
    model = TinyRes()
    with pytest.raises(ConfigError, match="feature_layer 'fcc'.*did you mean 'fc'.*neck") as err:
        features(model, torch.rand(2, 1, 8, 8), "fcc")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no nn.Linear"):
        default_feature_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))


def test_bit_identical_to_the_sequential_body_on_the_builtin_cnn():
    model = make_model("cnn", (1, 8, 8), 10, seed=3)
    x = torch.rand(2500, 1, 8, 8, generator=generator(2, "x"))
    body = model[:-1]  # a poisonlab Sequential: everything before the final nn.Linear
    with torch.no_grad():
        old = torch.cat([body.eval()(x[i:i + 1024]).flatten(1) for i in range(0, len(x), 1024)])
    assert torch.equal(features(model, x), old)


def test_training_mode_restored_and_hook_removed_even_on_error():
    model = TinyRes().train()
    features(model, world().x)
    assert model.training and all(m.training for m in model.modules()) and no_hooks(model)
    with pytest.raises(RuntimeError):
        features(model, torch.rand(4, 3, 8, 8))  # wrong channel count: the forward raises
    assert model.training and no_hooks(model)
    model.eval()
    features(model, world().x)
    assert not model.training


@pytest.mark.parametrize("name", ["activation_clustering", "spectral_signatures"])
@pytest.mark.parametrize("layer", [None, "fc", "neck"])
def test_detectors_run_on_a_non_sequential_model(name, layer):
    model, data = TinyRes(), world()
    detector = get(name, feature_layer=layer)
    assert detector.feature_layer == layer
    found = detector.scan(data=data, model=model)
    assert found.scores.shape == (60,) and found.flagged.shape == (60,)
    assert no_hooks(model)


def test_a_resnet_layer_by_name():
    model = make_model("resnet20", (1, 8, 8), 3, width=4, blocks=1)
    found = get("spectral_signatures", feature_layer="layer3").scan(data=world(), model=model)
    assert found.scores.shape == (60,)
    with pytest.raises(ConfigError, match="did you mean 'layer3'"):
        get("activation_clustering", feature_layer="layer_3").scan(data=world(), model=model)


def test_head_only_fine_tuning_changes_only_the_named_head():
    from poisonlab.poison.injection import retrain_head
    from poisonlab.training import TrainConfig

    model, data = TinyRes(), world()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = retrain_head(model, data, TrainConfig(epochs=1, lr=0.1), seed=0)
    after = tuned.state_dict()
    assert isinstance(tuned, TinyRes) and all(torch.equal(model.state_dict()[k], before[k]) for k in before)
    assert [k for k in before if not torch.equal(before[k], after[k])] == ["fc.weight", "fc.bias"]
    with pytest.raises(ConfigError, match="accepted here: the name of an nn.Linear"):
        retrain_head(model, data, TrainConfig(epochs=1), seed=0, feature_layer="block")


def test_pruning_zeroes_the_input_columns_of_the_named_linear():
    from poisonlab.detect.mitigation import fine_prune, prune_neurons
    from poisonlab.training import TrainConfig

    model = TinyRes()
    pruned = prune_neurons(model, torch.tensor([1, 5]), feature_layer="neck")
    assert pruned.neck.weight[:, [1, 5]].abs().sum() == 0 and torch.equal(pruned.fc.weight, model.fc.weight)
    fp = fine_prune(model, world(), fraction=0.25, cfg=TrainConfig(epochs=1, lr=0.01))
    assert int((fp.fc.weight.abs().sum(dim=0) == 0).sum()) == 3  # round(0.25 * 12) fc inputs stay pruned


def test_clean_label_poisons_on_a_non_sequential_model():
    from poisonlab.poison.clean_label import FeatureCollision, HiddenTrigger

    model, data = TinyRes(), world()
    fc = FeatureCollision(base_class=1, count=2, steps=5).bind(model, data).apply(data, 0)
    ht = HiddenTrigger(source=0, target=2, count=3, steps=5, batch=10, feature_layer="neck",
                       trigger={"name": "patch", "params": {"size": 2}}).bind(model).apply(data, 0)
    assert int(fc.mask.sum()) == 2 and int(ht.mask.sum()) == 3 and no_hooks(model)
