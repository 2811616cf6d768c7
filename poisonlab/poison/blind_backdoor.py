"""Blind backdoor (Bagdasaryan & Shmatikov 2021, USENIX Security): the attacker poisons the loss computation.

Bagdasaryan and Shmatikov, "Blind backdoors in deep learning models". The attacker never sees the data or
the model; their code replaces the training loss. For every mini-batch (x, y) it synthesises backdoor inputs
on the fly, x* = trigger(x), labelled y* = target, and trains on two tasks at once:
    L = alpha * L_main + (1 - alpha) * L_backdoor,   L_main = CE(f(x), y),  L_backdoor = CE(f(x*), y*),
with alpha chosen per batch by MGDA (the multiple-gradient descent algorithm; Sener & Koltun 2018,
"Multi-task learning as multi-objective optimization", NeurIPS): the weights whose combined gradient has
the smallest norm. For two tasks the Frank-Wolfe step is exact (Sener & Koltun, Algorithm 1):
    alpha = clamp(((g2 - g1) . g2) / ||g1 - g2||^2, 0, 1),   g1 = grad L_main, g2 = grad L_backdoor
(over every trainable parameter, as the authors' backdoors101 code does). As there, each gradient is first
divided by a normaliser (``normalize``: ``loss`` = min(L, 10), their MNIST setting and the default; ``l2`` =
||g||; ``loss+`` = min(L ||g||, 10); ``none``) and alpha is kept in [0.001, 0.999] so neither task is ever
dropped; the weights then multiply the raw losses. ``alpha`` given as a number fixes the weight instead (the
paper's fixed-coefficient baseline). Rows already of the target class are left out of L_backdoor. No training sample is changed: ``apply`` returns the data as is, and the
attack lives in ``train_model`` (poison/base.py's training hook; run_centralized calls it, concat injection).
Not built: the multi-task ("complex", e.g. semantic) backdoors; the synthesiser here is any poisonlab trigger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from poisonlab.data.dataset import Dataset
from poisonlab.device import host
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.attacker_training import gradients, train_with_step, trainable
from poisonlab.poison.base import Poison
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned
from poisonlab.poison.triggers import Trigger, make_trigger
from poisonlab.rng import generator


def flat_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """The dot product of two gradients given as lists of per-parameter tensors."""
    return sum((x * y).sum() for x, y in zip(a, b))


def mgda_two_tasks(g1: list[torch.Tensor], g2: list[torch.Tensor]) -> float:
    """alpha in [0, 1] minimising ||alpha g1 + (1 - alpha) g2||^2 (Sener & Koltun 2018, two tasks, exact).

    Equal gradients leave every alpha optimal: 0.5 is returned then.
    """
    diff = [x - y for x, y in zip(g1, g2)]
    denom = float(flat_dot(diff, diff))
    if denom == 0.0:
        return 0.5
    return min(1.0, max(0.0, float(flat_dot([-d for d in diff], g2)) / denom))


NORMALIZERS = ("loss", "l2", "loss+", "none")
BOUNDS = (0.001, 0.999)  # backdoors101 keeps both tasks: alpha never reaches 0 or 1


def normaliser(kind: str, loss: torch.Tensor, grads: list[torch.Tensor]) -> float:
    """What a task's gradient is divided by before MGDA (backdoors101's gradient_normalizers)."""
    if kind == "none":
        return 1.0
    norm = float(torch.sqrt(flat_dot(grads, grads)))
    value = float(loss.detach())
    return {"loss": min(value, 10.0), "l2": norm, "loss+": min(value * norm, 10.0)}[kind]


def mgda_weight(kind: str, losses: tuple[torch.Tensor, torch.Tensor],
                grads: tuple[list[torch.Tensor], list[torch.Tensor]]) -> float:
    """The main task's weight: MGDA on the normalised gradients, kept in BOUNDS."""
    scaled = [[g / (normaliser(kind, loss, gs) + 1e-5) for g in gs] for loss, gs in zip(losses, grads)]
    return min(BOUNDS[1], max(BOUNDS[0], mgda_two_tasks(*scaled)))


@POISONS.register("blind_backdoor", reference="Bagdasaryan & Shmatikov 2021, Blind backdoors in deep learning models "
                                              "(USENIX Security); MGDA: Sener & Koltun 2018")
@dataclass(frozen=True)
class BlindBackdoor(Poison):
    """Loss poisoning: every batch also trains trigger(x) -> target, the two losses balanced by MGDA (or alpha)."""

    trigger: Trigger | dict | str = field(default_factory=lambda: {"name": "patch", "params": {"size": 3}})
    target: int = 0
    alpha: float | None = None
    normalize: str = "loss"
    trains_model = True
    name = "blind_backdoor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", make_trigger(self.trigger))
        if isinstance(self.target, bool) or not isinstance(self.target, int):
            raise ConfigError(f"target={self.target!r} is not valid; accepted: a class index (int)")
        if self.alpha is not None:
            check_range("alpha", float(self.alpha), 0.0, 1.0)
        if self.normalize not in NORMALIZERS:
            raise ConfigError(f"normalize={self.normalize!r} is not known; accepted: {', '.join(NORMALIZERS)}")

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """The data unchanged (the attack is in the loss): an all-False mask."""
        if not 0 <= int(self.target) < data.num_classes:
            raise ConfigError(f"target={self.target} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
        info = {"attack": "blind_backdoor", "count": 0, "target": int(self.target), "trigger": self.trigger.to_dict(),
                "balance": f"mgda ({self.normalize})" if self.alpha is None else f"fixed alpha {float(self.alpha)}"}
        return Poisoned(data.replace(name=f"{data.name}+blind-backdoor-loss"), torch.zeros(len(data), dtype=torch.bool),
                        info)

    def train_model(self, model, poisoned: Poisoned, cfg, seed: int = 0, precision: str = "fp32") -> list[float]:
        """Train model in place with the blind-backdoor loss on every batch (attacker_training.train_with_step)."""
        params = trainable(model)
        target = int(self.target)

        def step(xb: torch.Tensor, yb: torch.Tensor, rows: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
            main = F.cross_entropy(model(xb), yb)
            keep = yb != target
            if not bool(keep.any()):
                main.backward()
                return main
            with host():  # synthesised on the host, as all stamping (device.py), then moved
                stamped = self.trigger(xb[keep].detach().cpu(), rng).to(xb.device)
            backdoor = F.cross_entropy(model(stamped), torch.full_like(yb[keep], target))
            g_main, g_back = gradients(main, params), gradients(backdoor, params)
            a = (mgda_weight(self.normalize, (main, backdoor), (g_main, g_back)) if self.alpha is None
                 else float(self.alpha))
            for p, gm, gb in zip(params, g_main, g_back):
                p.grad = a * gm + (1 - a) * gb
            return a * main.detach() + (1 - a) * backdoor.detach()

        return train_with_step(model, poisoned.data, cfg, seed, step, "blind-backdoor", precision)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """Every test input with the trigger, TRUE labels kept (the ASR counts those not of the target class)."""
        return test_set.replace(x=self.trigger(test_set.x, generator(seed, "blind-backdoor", "test-stamp")),
                                name=f"{test_set.name}+trigger")
