"""Mitigation after detection. Every function returns a NEW model; the caller's model is never changed.

- ``retrain_without``: train a fresh model on the data minus the flagged samples (Tran et al. 2018;
  Chen et al. 2018 retrain after removal).
- ``fine_prune``: Liu, Dolan-Gavitt & Garg, "Fine-Pruning", RAID 2018: prune the penultimate
  neurons least active on clean data (dormant neurons that a backdoor can hide in), then fine-tune.
- ``prune_trigger_neurons``: Wang et al. 2019 (Neural Cleanse, Sec. VI-B): prune the penultimate
  neurons whose activation rises most when the reversed trigger is stamped on clean inputs.
- ``unlearn``: Wang et al. 2019 (Sec. VI-C): fine-tune on clean inputs, a share of them carrying the
  reversed trigger while keeping their TRUE labels.
- ``robust_training``: adversarial / robust training: train on the data plus triggered or perturbed
  copies carrying their true labels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.detect.features import embed
from poisonlab.detect.neural_cleanse import apply_trigger
from poisonlab.device import as_tensor, host, resolve
from poisonlab.errors import ConfigError, check_range
from poisonlab.model_spec import ModelSpec, build_model
from poisonlab.models import linear_head
from poisonlab.rng import generator
from poisonlab.training import TrainConfig, train


def _tuned(model: nn.Module, data: Dataset, cfg: TrainConfig, seed: int) -> nn.Module:
    """A trainable copy of model (gradients re-enabled even if the caller froze it) trained on data."""
    tuned = copy.deepcopy(model).requires_grad_(True)
    train(tuned, data, cfg, seed)
    return tuned


def retrain_without(data: Dataset, flagged: torch.Tensor, model: ModelSpec = "cnn", cfg: TrainConfig = TrainConfig(),
                    seed: int = 0, device: str | torch.device = "cpu", **model_params) -> nn.Sequential:
    """A fresh build_model(model) (a name, 'package.module:factory', a factory or an nn.Module to copy)
    trained on data without the flagged samples, on device (built on the CPU from the seed, then moved)."""
    flagged = as_tensor(flagged, dtype=torch.bool).to(data.y.device)
    if flagged.shape != (len(data),):
        raise ConfigError(f"flagged has shape {tuple(flagged.shape)}; expected ({len(data)},) to match the data")
    with host():
        fresh = build_model(model, data.input_shape, data.num_classes, seed=seed, **model_params)
    fresh = fresh.to(resolve(device))
    train(fresh, data.subset(~flagged), cfg, seed=seed)
    return fresh


def prune_neurons(model: nn.Module, neurons: torch.Tensor, feature_layer: str | None = None) -> nn.Module:
    """A copy of model with the given feature neurons removed: those input columns of the nn.Linear
    feature_layer (default: the last nn.Linear) set to zero."""
    pruned = copy.deepcopy(model)
    _, head = linear_head(pruned, feature_layer)
    with torch.no_grad():
        head.weight[:, neurons] = 0.0
    return pruned


def _prune_count(model: nn.Module, fraction: float, feature_layer: str | None) -> int:
    check_range("fraction", fraction, 0.0, 1.0)
    return int(round(fraction * linear_head(model, feature_layer)[1].in_features))


def fine_prune(model: nn.Module, clean: Dataset, fraction: float = 0.5,
               cfg: TrainConfig = TrainConfig(epochs=2, lr=0.01), seed: int = 0,
               feature_layer: str | None = None) -> nn.Module:
    """Fine-pruning (Liu et al. 2018): prune the fraction of feature neurons (inputs of the nn.Linear
    feature_layer, default the last one) least active on clean data, then fine-tune."""
    mean_act = embed(model, clean.x, feature_layer=feature_layer).mean(dim=0)
    pruned = prune_neurons(model, torch.argsort(mean_act)[:_prune_count(model, fraction, feature_layer)], feature_layer)
    if cfg.epochs == 0:
        return pruned
    keep = linear_head(pruned, feature_layer)[1].weight.detach().abs().sum(dim=0) > 0
    tuned = _tuned(pruned, clean, cfg, seed)
    with torch.no_grad():
        linear_head(tuned, feature_layer)[1].weight[:, ~keep] = 0.0
    return tuned


def prune_trigger_neurons(model: nn.Module, clean: Dataset, mask: torch.Tensor, pattern: torch.Tensor,
                          fraction: float = 0.1, feature_layer: str | None = None) -> nn.Module:
    """Neural Cleanse pruning: remove the feature neurons (inputs of the nn.Linear feature_layer, default
    the last one) the reversed trigger excites most (mean rise)."""
    rise = (embed(model, apply_trigger(clean.x, mask, pattern), feature_layer=feature_layer).mean(dim=0)
            - embed(model, clean.x, feature_layer=feature_layer).mean(dim=0))
    return prune_neurons(model, torch.argsort(rise, descending=True)[:_prune_count(model, fraction, feature_layer)],
                         feature_layer)


def unlearn(model: nn.Sequential, clean: Dataset, mask: torch.Tensor, pattern: torch.Tensor, share: float = 0.2,
            cfg: TrainConfig = TrainConfig(epochs=2, lr=0.01), seed: int = 0) -> nn.Sequential:
    """Neural Cleanse unlearning: fine-tune a copy on clean data with a share stamped by the reversed trigger, true labels."""
    check_range("share", share, 0.0, 1.0)
    pick = (torch.rand(len(clean), generator=generator(seed, "unlearn"), device="cpu") < share).to(clean.x.device)
    x = clean.x.clone()
    x[pick] = apply_trigger(x[pick], mask, pattern)
    return _tuned(model, clean.replace(x=x), cfg, seed)


def robust_training(data: Dataset, perturb: Callable[[torch.Tensor], torch.Tensor], share: float = 0.2,
                    model: ModelSpec = "cnn", cfg: TrainConfig = TrainConfig(), seed: int = 0,
                    device: str | torch.device = "cpu", **model_params) -> nn.Sequential:
    """Train a fresh model on data plus perturbed copies (perturb(x), e.g. a trigger stamp) of a share, true labels;
    on device (built on the CPU from the seed, then moved)."""
    check_range("share", share, 0.0, 1.0)
    pick = torch.rand(len(data), generator=generator(seed, "robust_training"), device="cpu") < share
    extra = data.subset(pick.to(data.y.device))
    augmented = data.concat(extra.replace(x=perturb(extra.x)))
    with host():
        fresh = build_model(model, data.input_shape, data.num_classes, seed=seed, **model_params)
    fresh = fresh.to(resolve(device))
    train(fresh, augmented, cfg, seed=seed)
    return fresh
