"""MixMatch, the semi-supervised loss of DBD's fine-tuning stage (Berthelot, Carlini, Goodfellow, Papernot, Oliver
& Raffel, "MixMatch: A Holistic Approach to Semi-Supervised Learning", NeurIPS 2019, Algorithm 1).

For a labelled batch X (one-hot targets p) and an unlabelled batch U of the same size:

1. augment X once and U K = 2 times; the guessed label of an unlabelled row is the mean of the model's
   softmax over its K views, sharpened: q = q_bar^(1/T) / sum_k q_bar_k^(1/T) (T = 0.5), no gradient;
2. W = the 3B augmented inputs (X, U1, U2) with their targets (p, q, q), shuffled; MixUp each input with
   the W row at its position: lambda ~ Beta(alpha, alpha), lambda' = max(lambda, 1 - lambda) (so the mix
   stays closer to its own row), x' = lambda' x + (1 - lambda') w, target likewise (alpha = 0.75);
3. L_X = the cross-entropy of the mixed labelled rows against their soft targets, L_U = the mean squared error
   between the mixed unlabelled rows' softmax and their targets (mean over rows and classes), and the loss is
   L_X + lambda_U L_U, lambda_U ramped up linearly from 0 (DBD's official config: 15).

The mixed batch goes through the model as one batch (the reference code's "interleave" serves the same end:
batch-norm statistics over labelled and unlabelled rows alike). lambda and the shuffle come from the caller's
seeded generators, drawn on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """MixMatch's Sharpen(p, T): each row p^(1/T), renormalised to sum to 1."""
    powered = p.pow(1.0 / temperature)
    return powered / powered.sum(1, keepdim=True)


def mix_up(x: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp with lambda' = max(lam, 1 - lam): (lambda' x + (1 - lambda') x[perm], same for targets)."""
    lam = max(lam, 1.0 - lam)
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def mixmatch_losses(logits_x: torch.Tensor, targets_x: torch.Tensor, logits_u: torch.Tensor,
                    targets_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_X, L_U): the mean soft-target cross-entropy of the labelled rows, the mean squared error (over rows
    and classes) between the unlabelled rows' softmax and their targets."""
    lx = -(F.log_softmax(logits_x, 1) * targets_x).sum(1).mean()
    lu = (F.softmax(logits_u, 1) - targets_u).pow(2).mean()
    return lx, lu


def mixmatch_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor, num_classes: int,
                  augment: Callable[[torch.Tensor], torch.Tensor], rng: np.random.Generator, g: torch.Generator,
                  temperature: float = 0.5, alpha: float = 0.75) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_X, L_U) of one MixMatch batch: labelled rows x with labels y, unlabelled rows u; augment draws one
    random augmentation of a batch; lambda from rng (numpy), the shuffle from g (CPU, moved)."""
    xa, u1, u2 = augment(x), augment(u), augment(u)
    with torch.no_grad():
        guess = sharpen((F.softmax(model(u1), 1) + F.softmax(model(u2), 1)) / 2, temperature)
    inputs = torch.cat([xa, u1, u2])
    targets = torch.cat([F.one_hot(y, num_classes).to(guess.dtype), guess, guess])
    perm = torch.randperm(len(inputs), generator=g, device="cpu").to(inputs.device)
    mixed, mixed_targets = mix_up(inputs, targets, float(rng.beta(alpha, alpha)), perm)
    logits = model(mixed)
    b = len(x)
    return mixmatch_losses(logits[:b], mixed_targets[:b], logits[b:], mixed_targets[b:])
