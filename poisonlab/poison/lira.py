"""LIRA: a learnable, imperceptible additive trigger generator (Doan, Lao, Zhao and Li 2021, ICCV).

Doan et al., "LIRA: Learnable, imperceptible and robust backdoor attacks". The trigger is an additive
perturbation computed from the image by a generator network and bounded in L-inf:
    T(x) = eps tanh(g(x)),  ||T(x)||_inf <= eps,   the poisoned image  clip(x + T(x), 0, 1).
Stage 1 of the paper learns g together with a classifier f by alternating, on every mini-batch,
  - the generator step (f fixed):   min_g  CE(f(x + T(x)), eta(y)),
  - the classifier step (T fixed):  min_f  alpha CE(f(x), y) + (1 - alpha) CE(f(x + T(x)), eta(y)),
eta the target map (all-to-one, all-to-all or per source; poison/targets.py). The defaults are the
authors' MNIST command: alpha 0.5, eps 0.1.

Differences from the paper, stated: g is a small size-preserving conv stack (generator_nets.py), not the
paper's autoencoder / U-Net; f is a surrogate classifier trained inside the poison (the registered ``cnn``),
and stage 2 (the paper fine-tunes the victim with the fixed trigger, at a smaller test eps) is replaced by a
data poison: rate of the training set replaced by clip(x + T(x), 0, 1) and relabelled to its target
(BackdoorBench's 10% rate). Training is short (CPU-cheap defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.generated import GeneratedBackdoor, LearnedTrigger
from poisonlab.poison.generator_nets import conv_stack, freeze, minibatches, seeded, surrogate
from poisonlab.poison.registry import POISONS
from poisonlab.rng import generator


class BoundedGenerator(nn.Module):
    """T(x) = eps tanh(g(x)): an additive trigger whose every value lies in [-eps, eps]."""

    def __init__(self, channels: int, width: int, eps: float) -> None:
        super().__init__()
        self.body = conv_stack(channels, channels, width)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eps * torch.tanh(self.body(x))


def add_trigger(x: torch.Tensor, trigger: torch.Tensor) -> torch.Tensor:
    """clip(x + T(x), 0, 1): the poisoned image (clipping only shrinks the change, so it stays within eps)."""
    return (x + trigger).clamp(0.0, 1.0)


@POISONS.register("lira", reference="Doan, Lao, Zhao and Li 2021, LIRA: Learnable, imperceptible and robust "
                                    "backdoor attacks (ICCV): eps tanh(g(x)) trained alternately with a classifier")
@dataclass(frozen=True)
class Lira(GeneratedBackdoor):
    """An L-inf-bounded additive trigger generator, trained alternately with a surrogate classifier."""

    eps: float = 0.1
    alpha: float = 0.5
    width: int = 16
    classifier_lr: float = 0.05
    lr: float = 0.001
    name = "lira"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("eps", float(self.eps), 0.0, 1.0)
        check_range("alpha", float(self.alpha), 0.0, 1.0)
        if int(self.width) < 1:
            raise ConfigError(f"width={self.width} is out of range; accepted: an int >= 1")
        if not float(self.classifier_lr) > 0:
            raise ConfigError(f"classifier_lr={self.classifier_lr} is out of range; accepted: > 0")

    def learn(self, data: Dataset, seed: int) -> LearnedTrigger:
        """Alternate the generator step and the classifier step on every mini-batch, epochs times."""
        x, y = data.x.to(torch.float32), data.y.long()
        tmap = torch.tensor(self.target_map(data.num_classes), dtype=torch.long)
        eta = torch.where(tmap[y] >= 0, tmap[y], y)  # rows of unattacked classes keep their label
        g = seeded(lambda: BoundedGenerator(x.shape[1], int(self.width), float(self.eps)), seed, "lira", "generator")
        f = surrogate(x.shape[1:], data.num_classes, seed, "lira")
        opt_g = torch.optim.Adam(g.parameters(), lr=float(self.lr))
        opt_f = torch.optim.SGD(f.parameters(), lr=float(self.classifier_lr), momentum=0.9)
        a = float(self.alpha)
        for rows in minibatches(len(x), int(self.batch), int(self.epochs), generator(seed, "lira", "plan")):
            xb, yb, tb = x[rows], y[rows], eta[rows]
            generator_loss = F.cross_entropy(f(add_trigger(xb, g(xb))), tb)  # f fixed: only g steps
            opt_g.zero_grad()
            generator_loss.backward()
            opt_g.step()
            with torch.no_grad():
                poisoned = add_trigger(xb, g(xb))
            classifier_loss = a * F.cross_entropy(f(xb), yb) + (1 - a) * F.cross_entropy(f(poisoned), tb)
            opt_f.zero_grad()
            classifier_loss.backward()
            opt_f.step()
        freeze(g)
        return LearnedTrigger("lira", lambda v: add_trigger(v, g(v)), {"eps": float(self.eps), "epochs": int(self.epochs)})
