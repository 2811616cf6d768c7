"""Input-aware dynamic backdoor: a trigger generator trained with the classifier (Nguyen and Tran 2020, NeurIPS).

Nguyen and Tran, "Input-aware dynamic backdoor attack". Every image gets its own trigger from two generators:
a pattern p = G(x) (c channels, in [0, 1]) and a mask m = M(x) (1 channel, in [0, 1]), stamped as
    B(x) = x (1 - m) + p m  =  x + m (p - x).
Training (the paper's two stages, the defaults of the authors' code):
  1. the mask generator alone, for ``mask_epochs``:  lambda_div L_div(M) + lambda_norm mean(relu(m - density)),
     density 0.032, lambda_norm 100 (a sparse mask);
  2. the pattern generator and a classifier f together (M frozen), for ``epochs``; each mini-batch has a
     share ``rate`` of *backdoor* rows, B(x) relabelled to the target (p_attack = 0.1), a share
     rate x ``cross_ratio`` of *cross-trigger* rows stamped with the trigger of ANOTHER image, x + m' (p' - x)
     with (p', m') = (G(x'), M(x')), labels KEPT (p_cross = 0.1: a trigger must not fire on another input),
     and clean rows; the loss is CE(f(batch), labels) + lambda_div L_div(G).
The diversity loss is the paper's  L_div = ||x - x'|| / ||g(x) - g(x')||  averaged over pairs (x, x') of
a batch (here each image and its neighbour in the shuffled batch; norms as per-sample RMS, as the authors'
code, plus 1e-7 in the denominator): it forces different inputs to get different triggers.

Differences from the paper, stated: the generators are small size-preserving conv stacks (generator_nets.py),
not the paper's encoder-decoders; the classifier trained with them is a surrogate inside the poison (the
registered ``cnn``), and the attack is then a *data* poison: rate of the training set stamped by the trained
generators and relabelled, and cross_ratio x as many other rows stamped with another image's trigger, labels
kept (the paper controls the victim's training instead). Training is short (CPU-cheap defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, check_range
from poisonlab.poison.generated import GeneratedBackdoor, LearnedTrigger
from poisonlab.poison.generator_nets import conv_stack, freeze, minibatches, rms, run_frozen, seeded, surrogate
from poisonlab.poison.registry import POISONS
from poisonlab.poison.result import Poisoned, choose
from poisonlab.rng import generator

EPSILON = 1e-7


def stamp(x: torch.Tensor, pattern: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """B(x) = x + m (p - x): the pattern blended in through the mask (m broadcast over channels)."""
    return x + mask * (pattern - x)


def diversity_loss(x1: torch.Tensor, x2: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """mean over pairs of ||x1 - x2|| / (||g1 - g2|| + 1e-7), norms as per-sample RMS (Nguyen and Tran's L_div)."""
    return (rms(x1 - x2) / (rms(g1 - g2) + EPSILON)).mean()


def mask_norm_loss(mask: torch.Tensor, density: float) -> torch.Tensor:
    """mean(relu(m - density)): the mask's pixels pushed below density (the authors' sparsity term)."""
    return F.relu(mask - float(density)).mean()


def generator_net(channels: int, out: int, width: int, seed: int, key: str) -> nn.Module:
    """A seeded conv stack channels -> out followed by a sigmoid (outputs in [0, 1])."""
    return seeded(lambda: nn.Sequential(conv_stack(channels, out, width), nn.Sigmoid()), seed, "input-aware", key)


class DynamicTrigger(LearnedTrigger):
    """The trained generators: x -> B(x) with its own trigger; ``cross(x, donors)``: the donors' triggers on x."""

    def __init__(self, pattern: nn.Module, mask: nn.Module, info: dict) -> None:
        self.pattern, self.mask = freeze(pattern), freeze(mask)
        super().__init__("input_aware", lambda x: stamp(x, self.pattern(x), self.mask(x)), info)

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G(x), M(x)) without gradients."""
        return run_frozen(self.pattern, x), run_frozen(self.mask, x)

    def cross(self, x: torch.Tensor, donors: torch.Tensor) -> torch.Tensor:
        """x (n, c, h, w) stamped with the triggers generated for donors (n, c, h, w): x + M(d) (G(d) - x)."""
        pattern, mask = self.parts(donors)
        return stamp(x, pattern.to(x.dtype), mask.to(x.dtype))


@POISONS.register("input_aware", reference="Nguyen and Tran 2020, Input-aware dynamic backdoor attack (NeurIPS): "
                                           "pattern + mask generators, cross-trigger mode, diversity loss")
@dataclass(frozen=True)
class InputAware(GeneratedBackdoor):
    """Sample-specific triggers from generators trained with a surrogate classifier; backdoor + cross-trigger rows."""

    cross_ratio: float = 1.0
    mask_density: float = 0.032
    lambda_div: float = 1.0
    lambda_norm: float = 100.0
    mask_epochs: int = 1
    width: int = 16
    classifier_lr: float = 0.05
    name = "input_aware"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("mask_density", float(self.mask_density), 0.0, 1.0)
        for what in ("cross_ratio", "lambda_div", "lambda_norm"):
            if float(getattr(self, what)) < 0:
                raise ConfigError(f"{what}={getattr(self, what)} is out of range; accepted: >= 0")
        for what in ("mask_epochs", "width"):
            if int(getattr(self, what)) < 1:
                raise ConfigError(f"{what}={getattr(self, what)} is out of range; accepted: an int >= 1")
        if not float(self.classifier_lr) > 0:
            raise ConfigError(f"classifier_lr={self.classifier_lr} is out of range; accepted: > 0")

    def _optimiser(self, net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(net.parameters(), lr=float(self.lr), betas=(0.5, 0.9))

    def _train_mask(self, mask: nn.Module, x: torch.Tensor, seed: int) -> None:
        """Stage 1: the mask generator alone, diversity + sparsity."""
        opt = self._optimiser(mask)
        for rows in minibatches(len(x), int(self.batch), int(self.mask_epochs), generator(seed, "input-aware", "mask-plan")):
            x1 = x[rows]
            x2 = x1.roll(1, dims=0)  # each image's partner: its neighbour in the shuffled batch
            m1, m2 = mask(x1), mask(x2)
            loss = float(self.lambda_div) * diversity_loss(x1, x2, m1, m2) + float(self.lambda_norm) * mask_norm_loss(
                m1, float(self.mask_density))
            opt.zero_grad()
            loss.backward()
            opt.step()

    def _train_pattern(self, pattern: nn.Module, mask: nn.Module, data: Dataset, seed: int) -> None:
        """Stage 2: the pattern generator and the surrogate classifier together: backdoor, cross and clean rows."""
        x, y = data.x.to(torch.float32), data.y.long()
        tmap = torch.tensor(self.target_map(data.num_classes), dtype=torch.long)
        poisoned_label = torch.where(tmap[y] >= 0, tmap[y], y)
        f = surrogate(x.shape[1:], data.num_classes, seed, "input-aware")
        opt_f = torch.optim.SGD(f.parameters(), lr=float(self.classifier_lr), momentum=0.9)
        opt_g = self._optimiser(pattern)
        plan = minibatches(len(x), int(self.batch), int(self.epochs), generator(seed, "input-aware", "plan"))
        for rows in plan:
            xb, n = x[rows], len(rows)
            nb = int(round(float(self.rate) * n))
            nc = min(int(round(float(self.rate) * float(self.cross_ratio) * n)), n - nb)
            partner = xb.roll(1, dims=0)
            p1, p2 = pattern(xb[:nb + nc]), pattern(partner[:nb + nc])
            with torch.no_grad():
                m1, m2 = mask(xb[:nb + nc]), mask(partner[:nb + nc])
            inputs = torch.cat([stamp(xb[:nb], p1[:nb], m1[:nb]), stamp(xb[nb:nb + nc], p2[nb:], m2[nb:]), xb[nb + nc:]])
            labels = torch.cat([poisoned_label[rows[:nb]], y[rows[nb:]]])
            loss = F.cross_entropy(f(inputs), labels)
            if nb + nc > 0:
                loss = loss + float(self.lambda_div) * diversity_loss(xb[:nb + nc], partner[:nb + nc], p1, p2)
            opt_f.zero_grad()
            opt_g.zero_grad()
            loss.backward()
            opt_f.step()
            opt_g.step()

    def learn(self, data: Dataset, seed: int) -> DynamicTrigger:
        """Train the mask generator (stage 1), then the pattern generator with the surrogate (stage 2)."""
        c = data.x.shape[1]
        pattern = generator_net(c, c, int(self.width), seed, "pattern")
        mask = generator_net(c, 1, int(self.width), seed, "mask")
        self._train_mask(mask, data.x.to(torch.float32), seed)
        freeze(mask)
        self._train_pattern(pattern, mask, data, seed)
        return DynamicTrigger(pattern, mask, {"epochs": int(self.epochs), "mask_epochs": int(self.mask_epochs)})

    def apply(self, data: Dataset, seed: int = 0, *, learn: bool = True) -> Poisoned:
        """Backdoor rows (B(x), relabelled), then cross_ratio x as many others with another image's trigger, labels kept
        (learn=False: with the network already trained, generated.py)."""
        out = super().apply(data, seed, learn=learn)
        others = torch.nonzero(~out.mask).flatten()
        count = min(int(round(float(self.cross_ratio) * out.count)), len(others))
        cross = choose(others, None, count, generator(seed, "input-aware", "cross"), "rows for the cross-trigger mode")
        donors = cross.roll(1) if len(cross) > 1 else torch.nonzero(out.mask).flatten()[:len(cross)]
        if len(donors) < len(cross):
            raise ConfigError("input_aware's cross-trigger mode needs at least 2 rows to pair; lower cross_ratio to 0")
        x = out.data.x.clone()
        x[cross] = self.trigger.cross(data.x[cross], data.x[donors])
        mask = out.mask.clone()
        mask[cross] = True
        return Poisoned(out.data.replace(x=x), mask, {**out.info, "cross_trigger": len(cross)})
