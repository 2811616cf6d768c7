"""Gradient-matching clean-label poisons: Sleeper Agent (Souri et al. 2022) and Witches' Brew (Geiping et al. 2021).

Both perturb a few correctly labelled training images x_i + delta_i (||delta_i||_inf <= eps, labels kept)
so that the training gradient on them points where the attacker's loss wants the weights to go:
    min_delta  1 - cos( grad_theta L_adv(theta),  grad_theta sum_i CE(f(x_i + delta_i), y_i) ),
optimised with signed steps and projection (the papers use signed Adam with restarts; here plain signed
gradient descent, ``steps`` iterations, on the model given by ``bind(model)``, no restarts).
  - Sleeper Agent (Souri, Fowl, Chellappa, Goldblum, Goldstein 2022, NeurIPS): L_adv = CE of
    source-class images carrying the trigger, labelled target; the poisons are target-class images. At
    test time the trigger on source images is the backdoor. The paper also retrains the surrogate
    during crafting and selects poisons by gradient norm; neither is done here (poisons are drawn at random).
  - Witches' Brew (Geiping et al. 2021, ICLR): L_adv = CE of one chosen test image labelled with the
    adversarial class (no trigger); success is that image being misclassified after training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.poison.triggers import make_trigger
from poisonlab.rng import generator


def _grads(model: torch.nn.Module, loss: torch.Tensor, create_graph: bool) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params, create_graph=create_graph))


def cosine_of(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """cos between two gradients given as lists of per-parameter tensors (flattened and concatenated)."""
    dot = sum((x * y).sum() for x, y in zip(a, b))
    na = torch.sqrt(sum((x * x).sum() for x in a))
    nb = torch.sqrt(sum((y * y).sum() for y in b))
    return dot / (na * nb).clamp_min(1e-12)


def match_gradients(model: torch.nn.Module, base: torch.Tensor, labels: torch.Tensor, adv_x: torch.Tensor,
                    adv_y: torch.Tensor, eps: float, steps: int, lr: float) -> torch.Tensor:
    """Poisons base + delta (L-inf eps, in [0, 1]) minimising 1 - cos(grad L_adv, grad L_poison); signed steps."""
    target_grad = [g.detach() for g in _grads(model, F.cross_entropy(model(adv_x), adv_y), create_graph=False)]
    delta = torch.zeros_like(base)
    for _ in range(steps):
        d = delta.clone().requires_grad_(True)
        poison_grad = _grads(model, F.cross_entropy(model((base + d).clamp(0.0, 1.0)), labels), create_graph=True)
        loss = 1 - cosine_of(target_grad, poison_grad)
        (g,) = torch.autograd.grad(loss, d)
        with torch.no_grad():
            delta = (delta - lr * g.sign()).clamp(-eps, eps)
            delta = (base + delta).clamp(0.0, 1.0) - base
    return (base + delta).detach()


def _frozen_trainable(model: Any) -> torch.nn.Module:
    if model is None:
        raise ConfigError("gradient-matching poisons need a surrogate model; call bind(model) first (run_centralized does)")
    surrogate = copy.deepcopy(model).eval().to("cpu")
    for p in surrogate.parameters():
        p.requires_grad_(True)
    return surrogate


@POISONS.register("sleeper_agent", reference="Souri et al. 2022, Sleeper Agent: scalable hidden trigger backdoors "
                                             "for neural networks trained from scratch (NeurIPS)")
@dataclass(frozen=True)
class SleeperAgent(Poison):
    """count target-class images perturbed (L-inf eps) so their gradient matches 'triggered sources -> target'."""

    source: int
    target: int
    trigger: Any = field(default_factory=lambda: {"name": "patch", "params": {"size": 4, "position": "random"}})
    count: int = 100
    eps: float = 16 / 255
    steps: int = 100
    lr: float = 0.01
    sources_used: int = 128
    model: Any = field(default=None, compare=False, repr=False)
    requires_model = True
    name = "sleeper_agent"

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", make_trigger(self.trigger))
        check_range("eps", float(self.eps), 0.0, 1.0)
        if self.source == self.target:
            raise ConfigError(f"source and target are both {self.source}; accepted: two different classes")
        for what, v in (("count", self.count), ("steps", self.steps), ("sources_used", self.sources_used)):
            if int(v) < 1:
                raise ConfigError(f"{what}={v} is out of range; accepted: an int >= 1")

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """(source, target): triggered source-class inputs are pushed to the target."""
        return ((int(self.source), int(self.target)),)

    def bind(self, model: Any, test_set: Dataset | None = None) -> "SleeperAgent":
        """A copy holding the surrogate model the gradients are matched on."""
        return replace(self, model=model)

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Replace count target-class images by gradient-matched poisons (labels unchanged)."""
        for what, c in (("source", self.source), ("target", self.target)):
            if not 0 <= int(c) < data.num_classes:
                raise ConfigError(f"{what}={c} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
        surrogate = _frozen_trainable(self.model)
        tpool = torch.nonzero(data.y == int(self.target)).flatten()
        spool = torch.nonzero(data.y == int(self.source)).flatten()
        index = choose(tpool, None, min(int(self.count), len(tpool)), generator(seed, "sleeper", "choose"), "target-class images")
        src = choose(spool, None, min(int(self.sources_used), len(spool)), generator(seed, "sleeper", "sources"), "source images")
        adv_x = self.trigger(data.x[src], generator(seed, "sleeper", "stamp"))
        adv_y = torch.full((len(src),), int(self.target), dtype=torch.long)
        poisons = match_gradients(surrogate, data.x[index], data.y[index], adv_x, adv_y, float(self.eps),
                                  int(self.steps), float(self.lr))
        x = data.x.clone()
        x[index] = poisons
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "sleeper_agent", "count": len(index), "source": int(self.source), "target": int(self.target),
                "eps": float(self.eps), "trigger": self.trigger.to_dict()}
        return Poisoned(data.replace(x=x, name=f"{data.name}+sleeper-agent"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """Source-class test images with the trigger, TRUE labels kept."""
        src = test_set.subset(torch.nonzero(test_set.y == int(self.source)).flatten())
        return src.replace(x=self.trigger(src.x, generator(seed, "sleeper", "test-stamp")),
                           name=f"{test_set.name}[source+trigger]")



@POISONS.register("witches_brew", reference="Geiping et al. 2021, Witches' Brew: industrial scale data poisoning "
                                            "via gradient matching (ICLR)")
@dataclass(frozen=True)
class WitchesBrew(Poison):
    """count images of class target perturbed (L-inf eps) so their gradient matches 'test image victim -> target'."""

    victim: int = 0
    target: int = 0
    count: int = 100
    eps: float = 16 / 255
    steps: int = 100
    lr: float = 0.01
    model: Any = field(default=None, compare=False, repr=False)
    victim_image: Any = field(default=None, compare=False, repr=False)
    requires_model = True
    name = "witches_brew"

    def __post_init__(self) -> None:
        check_range("eps", float(self.eps), 0.0, 1.0)
        for what, v in (("count", self.count), ("steps", self.steps)):
            if int(v) < 1:
                raise ConfigError(f"{what}={v} is out of range; accepted: an int >= 1")

    def bind(self, model: Any, test_set: Dataset | None = None) -> "WitchesBrew":
        """A copy holding the surrogate model and the victim test image (index ``victim`` of test_set)."""
        if test_set is None or not 0 <= int(self.victim) < len(test_set):
            size = "no test set" if test_set is None else f"{len(test_set)} test images"
            raise ConfigError(f"victim={self.victim} is not a test image index ({size}); accepted: 0..len(test)-1")
        x, y = test_set.x[int(self.victim)], int(test_set.y[int(self.victim)])
        if y == int(self.target):
            raise ConfigError(f"victim {self.victim} is already of class {y}; accepted: a test image of another class")
        return replace(self, model=model, victim_image=(x, y, test_set.classes))

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Replace count images of class target by gradient-matched poisons (labels unchanged)."""
        if self.victim_image is None:
            raise ConfigError("witches_brew needs bind(model, test_set) first (the victim image comes from the test set)")
        if not 0 <= int(self.target) < data.num_classes:
            raise ConfigError(f"target={self.target} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
        surrogate = _frozen_trainable(self.model)
        pool = torch.nonzero(data.y == int(self.target)).flatten()
        index = choose(pool, None, min(int(self.count), len(pool)), generator(seed, "witches-brew", "choose"), "target-class images")
        victim_x = self.victim_image[0].unsqueeze(0)
        poisons = match_gradients(surrogate, data.x[index], data.y[index], victim_x,
                                  torch.tensor([int(self.target)]), float(self.eps), int(self.steps), float(self.lr))
        x = data.x.clone()
        x[index] = poisons
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "witches_brew", "count": len(index), "victim": int(self.victim), "target": int(self.target),
                "eps": float(self.eps)}
        return Poisoned(data.replace(x=x, name=f"{data.name}+witches-brew"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """The victim test image alone, TRUE label kept (success: it is classified as target)."""
        if self.victim_image is None:
            raise ConfigError("witches_brew needs bind(model, test_set) first")
        x, y, classes = self.victim_image
        return Dataset(x.unsqueeze(0), torch.tensor([y]), classes, f"{test_set.name}[victim {self.victim}]")
