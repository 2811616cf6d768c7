"""What the training-stage defenses share: a fresh model from ``build()``, seeded mini-batches, the optimizer.

A training-stage defense (defend/base.py) trains its own model on the possibly poisoned data, with the
experiment's TrainConfig as the base budget; each one changes what a step computes (a loss, a gradient, the
inputs) but they all walk the data the way ``poisonlab.training.train`` does: one seeded permutation per epoch,
drawn on the CPU and moved to the model's device, the learning rate set per step by ``training.lr_at``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

from poisonlab import progress
from poisonlab.config.train import TrainConfig
from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.rng import generator
from poisonlab.training import _optimizer, lr_at


def fresh_model(build: Callable[[], nn.Module], who: str) -> nn.Module:
    """A copy of build()'s model, trainable and in train mode (a ConfigError when build does not return an
    nn.Module). Copied, so a factory that hands out a module the caller keeps never sees it trained."""
    model = build()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"defense '{who}': build() returned {type(model).__name__}; accepted: an nn.Module factory")
    return copy.deepcopy(model).requires_grad_(True).train()


def optimizer(model: nn.Module, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer train_cfg names (SGD with its momentum, or Adam), at lr when given."""
    return _optimizer(model, cfg if lr is None else cfg.model_copy(update={"lr": float(lr)}))


def batch_norm_layers(model: nn.Module) -> list[str]:
    """Names of the model's batch-norm layers (found by type)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def epochs(opt: torch.optim.Optimizer, cfg: TrainConfig, n: int, count: int, seed: int, *keys: object,
           device: torch.device, lr: float | None = None, what: str = "epoch") -> Iterator[tuple[int, torch.Tensor]]:
    """(epoch, row indices) for every mini-batch of ``count`` epochs over n rows, in the order of
    generator(seed, *keys, epoch) (drawn on the CPU, moved to device); before each batch the optimizer's lr
    is set by cfg's schedule (lr_at) from cfg.lr, or from lr when given. A progress line per epoch."""
    batch = cfg.batch_size
    per_epoch = -(-n // batch)
    total, step = max(1, count * per_epoch), 0
    base = cfg if lr is None else cfg.model_copy(update={"lr": float(lr)})
    for epoch in range(count):
        order = torch.randperm(n, generator=generator(seed, *keys, epoch), device="cpu").to(device)
        for start in range(0, n, batch):
            for group in opt.param_groups:
                group["lr"] = lr_at(base, step, total)
            step += 1
            yield epoch, order[start:start + batch]
        progress.step(f"{what} {epoch + 1}/{count}")


def on_device(data: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of data on device (moved once)."""
    return data.x.to(device), data.y.to(device)
