"""Bullseye Polytope (Aghakhani et al. 2021, EuroS&P): clean-label poisons whose feature mean is the target's.

Aghakhani, Meng, Wang, Kruegel and Vigna, "Bullseye Polytope: a scalable clean-label poisoning attack with
improved transferability". A targeted clean-label attack on a victim that trains (or fine-tunes, in the
paper's transfer-learning setting) on data the attacker contributes to. The attacker perturbs ``count``
correctly labelled images x_j of the poison class (``base_class``), ||x_j - b_j||_inf <= eps, so that the
target's feature phi(t) lies at the CENTRE of the poisons' feature polytope (Convex Polytope's coefficients
fixed to 1/k, the "bullseye"):
    min_x  || (1/k) sum_j phi(x_j) - phi(t) || / || phi(t) ||
(the authors' code's objective; the paper writes its square, with the same minimisers). With several target
images (``target_index`` a list; the paper's multi-draw setting uses several photos of one object), phi(t) is
their MEAN feature. Optimised with Adam (lr 0.04, betas (0.9, 0.999)) on the pixels, each step followed by
projection onto the eps-ball around b_j and [0, 1]; defaults: 5 poisons, eps 0.1, 4000 steps (the authors'
and ART's). phi: the input of ``feature_layer`` (default the last nn.Linear) of the model given to ``bind``
(the centralized pipeline binds its clean model). Not done here: dropout in the substitute while crafting and
an ensemble of substitutes (the paper's transferability devices). Success: the target image(s) classified as
``base_class`` by the model trained on the poisoned set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.base import Poison
from poisonlab.poison.clean_label import _class_pool, _features
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.rng import generator


def polytope_loss(poison_features: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """|| mean_j poison_features[j] - center || / || center ||; poison_features (k, f), center (f,)."""
    return (poison_features.mean(dim=0) - center).norm() / center.norm().clamp_min(1e-12)


def bullseye_images(f: torch.nn.Module, base: torch.Tensor, center: torch.Tensor, eps: float, steps: int,
                    lr: float) -> tuple[torch.Tensor, list[float]]:
    """Poisons (k, c, h, w) in the eps-ball of base and [0, 1] minimising polytope_loss; the loss at the start
    and after every step (steps + 1 values)."""
    x = base.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, betas=(0.9, 0.999))
    history = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = polytope_loss(f(x), center)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        with torch.no_grad():
            x.copy_(torch.minimum(torch.maximum(x, base - eps), base + eps).clamp(0.0, 1.0))
    with torch.no_grad():
        history.append(float(polytope_loss(f(x), center)))
    return x.detach(), history


@POISONS.register("bullseye_polytope", reference="Aghakhani et al. 2021, Bullseye Polytope: a scalable clean-label "
                                                 "poisoning attack with improved transferability (EuroS&P)")
@dataclass(frozen=True)
class BullseyePolytope(Poison):
    """count base-class images moved (L-inf eps) so their mean feature is the target image(s)' feature."""

    base_class: int
    target_index: int | Sequence[int] = 0
    count: int = 5
    eps: float = 0.1
    steps: int = 4000
    lr: float = 0.04
    feature_layer: str | None = None
    model: Any = field(default=None, compare=False, repr=False)
    target_images: Any = field(default=None, compare=False, repr=False)
    requires_model = True
    name = "bullseye_polytope"

    def __post_init__(self) -> None:
        check_range("eps", float(self.eps), 0.0, 1.0)
        check_range("lr", float(self.lr), 0.0, low_open=True)
        for what, v in (("count", self.count), ("steps", self.steps)):
            if int(v) < 1:
                raise ConfigError(f"{what}={v} is out of range; accepted: an int >= 1")
        indices = (self.target_index,) if isinstance(self.target_index, int) else tuple(self.target_index)
        if not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise ConfigError(f"target_index={self.target_index!r} is not valid; accepted: a test index or a list of them")
        object.__setattr__(self, "target_index", indices[0] if len(indices) == 1 else indices)

    @property
    def indices(self) -> tuple[int, ...]:
        """The target images' test-set indices."""
        return (self.target_index,) if isinstance(self.target_index, int) else tuple(self.target_index)

    @property
    def target(self) -> int:
        """The class the target image(s) should receive: the poisons' class."""
        return int(self.base_class)

    def bind(self, model: Any, test_set: Dataset | None = None) -> "BullseyePolytope":
        """A copy holding the substitute model and the target images (test_set.x[target_index], labels)."""
        if test_set is None:
            raise ConfigError("bullseye_polytope needs the test set its target images come from; call bind(model, test_set)")
        bad = [i for i in self.indices if not 0 <= i < len(test_set)]
        if bad:
            raise ConfigError(f"target_index {bad[0]} is out of range; accepted: 0..{len(test_set) - 1}")
        rows = torch.tensor(self.indices)
        if bool((test_set.y[rows] == int(self.base_class)).any()):
            raise ConfigError(f"a target image is already of base_class {self.base_class}; accepted: targets of other classes")
        return replace(self, model=model, target_images=(test_set.x[rows].clone(), test_set.y[rows].clone()))

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Replace count seeded base-class images by their bullseye poisons (labels kept)."""
        if self.target_images is None or self.model is None:
            raise ConfigError("bullseye_polytope needs bind(model, test_set) first (run_centralized does)")
        pool = _class_pool(data, int(self.base_class), "base_class")
        index = choose(pool, None, min(int(self.count), len(pool)), generator(seed, "bullseye", "bases"),
                       "base-class images")
        f = _features(self.model, self.feature_layer)
        with torch.no_grad():
            center = f(self.target_images[0]).mean(dim=0)
        poisons, history = bullseye_images(f, data.x[index], center, float(self.eps), int(self.steps), float(self.lr))
        x = data.x.clone()
        x[index] = poisons
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "bullseye_polytope", "count": len(index), "base_class": int(self.base_class),
                "targets": list(self.indices), "eps": float(self.eps), "loss_first": history[0], "loss_last": history[-1]}
        return Poisoned(data.replace(x=x, name=f"{data.name}+bullseye-polytope"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """The target image(s) with their TRUE labels (success: classified as base_class)."""
        if self.target_images is None:
            raise ConfigError("bullseye_polytope needs bind(model, test_set) first")
        x, y = self.target_images
        return Dataset(x, y, test_set.classes, f"{test_set.name}[bullseye targets]")
