"""Latent backdoor (Yao, Li, Zheng & Zhao 2019, CCS): a trigger whose features are the target class's features.

Yao et al., "Latent backdoor attacks on deep neural networks". The paper's setting is transfer learning: the
attacker trains a Teacher model with a backdoor for a target class that the Teacher does not even have
(the attacker holds target-class images from elsewhere), then removes the target's output; any Student
built from the Teacher by transfer learning (frozen lower layers, a new head) that adds the target class
completes the backdoor, because the trigger already maps to the target's representation in the frozen
layers. The construction has two steps, both reproduced here:
  1. trigger optimisation: inside a fixed mask (a ``size`` x ``size`` square at ``position``) the pixel
     values p = (tanh(a) + 1) / 2 are optimised with Adam (lr ``lr``, ``steps`` mini-batches of ``batch``)
     to minimise the mean squared error between the intermediate features phi(stamp(x)) of non-target
     images and the MEAN feature of target-class images (``samples`` per class; phi = the input of
     ``feature_layer``, default the last nn.Linear, of the model given to ``bind``);
  2. injection: ``rate`` of the non-target training data stamped with that trigger and relabelled target.
In poisonlab the target is a class of the training data and the poisoned model is trained on it (as
TrojanZoo's ``latent_backdoor`` does, which also notes it drops the Teacher-Student step); the paper's
Teacher additionally trains with the feature-matching term in its loss (TrojanZoo weights it 0.5), not done
here: the trigger is a data poison. The Student step can be emulated with ``injection: {mode: fine_tune,
head_only: true}`` (a frozen feature extractor, a retrained head; poison/injection.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.base import Poison
from poisonlab.poison.clean_label import _features
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.poison.triggers import _box_mask, resolve_position
from poisonlab.rng import generator


def latent_trigger(f: torch.nn.Module, others: torch.Tensor, center: torch.Tensor, box: torch.Tensor, steps: int,
                   lr: float, batch: int, g: torch.Generator) -> tuple[torch.Tensor, list[float]]:
    """The (c, h, w) pattern (zeros outside box) minimising mse(phi(stamp(x)), center) over others; loss per step."""
    a = torch.randn(box.shape, generator=g, device="cpu").requires_grad_(True)
    opt = torch.optim.Adam([a], lr=lr)
    history = []
    for _ in range(steps):
        rows = torch.randint(0, len(others), (min(batch, len(others)),), generator=g, device="cpu")
        stamped = torch.where(box, (torch.tanh(a) + 1) / 2, others[rows])
        feats = f(stamped)
        loss = F.mse_loss(feats, center.expand_as(feats))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return torch.where(box, (torch.tanh(a.detach()) + 1) / 2, torch.zeros((), device="cpu")), history


@POISONS.register("latent_backdoor", reference="Yao, Li, Zheng & Zhao 2019, Latent backdoor attacks on deep neural "
                                               "networks (CCS)")
@dataclass(frozen=True)
class LatentBackdoor(Poison):
    """A patch optimised so stamped inputs have the target class's mean feature; rate of the data stamped + relabelled."""

    target: int = 0
    rate: float = 0.1
    size: int = 5
    position: str | tuple[int, int] = "bottom-right"
    samples: int = 100
    steps: int = 200
    lr: float = 0.1
    batch: int = 64
    feature_layer: str | None = None
    model: Any = field(default=None, compare=False, repr=False)
    pattern: Any = field(default=None, compare=False, repr=False)
    requires_model = True
    name = "latent_backdoor"

    def __post_init__(self) -> None:
        check_range("rate", float(self.rate), 0.0, 1.0)
        check_range("lr", float(self.lr), 0.0, low_open=True)
        for what, v in (("size", self.size), ("samples", self.samples), ("steps", self.steps), ("batch", self.batch)):
            if int(v) < 1:
                raise ConfigError(f"{what}={v} is out of range; accepted: an int >= 1")
        if not isinstance(self.position, str):
            object.__setattr__(self, "position", tuple(int(v) for v in self.position))

    def bind(self, model: Any, test_set: Dataset | None = None) -> "LatentBackdoor":
        """A copy holding the model whose features the trigger is optimised on."""
        return replace(self, model=model)

    def _sample(self, data: Dataset, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(up to samples images of the target class, up to samples of each other class), seeded."""
        picks = [choose(torch.nonzero(data.y == c).flatten(), None, min(int(self.samples), int((data.y == c).sum())),
                        generator(seed, "latent", "sample", c), f"images of class {c}") for c in range(data.num_classes)]
        others = torch.cat([p for c, p in enumerate(picks) if c != int(self.target)])
        return data.x[picks[int(self.target)]], data.x[others]

    def _trigger(self, data: Dataset, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """(pattern, box, loss history): the latent trigger optimised on the bound model."""
        if self.model is None:
            raise ConfigError("latent_backdoor optimises its trigger on a model; call bind(model) first (run_centralized does)")
        f = _features(self.model, self.feature_layer)
        targets, others = self._sample(data, seed)
        if len(targets) == 0 or len(others) == 0:
            raise ConfigError(f"latent_backdoor needs images of the target class {self.target} and of another class")
        c, h, w = data.input_shape
        rows, cols = resolve_position(self.position, 1, h, w, int(self.size), int(self.size), None)
        box = _box_mask(rows, cols, h, w, int(self.size), int(self.size))[0].expand(c, h, w)
        with torch.no_grad():
            center = f(targets).mean(dim=0)
        pattern, history = latent_trigger(f, others, center, box, int(self.steps), float(self.lr), int(self.batch),
                                          generator(seed, "latent", "optimise"))
        return pattern, box, history

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """x with the optimised patch in its box; a new tensor."""
        if self.pattern is None:
            raise ConfigError("latent_backdoor's trigger is optimised on the training data; apply it first")
        pattern, box = self.pattern
        return torch.where(box, pattern.to(x.dtype), x)

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Optimise the trigger, then stamp it on rate of the non-target samples and relabel them target."""
        if not 0 <= int(self.target) < data.num_classes:
            raise ConfigError(f"target={self.target} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
        pattern, box, history = self._trigger(data, seed)
        object.__setattr__(self, "pattern", (pattern, box))  # kept for triggered(): a function of the data
        pool = torch.nonzero(data.y != int(self.target)).flatten()
        index = choose(pool, None, min(int(round(float(self.rate) * len(data))), len(pool)),
                       generator(seed, "latent", "choose"), "non-target samples")
        x, y = data.x.clone(), data.y.clone()
        x[index] = self.stamp(data.x[index])
        y[index] = int(self.target)
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "latent_backdoor", "count": len(index), "target": int(self.target), "size": int(self.size),
                "feature_mse_first": history[0], "feature_mse_last": history[-1]}
        return Poisoned(data.replace(x=x, y=y, name=f"{data.name}+latent-backdoor"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """Every test input with the optimised patch; TRUE labels kept."""
        return test_set.replace(x=self.stamp(test_set.x), name=f"{test_set.name}+trigger")
