"""TrojanNN: a patch trigger optimised to excite chosen internal neurons (Liu et al. 2018, NDSS).

Liu, Ma, Aafer, Lee, Zhai, Wang and Zhang, "Trojaning attack on neural networks":
  1. neuron selection: in the chosen layer (here the features feeding the last nn.Linear, or
     ``feature_layer``), take the ``neurons`` units with the strongest connection to the next layer,
     sum_i |W_ij| over the next layer's weights W, among the units that respond to the starting patch
     (a ReLU unit stuck at 0 has no gradient to follow);
  2. trigger generation: inside a fixed mask (a size x size square at ``position``), gradient descent
     on the pixel values minimises sum_j (a_j(x') - ``activation``)^2 over the selected units, starting
     from a grey square, the pixels clipped to [0, 1] after every step (x' = the mask filled with the
     pattern, on a blank image as in the paper);
  3. the paper then retrains the model on reverse-engineered inputs; BackdoorBench's TrojanNN, followed
     here, instead uses the optimised trigger as a dirty-label data poison (rate of the data stamped and
     relabelled target).
The trigger depends only on the model, so it is computed in ``bind(model)`` (the centralized pipeline
binds the clean model) and used for both the training poison and the triggered test set.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.poison.triggers import _box_mask, resolve_position
from poisonlab.rng import generator


def strongest_neurons(layer: torch.nn.Linear, count: int, alive: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the count input units of layer with the largest sum_i |W_ij| (TrojanNN's selection).

    alive (bool per unit, optional) restricts the choice to units that respond to the starting patch: a
    ReLU unit at exactly 0 has no gradient, and gradient descent could never move it.
    """
    strength = layer.weight.detach().abs().sum(dim=0)
    order = torch.argsort(strength, descending=True, stable=True)
    if alive is not None:
        order = order[alive[order]]
    if len(order) == 0:
        raise ConfigError("trojannn: every unit of the feature layer is 0 on the starting patch (dead ReLUs);"
                          " accepted: a feature_layer whose units respond, or another size/position")
    return order[:count]


def optimise_patch(features: torch.nn.Module, units: torch.Tensor, shape: Sequence[int], box: torch.Tensor,
                   activation: float, steps: int, lr: float) -> torch.Tensor:
    """The (c, h, w) image whose box pixels minimise sum_j (a_j - activation)^2; zeros outside the box."""
    pattern = torch.where(box, torch.full(tuple(shape), 0.5), torch.zeros(tuple(shape)))
    for _ in range(steps):
        p = pattern.clone().requires_grad_(True)
        loss = ((features(p.unsqueeze(0))[0, units] - activation) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, p)
        with torch.no_grad():
            pattern = torch.where(box, (pattern - lr * grad).clamp(0.0, 1.0), pattern)
    return pattern.detach()


@POISONS.register("trojannn", reference="Liu et al. 2018, Trojaning attack on neural networks (NDSS); "
                                        "BackdoorBench's data-poisoning form")
@dataclass(frozen=True)
class TrojanNN(Poison):
    """A size x size patch optimised (on the bound model) to drive the most-connected feature units to activation."""

    target: int = 0
    rate: float = 0.1
    size: int = 5
    position: str | tuple[int, int] = "bottom-right"
    neurons: int = 1
    activation: float = 10.0
    steps: int = 200
    lr: float = 0.1
    feature_layer: str | None = None
    model: Any = field(default=None, compare=False, repr=False)
    pattern: Any = field(default=None, compare=False, repr=False)
    requires_model = True
    name = "trojannn"

    def __post_init__(self) -> None:
        check_range("rate", float(self.rate), 0.0, 1.0)
        for what, v in (("size", self.size), ("neurons", self.neurons), ("steps", self.steps)):
            if int(v) < 1:
                raise ConfigError(f"{what}={v} is out of range; accepted: an int >= 1")
        if not isinstance(self.position, str):
            object.__setattr__(self, "position", tuple(int(v) for v in self.position))

    def bind(self, model: Any, test_set: Dataset | None = None) -> "TrojanNN":
        """A copy holding the model and the trigger optimised on it (needs the input shape: from test_set)."""
        if model is None:
            raise ConfigError("trojannn needs a model; call bind(model, test_set)")
        if test_set is None:
            raise ConfigError("trojannn's bind needs test_set (for the input shape)")
        from poisonlab.models import FeatureExtractor
        from poisonlab.models.feature_layer import linear_head

        frozen = copy.deepcopy(model).eval().to("cpu")
        for p in frozen.parameters():
            p.requires_grad_(False)
        features = FeatureExtractor(frozen, self.feature_layer)
        c, h, w = test_set.x.shape[1:]
        rows, cols = resolve_position(self.position, 1, h, w, int(self.size), int(self.size), None)
        box = _box_mask(rows, cols, h, w, int(self.size), int(self.size))[0].expand(c, h, w)
        with torch.no_grad():
            alive = features(torch.where(box, 0.5, 0.0).unsqueeze(0))[0] != 0
        units = strongest_neurons(linear_head(frozen, self.feature_layer)[1], int(self.neurons), alive)
        pattern = optimise_patch(features, units, (c, h, w), box, float(self.activation), int(self.steps), float(self.lr))
        return replace(self, model=model, pattern=(pattern, box))

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """x with the optimised patch replacing the pixels in its box; a new tensor."""
        if self.pattern is None:
            raise ConfigError("trojannn's trigger is optimised on the model; call bind(model, test_set) first")
        pattern, box = self.pattern
        return torch.where(box, pattern.to(x.dtype), x)

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Stamp the optimised patch on rate of the non-target samples and relabel them target."""
        if not 0 <= int(self.target) < data.num_classes:
            raise ConfigError(f"target={self.target} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
        pool = torch.nonzero(data.y != int(self.target)).flatten()
        count = min(int(round(float(self.rate) * len(data))), len(pool))
        index = choose(pool, None, count, generator(seed, "trojannn", "choose"), "non-target samples")
        x, y = data.x.clone(), data.y.clone()
        x[index] = self.stamp(data.x[index])
        y[index] = int(self.target)
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "trojannn", "count": len(index), "target": int(self.target), "size": int(self.size)}
        return Poisoned(data.replace(x=x, y=y, name=f"{data.name}+trojannn"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """Every test input with the optimised patch; TRUE labels kept."""
        return test_set.replace(x=self.stamp(test_set.x), name=f"{test_set.name}+trigger")
