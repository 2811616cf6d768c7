"""Clean-label poisoning: perturbed training images whose labels stay correct.

Both attacks need the victim's feature extractor f (the input of its ``feature_layer``, by default the
last nn.Linear: the model without its last layer; any nn.Module works), so they
have ``requires_model = True`` and ``bind(model, test_set)`` returns a ready copy. The poisons
replace the chosen training images in place (mask marks them); labels are never changed.

- Feature collision ("Poison Frogs", Shafahi et al. 2018): from base images b of the base class,
  minimise ||f(x) - f(t)||^2 + beta ||x - b||^2 by forward-backward splitting:
      forward:  x <- x - lr * grad_x ||f(x) - f(t)||^2
      backward: x <- (x + lr * beta * b) / (1 + lr * beta)
  with the watermark option b <- (1 - gamma) b + gamma t (opacity gamma, 0.3 in the paper).
  Success: the target image t (a test image, not of the base class) is classified as the base class
  once the last layer has been retrained on the poisoned set (transfer learning).
- Hidden-trigger backdoor (Saha et al. 2020): poisons z start at target-class images t and solve
      min_z ||f(z) - f(s~)||^2  subject to  ||z - t||_inf <= eps,
  where s~ are source images stamped with a patch trigger at random positions; at each step every
  poison is paired with its nearest patched source in feature space (one of a fresh batch).
  Projected gradient descent. The trigger never appears in the training data; at test time,
  patched source images are classified as the target.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.poison.triggers import Trigger, make_trigger
from poisonlab.rng import generator


def _features(model: Any, feature_layer: str | None = None) -> torch.nn.Module:
    """A frozen eval-mode copy of model as x -> features (the input of feature_layer, default the last nn.Linear)."""
    from poisonlab.models import FeatureExtractor

    if model is None:
        raise ConfigError("this clean-label attack needs a trained model; call bind(model) first")
    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return FeatureExtractor(frozen, feature_layer)


def _class_pool(data: Dataset, cls: int, what: str) -> torch.Tensor:
    if not 0 <= int(cls) < data.num_classes:
        raise ConfigError(f"{what}={cls} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
    return torch.nonzero(data.y == cls).flatten()


def feature_collision_images(f: torch.nn.Module, base: torch.Tensor, target: torch.Tensor, beta: float,
                             lr: float, steps: int, watermark: float) -> torch.Tensor:
    """Shafahi et al. 2018 forward-backward splitting; base (k, c, h, w), target (c, h, w) -> poisons in [0, 1]."""
    b = (1 - watermark) * base + watermark * target.unsqueeze(0)
    with torch.no_grad():
        ft = f(target.unsqueeze(0))
    x = b.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        loss = ((f(x) - ft) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = x - lr * grad
            x = ((x + lr * beta * b) / (1 + lr * beta)).clamp(0.0, 1.0)
    return x.detach()


@POISONS.register("feature_collision", reference="Shafahi et al. 2018, Poison Frogs! (clean-label feature collision)")
@dataclass(frozen=True)
class FeatureCollision(Poison):
    """Poison Frogs: `count` base-class images moved onto the target image in feature space, labels kept."""

    base_class: int
    target_index: int = 0
    count: int = 5
    beta: float = 0.25
    lr: float = 0.01
    steps: int = 300
    watermark: float = 0.3
    target_image: Any = field(default=None, compare=False, repr=False)
    target_label: int | None = None
    feature_layer: str | None = None
    model: Any = field(default=None, compare=False, repr=False)
    requires_model = True
    name = "feature_collision"

    def __post_init__(self) -> None:
        check_range("watermark", self.watermark, 0.0, 1.0)
        check_range("beta", self.beta, 0.0)
        check_range("lr", self.lr, 0.0, low_open=True)
        if int(self.count) < 1:
            raise ConfigError(f"count={self.count} is not valid; accepted: 1 or more poisons")

    @property
    def target(self) -> int:
        """The label the target image should receive: the base class."""
        return int(self.base_class)

    def bind(self, model: Any, test_set: Dataset | None = None) -> "FeatureCollision":
        """A copy holding the model (and the target image test_set.x[target_index] when none was given)."""
        changes: dict[str, Any] = {"model": model}
        if self.target_image is None:
            if test_set is None:
                raise ConfigError("feature_collision needs target_image or a test set to take target_index from")
            if not 0 <= int(self.target_index) < len(test_set):
                raise ConfigError(f"target_index={self.target_index} is out of range; accepted: 0..{len(test_set) - 1}")
            changes["target_image"] = test_set.x[int(self.target_index)]
            changes["target_label"] = int(test_set.y[int(self.target_index)])
        return replace(self, **changes)

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Replace `count` seeded base-class images by their feature-collision poisons."""
        if self.target_image is None:
            raise ConfigError("feature_collision has no target image; pass target_image or call bind(model, test_set)")
        if self.target_label is not None and int(self.target_label) == int(self.base_class):
            raise ConfigError(f"the target image is already of base class {self.base_class}; pick another target")
        pool = _class_pool(data, self.base_class, "base_class")
        index = choose(pool, None, min(int(self.count), len(pool)), generator(seed, "feature_collision", "bases"),
                       "base-class images")
        target = torch.as_tensor(self.target_image, dtype=torch.float32)
        poisons = feature_collision_images(_features(self.model, self.feature_layer), data.x[index], target,
                                           self.beta, self.lr, self.steps, self.watermark)
        x = data.x.clone()
        x[index] = poisons
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "feature_collision", "count": len(index), "base_class": int(self.base_class),
                "target_label": self.target_label, "max_linf": float((poisons - data.x[index]).abs().max())}
        return Poisoned(data.replace(x=x, name=f"{data.name}+feature_collision"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """The target image alone, with its TRUE label (success = predicted as base_class)."""
        label = self.target_label if self.target_label is not None else 0
        return Dataset(torch.as_tensor(self.target_image).unsqueeze(0), torch.tensor([label]), test_set.classes,
                       f"{test_set.name}[collision target]")


def hidden_trigger_images(f: torch.nn.Module, start: torch.Tensor, sources: torch.Tensor, trigger: Trigger,
                          eps: float, lr: float, steps: int, batch: int, g: torch.Generator) -> torch.Tensor:
    """Saha et al. 2020: PGD on z in the eps-ball of start toward the nearest patched source feature."""
    z = start.clone()
    for _ in range(steps):
        pick = torch.randint(0, len(sources), (batch,), generator=g)
        with torch.no_grad():
            fs = f(trigger(sources[pick], g))
        z.requires_grad_(True)
        fz = f(z)
        nearest = torch.cdist(fz.detach(), fs).argmin(dim=1)
        loss = ((fz - fs[nearest]) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, z)
        with torch.no_grad():
            z = z - lr * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
            z = torch.minimum(torch.maximum(z, start - eps), start + eps).clamp(0.0, 1.0)
    return z.detach()


@POISONS.register("hidden_trigger", reference="Saha et al. 2020, Hidden Trigger Backdoor Attacks (AAAI)")
@dataclass(frozen=True)
class HiddenTrigger(Poison):
    """Hidden-trigger backdoor: `count` target-class images perturbed (L-inf <= eps) toward patched sources."""

    source: int
    target: int
    trigger: Any = field(default_factory=lambda: {"name": "patch", "params": {"size": 5, "position": "random"}})
    count: int = 100
    eps: float = 0.25
    lr: float = 0.5
    steps: int = 200
    batch: int = 200
    feature_layer: str | None = None
    model: Any = field(default=None, compare=False, repr=False)
    requires_model = True
    name = "hidden_trigger"

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", make_trigger(self.trigger))
        check_range("eps", self.eps, 0.0, 1.0)
        if self.source == self.target:
            raise ConfigError(f"source and target are both {self.source}; accepted: two different classes")

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """(source, target): triggered source-class inputs are pushed to the target."""
        return ((int(self.source), int(self.target)),)

    def bind(self, model: Any, test_set: Dataset | None = None) -> "HiddenTrigger":
        """A copy holding the victim model whose features the poisons target."""
        return replace(self, model=model)

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Replace `count` seeded target-class images by hidden-trigger poisons (labels unchanged)."""
        tpool = _class_pool(data, self.target, "target")
        spool = _class_pool(data, self.source, "source")
        index = choose(tpool, None, min(int(self.count), len(tpool)), generator(seed, "hidden_trigger", "choose"),
                       "target-class images")
        poisons = hidden_trigger_images(_features(self.model, self.feature_layer), data.x[index], data.x[spool], self.trigger, self.eps,
                                        self.lr, self.steps, self.batch, generator(seed, "hidden_trigger", "optimise"))
        x = data.x.clone()
        x[index] = poisons
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "hidden_trigger", "count": len(index), "source": self.source, "target": self.target,
                "eps": self.eps, "trigger": self.trigger.to_dict()}
        return Poisoned(data.replace(x=x, name=f"{data.name}+hidden_trigger"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """Source-class test images with the trigger stamped (random positions seeded), TRUE labels kept."""
        src = test_set.subset(torch.nonzero(test_set.y == self.source).flatten())
        return src.replace(x=self.trigger(src.x, generator(seed, "hidden_trigger", "test-stamp")),
                           name=f"{test_set.name}[source+trigger]")
