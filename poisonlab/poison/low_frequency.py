"""Low-frequency trigger: a smooth universal adversarial perturbation as the backdoor (Zeng et al. 2021, ICCV).

Zeng, Park, Mao, Jia and Jia, "Rethinking the backdoor attacks' triggers: a frequency perspective".
Ordinary triggers (patches, noise) leave high-frequency artefacts that frequency-based defenses detect;
a trigger confined to low frequencies is as effective and smooth. The paper builds it as a *universal
adversarial perturbation* toward the target class whose every iterate is low-pass filtered:
    delta <- Proj_eps( LowPass( delta - lr * sign( mean_i grad_delta CE(f(clip(x_i + delta)), target) ) ) ),
with f a surrogate model (here the model given by ``bind(model)``: the centralized pipeline binds the
clean model), x_i clean training images of other classes, LowPass keeping the DCT coefficients (u, v) with
u + v < ``cutoff`` (the paper uses a low-pass window in the frequency domain), and Proj_eps the L-inf ball.
The result is stamped additively, clip(x + delta, 0, 1), on ``rate`` of the training set relabelled to the
target (dirty label, as in the paper's main setting) and on every test input.

The perturbation depends on the training data, so it is computed in ``apply`` from the data being poisoned
(a deterministic function of model, data and seed) and kept for ``triggered``; calling ``triggered``
first is refused in one line.
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
from poisonlab.poison.frequency import blocks_dct
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.rng import generator


def low_pass(delta: torch.Tensor, cutoff: int) -> torch.Tensor:
    """delta (c, h, w) keeping only its DCT coefficients (u, v) with u + v < cutoff (whole-image DCT)."""
    c, h, w = delta.shape
    if h != w:
        raise ConfigError(f"low_frequency needs square images; got {h}x{w}")
    u = torch.arange(h)[:, None] + torch.arange(w)[None, :]
    coeffs = blocks_dct(delta.to(torch.float64), h) * (u < cutoff)
    return blocks_dct(coeffs, h, inverse=True).to(delta.dtype)


def universal_low_frequency(model: torch.nn.Module, x: torch.Tensor, target: int, eps: float, steps: int,
                            lr: float, cutoff: int, batch: int, g: torch.Generator) -> torch.Tensor:
    """The (c, h, w) low-pass universal perturbation toward target: signed mean-gradient steps, filtered, projected."""
    delta = torch.zeros(x.shape[1:], dtype=x.dtype)
    labels = torch.full((batch,), int(target), dtype=torch.long)
    for _ in range(steps):
        pick = torch.randint(0, len(x), (batch,), generator=g)
        d = delta.clone().requires_grad_(True)
        loss = F.cross_entropy(model((x[pick] + d).clamp(0.0, 1.0)), labels[:len(pick)])
        (grad,) = torch.autograd.grad(loss, d)
        with torch.no_grad():
            delta = low_pass(delta - lr * grad.sign(), cutoff).clamp(-eps, eps)
    return delta.detach()


@POISONS.register("low_frequency", reference="Zeng et al. 2021, Rethinking the backdoor attacks' triggers: "
                                             "a frequency perspective (ICCV): low-pass universal perturbation")
@dataclass(frozen=True)
class LowFrequency(Poison):
    """A low-pass universal perturbation toward target (from the bound model) added to rate of the data, relabelled."""

    target: int = 0
    rate: float = 0.1
    eps: float = 0.1
    steps: int = 100
    lr: float = 0.01
    cutoff: int = 8
    batch: int = 128
    model: Any = field(default=None, compare=False, repr=False)
    pattern: Any = field(default=None, compare=False, repr=False)
    requires_model = True
    name = "low_frequency"

    def __post_init__(self) -> None:
        check_range("eps", float(self.eps), 0.0, 1.0)
        check_range("rate", float(self.rate), 0.0, 1.0)
        for what, v in (("steps", self.steps), ("cutoff", self.cutoff), ("batch", self.batch)):
            if int(v) < 1:
                raise ConfigError(f"{what}={v} is out of range; accepted: an int >= 1")

    def bind(self, model: Any, test_set: Dataset | None = None) -> "LowFrequency":
        """A copy holding the surrogate model the perturbation is computed against."""
        return replace(self, model=model, pattern=None)

    def _pattern(self, data: Dataset, seed: int) -> torch.Tensor:
        if self.model is None:
            raise ConfigError("low_frequency needs a surrogate model; call bind(model) first (run_centralized does)")
        surrogate = copy.deepcopy(self.model).eval().to("cpu")
        for p in surrogate.parameters():
            p.requires_grad_(False)
        others = data.x[data.y != int(self.target)]
        return universal_low_frequency(surrogate, others, int(self.target), float(self.eps), int(self.steps),
                                       float(self.lr), int(self.cutoff), int(self.batch),
                                       generator(seed, "low-frequency", "uap"))

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Compute the trigger from data, add it to rate of the non-target samples, relabel them target."""
        if not 0 <= int(self.target) < data.num_classes:
            raise ConfigError(f"target={self.target} is not a class of '{data.name}'; accepted: 0..{data.num_classes - 1}")
        pattern = self._pattern(data, seed)
        object.__setattr__(self, "pattern", pattern)  # kept for triggered(): the trigger is a function of the data
        pool = torch.nonzero(data.y != int(self.target)).flatten()
        count = min(int(round(float(self.rate) * len(data))), len(pool))
        index = choose(pool, None, count, generator(seed, "low-frequency", "choose"), "non-target samples")
        x, y = data.x.clone(), data.y.clone()
        x[index] = (data.x[index] + pattern).clamp(0.0, 1.0)
        y[index] = int(self.target)
        mask = torch.zeros(len(data), dtype=torch.bool)
        mask[index] = True
        info = {"attack": "low_frequency", "count": len(index), "target": int(self.target),
                "max_linf": float(pattern.abs().max())}
        return Poisoned(data.replace(x=x, y=y, name=f"{data.name}+low-frequency"), mask, info)

    def triggered(self, test_set: Dataset, seed: int = 0) -> Dataset:
        """Every test input plus the trigger computed by apply; TRUE labels kept."""
        if self.pattern is None:
            raise ConfigError("low_frequency's trigger is computed from the training data; call apply() before triggered()")
        return test_set.replace(x=(test_set.x + self.pattern).clamp(0.0, 1.0), name=f"{test_set.name}+trigger")
