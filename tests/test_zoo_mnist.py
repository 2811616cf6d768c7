"""Must-shows of issue 17 on real MNIST (the seeded 8,000 / 2,000 split of the MNIST test set), kept to seconds:

- a batch-norm model registered exactly as a user would (the ``poisonlab.models.MODELS`` decorator) trains
  centralized to at least 95% clean accuracy, its batch-norm statistics really estimated;
- activation clustering with ``feature_layer`` on a ResNet-8 (zoo ``resnet20`` with ``blocks=1``) under a 10%
  patch backdoor detects the poison far above chance, through benchmarks/zoo_models.py's own section (whose
  full setting and figures are in docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from poisonlab.data import load
from poisonlab.models import MODELS, make_model
from poisonlab.training import TrainConfig, evaluate, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def user_registry(monkeypatch):
    """The real MODELS registry, whose entries are restored after the test (so the catalog stays as it is)."""
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    return MODELS


@pytest.fixture(scope="module")
def mnist_split():
    from tests.conftest import shared_path

    data = load("mnist", data_dir=str(shared_path("mnist")), part="test")
    return data.split(0.2, seed=0)


def test_a_user_registered_batch_norm_model_trains_on_mnist_to_95_percent(user_registry, mnist_split):
    @MODELS.register("user_bn_net", reference="a user's model (test)")
    def user_bn_net(input_shape, num_classes, width: int = 4):
        """Two conv -> batch norm -> ReLU -> max-pool stages and a linear head."""
        c, h, w = input_shape
        return nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), num_classes))

    train_set, test_set = mnist_split
    assert (len(train_set), len(test_set)) == (8000, 2000)
    model = make_model("user_bn_net", train_set.input_shape, train_set.num_classes, seed=0)
    bn = model[1]
    assert torch.equal(bn.running_var, torch.ones(4)) and int(bn.num_batches_tracked) == 0  # PyTorch's init
    train(model, train_set, TrainConfig(epochs=2, batch_size=64, lr=0.01, optimizer="adam"), seed=0)
    assert int(bn.num_batches_tracked) == 2 * 125
    assert not torch.allclose(bn.running_var, torch.ones(4)) and torch.isfinite(bn.running_var).all()
    assert evaluate(model, test_set).accuracy >= 0.95
    assert "user_bn_net" in MODELS.names()


def zoo_benchmark():
    """benchmarks/zoo_models.py as a module (in sys.modules while it runs: its dataclass needs that)."""
    if "zoo_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location("zoo_models", ROOT / "benchmarks" / "zoo_models.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["zoo_models"] = module
        spec.loader.exec_module(module)
    return sys.modules["zoo_models"]


def test_activation_clustering_with_feature_layer_on_a_resnet_finds_the_patch_backdoor():
    from tests.conftest import shared_path

    zoo = zoo_benchmark()
    with threadpool_limits(1):  # scikit-learn's clustering on one thread: as fast here, never oversubscribed
        result = zoo.ac_section(zoo.SMOKE["ac"], "cpu", shared_path("mnist"), layers=("layer3",))  # --smoke
    assert result["model"] == "resnet20" and result["params"]["blocks"] == 1  # ResNet-8, batch norm
    assert result["poisoned"] == 200 and result["train_samples"] == 2000  # 10% of the training set
    assert result["asr"] >= 0.9  # the backdoor is in the model
    found = result["detection"]["layer3"]
    assert found["tpr"] >= 0.9 and found["fpr"] <= 0.1 and found["auroc"] >= 0.9  # chance: TPR = FPR
