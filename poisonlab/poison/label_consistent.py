"""Label-consistent backdoor (Turner, Tsipras and Madry 2019): hard-to-learn target images + trigger, labels kept.

Turner et al., "Label-consistent backdoor attacks". A clean-label trigger on an ordinary target-class
image is easy to ignore: the model classifies the image from its content. So the attacker first makes
the chosen target-class images *hard*: an untargeted L-inf PGD perturbation (Madry et al. 2018) of radius
eps that maximises a surrogate model's loss on the true label,
    x' = Proj_{||x' - x||_inf <= eps, [0, 1]} (x' + step * sign(grad_x' CE(f(x'), y))),   `steps` times,
then stamps the trigger and keeps the label. Learning these images forces the model to rely on the
trigger. The paper's surrogate is adversarially trained and its eps in {8, 16, 32}/255 (default here
16/255); here the surrogate is the model bound with ``bind(model)`` (the centralized pipeline binds the
clean model), and PGD starts at x (no random start: the poison is a deterministic function of the data).
rate (default 0.5) is the share of the target class poisoned (clean-label: only target-class images can be used).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.clean_label_backdoor import CleanLabelBackdoor
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned
from poisonlab.poison.triggers import Trigger
from poisonlab.rng import generator

CHUNK = 256


def pgd_away(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
             step_size: float) -> torch.Tensor:
    """Untargeted L-inf PGD from x: each step x' += step_size * sign(grad CE(model(x'), y)), projected; in chunks."""
    out = []
    for lo in range(0, len(x), CHUNK):
        x0, y0 = x[lo:lo + CHUNK], y[lo:lo + CHUNK]
        z = x0.clone()
        for _ in range(steps):
            z.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(z), y0, reduction="sum"), z)
            with torch.no_grad():
                z = z + step_size * grad.sign()
                z = torch.minimum(torch.maximum(z, x0 - eps), x0 + eps).clamp(0.0, 1.0)
        out.append(z.detach())
    return torch.cat(out) if out else x.clone()


@POISONS.register("label_consistent", reference="Turner, Tsipras and Madry 2019, Label-consistent backdoor attacks")
@dataclass(frozen=True)
class LabelConsistent(CleanLabelBackdoor):
    """PGD (L-inf eps, against the bound model) on rate of the target class, then the trigger; labels kept."""

    trigger: Trigger | dict | str = field(default_factory=lambda: {"name": "patch", "params": {"size": 3}})
    target: int = 0
    rate: float | None = None
    eps: float = 16 / 255
    steps: int = 10
    step_size: float | None = None
    model: Any = field(default=None, compare=False, repr=False)
    requires_model = True
    name = "label_consistent"

    def __post_init__(self) -> None:
        if self.rate is None and self.count is None:
            object.__setattr__(self, "rate", 0.5)  # default: half of the target class
        super().__post_init__()
        check_range("eps", float(self.eps), 0.0, 1.0)
        if int(self.steps) < 1:
            raise ConfigError(f"steps={self.steps} is out of range; accepted: an int >= 1")

    def bind(self, model: Any, test_set: Dataset | None = None) -> "LabelConsistent":
        """A copy holding the surrogate model the adversarial perturbation is computed against."""
        return replace(self, model=model)

    def apply(self, data: Dataset, seed: int = 0) -> Poisoned:
        """Perturb the chosen target-class images away from their label, stamp the trigger, keep every label."""
        if self.model is None:
            raise ConfigError("label_consistent needs a surrogate model; call bind(model) first (run_centralized does)")
        stamped = super().apply(data, seed)
        index = torch.nonzero(stamped.mask).flatten()
        surrogate = copy.deepcopy(self.model).eval().to("cpu")
        for p in surrogate.parameters():
            p.requires_grad_(False)
        step = float(self.step_size) if self.step_size is not None else 2.5 * float(self.eps) / int(self.steps)
        hard = pgd_away(surrogate, data.x[index], data.y[index], float(self.eps), int(self.steps), step)
        x = data.x.clone()
        x[index] = self.trigger(hard, generator(seed, "clean-label-backdoor", "stamp"))  # the positions stamped above
        info = {**stamped.info, "attack": "label_consistent", "eps": float(self.eps), "steps": int(self.steps)}
        return Poisoned(data.replace(x=x, name=f"{data.name}+label-consistent"), stamped.mask, info)
