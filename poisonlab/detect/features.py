"""Representations detectors work on: a model's features, or raw inputs.

``embed`` reads the features of any nn.Module through ``poisonlab.models.features``: the input of
``feature_layer`` (a module name; default: the last nn.Linear, i.e. the penultimate activations),
in eval mode without gradients, batched; the model's train/eval mode is restored afterwards and
the caller's model is never changed.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models import features


def embed(model: nn.Module, x: torch.Tensor, batch_size: int = 1024, feature_layer: str | None = None) -> torch.Tensor:
    """Features (n, d) of model on x: the input of feature_layer (default: the last nn.Linear)."""
    return features(model, x, feature_layer, batch_size)


def representations(x: torch.Tensor, model: nn.Module | None = None, feature_layer: str | None = None) -> torch.Tensor:
    """Model features of x (input of feature_layer) when a model is given, else the raw inputs flattened to (n, f)."""
    if model is not None:
        return embed(model, x, feature_layer=feature_layer)
    if x.dim() < 2:
        raise ConfigError(f"inputs of shape {tuple(x.shape)} cannot be used as features; accepted: (n, ...)")
    return x.flatten(1).float()


@torch.no_grad()
def distance_to_other_classes(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, label: int,
                              reference: int = 2000, g: torch.Generator | None = None) -> torch.Tensor:
    """Euclidean distance (raw inputs) from each sample at index to its nearest sample of another class.

    At most ``reference`` other-class samples are used (a seeded random subset when there are more).
    Dirty-label poison is relabeled from other classes, so it sits nearer to them than clean samples do.
    """
    other = torch.nonzero(y != label).flatten()
    if len(other) == 0:
        return torch.full((len(index),), float("inf"), device=x.device)
    if len(other) > reference:
        other = other[torch.randperm(len(other), generator=g, device="cpu").to(other.device)[:reference]]
    flat = x.flatten(1).float()
    return torch.cdist(flat[index], flat[other]).min(dim=1).values


def poisoned_side(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, side: torch.Tensor, label: int,
                  g: torch.Generator | None = None) -> bool:
    """Which of two groups of a class (side True / False) looks relabeled: True if the True side's median
    distance to other classes (raw inputs) is the smaller one."""
    if side.all() or (~side).all():
        return bool(side.all())
    d = distance_to_other_classes(x, y, index, label, g=g)
    return bool(d[side].median() < d[~side].median())


def fit_heads(x: torch.Tensor, y: torch.Tensor, num_classes: int, weights: torch.Tensor | None = None,
              own_x: torch.Tensor | None = None, own_y: torch.Tensor | None = None,
              steps: int = 200, lr: float = 0.1, l2: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """G multinomial logistic-regression heads trained together by full-batch Adam from zero.

    Head g minimises the mean cross-entropy over the shared rows x (n, d) weighted by weights[g]
    (G, n) (1 = use, 0 = leave out) plus its own rows own_x[g] (G, m, d), with an L2 penalty l2.
    Deterministic (zero init, full batch). Returns W (G, d, C), b (G, C).
    """
    G = weights.shape[0] if weights is not None else own_x.shape[0]
    d = x.shape[1]
    w_shared = torch.ones(G, len(x), device=x.device) if weights is None else weights.float()
    W = torch.zeros(G, d, num_classes, requires_grad=True, device=x.device)
    b = torch.zeros(G, num_classes, requires_grad=True, device=x.device)
    opt = torch.optim.Adam([W, b], lr=lr)
    count = w_shared.sum(dim=1) + (own_x.shape[1] if own_x is not None else 0)
    for _ in range(steps):
        logits = torch.einsum("nd,gdc->gnc", x, W) + b[:, None]
        ce = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(G), reduction="none").view(G, -1)
        total = (ce * w_shared).sum(dim=1)
        if own_x is not None and own_x.shape[1]:
            own = torch.einsum("gmd,gdc->gmc", own_x, W) + b[:, None]
            own_ce = nn.functional.cross_entropy(own.flatten(0, 1), own_y.flatten(), reduction="none")
            total = total + own_ce.view(G, -1).sum(dim=1)
        loss = (total / count.clamp_min(1)).sum() + l2 * W.pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return W.detach(), b.detach()


@torch.no_grad()
def heads_metrics(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy (G,), mean cross-entropy (G,)) of each head on (x, y)."""
    logits = torch.einsum("nd,gdc->gnc", x, W) + b[:, None]
    acc = (logits.argmax(dim=2) == y).float().mean(dim=1)
    ce = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(W.shape[0]), reduction="none").view(W.shape[0], -1)
    return acc, ce.mean(dim=1)


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Features scaled by the mean and std of train (std 0 -> 1), applied to train and others."""
    mu, sd = train.mean(dim=0), train.std(dim=0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    return [(t - mu) / sd for t in (train, *others)]
