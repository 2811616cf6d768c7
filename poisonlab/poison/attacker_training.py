"""The attacker's training loop: training.train's loop with the per-batch loss step supplied by an attack.

Attacks that control the victim's training (blind backdoor: the loss computation; adversarial embedding:
an adversarial regulariser) change only what happens to one mini-batch. Everything else is the plain
pipeline's, so a poisoned model differs from a plainly trained one by the attack alone: the same seeded
batch order (``generator(seed, "batches", epoch)``), learning-rate schedule (``training.lr_at``), optimizer,
augmentation and per-epoch divergence check. ``step(xb, yb, rows, epoch_rng)`` receives the batch on the
model's device, its row positions in the dataset (to look up which rows are poisoned) and a CPU generator
for the epoch; it must leave the model parameters' ``.grad`` set and return the batch's loss (a scalar tensor,
for the per-epoch report). Poisons call it from ``train_model`` (poison/base.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.augment import augment, check_images
from poisonlab.data.dataset import Dataset
from poisonlab.device import model_device
from poisonlab.divergence import check_epoch
from poisonlab.errors import ConfigError
from poisonlab.precision import autocast
from poisonlab.rng import generator
from poisonlab.training import _optimizer, lr_at

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def train_with_step(model: nn.Module, data: Dataset, cfg, seed: int, step: Step, purpose: str,
                    precision: str = "fp32") -> list[float]:
    """Train model in place, the loss of each batch computed (and differentiated) by step; mean loss per epoch.

    purpose names the attack's own random stream: ``generator(seed, purpose, epoch)`` is passed to step.
    """
    if len(data) == 0:
        raise ConfigError(f"dataset '{data.name}' is empty; cannot train on 0 samples")
    if cfg.augment is not None:
        check_images(data.input_shape, "train.augment")
    device = model_device(model)
    x, y = data.x.to(device), data.y.to(device)
    opt = _optimizer(model, cfg)
    losses, total_steps, done = [], cfg.epochs * math.ceil(len(data) / cfg.batch_size), 0
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(data), generator=generator(seed, "batches", epoch), device="cpu")
        aug_rng = generator(seed, "augment", epoch) if cfg.augment is not None else None
        attack_rng = generator(seed, purpose, epoch)
        total = torch.zeros((), device=device)
        for start in range(0, len(data), cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            idx = rows.to(device)
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, done, total_steps)
            done += 1
            opt.zero_grad(set_to_none=True)
            xb = x[idx] if aug_rng is None else augment(x[idx], aug_rng, cfg.augment.crop_padding, cfg.augment.flip)
            with autocast(device, precision):
                loss = step(xb, y[idx], rows, attack_rng)
            opt.step()
            total += loss.detach().float() * len(idx)
        losses.append(float(total) / len(data))
        progress.step(f"epoch {epoch + 1}/{cfg.epochs}: loss {losses[-1]:.4f}")
        check_epoch(losses[-1], epoch, cfg)
    model.eval()
    return losses


def trainable(model: nn.Module) -> list[torch.nn.Parameter]:
    """The parameters that training updates (requires_grad), in a fixed order."""
    return [p for p in model.parameters() if p.requires_grad]


def gradients(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """d loss / d params (zeros for parameters the loss does not reach); the graph is kept for another call."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
