"""Centralized training, fine-tuning, prediction and evaluation; seeded and deterministic.

Mini-batch order comes from a generator derived from the seed (and, with ``cfg.augment``, each batch's random
crop and flip from another: ``generator(seed, "augment", epoch)``), so the same model, data, config and seed
give bit-identical weights. ``train`` updates the model it is given (as
PyTorch does); ``fine_tune`` returns a fine-tuned copy and leaves the original intact.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from poisonlab import progress
from poisonlab.config.train import TrainConfig  # defined once, with the YAML's train section
from poisonlab.data.augment import augment, check_images
from poisonlab.data.dataset import Dataset
from poisonlab.divergence import check_epoch
from poisonlab.device import model_device
from poisonlab.errors import ConfigError
from poisonlab.precision import autocast
from poisonlab.metrics import accuracy, confusion_matrix, per_class_accuracy
from poisonlab.rng import generator


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate of optimizer step `step` (0-based) of `total`.

    constant: cfg.lr. cosine: cfg.lr * (1 + cos(pi * step / total)) / 2, the annealing of Loshchilov &
    Hutter 2017 (SGDR) without restarts and with minimum 0, stepped per batch: full at the first
    step, half-way at step total/2, close to 0 at the last. Ending on small steps makes the final
    model depend less on the last few batches, so paired runs differ by their data, not by noise.
    """
    if cfg.lr_schedule == "cosine":
        return cfg.lr * (1 + math.cos(math.pi * step / total)) / 2
    return cfg.lr


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train(model: nn.Module, data: Dataset, cfg: TrainConfig = TrainConfig(), seed: int = 0,
          precision: str = "fp32") -> list[float]:
    """Train model in place with cross-entropy; returns the mean loss of each epoch.

    Runs on the model's device: the data is moved there once, each epoch's order is drawn on the CPU and moved
    (the same batches on every device), and the losses are summed there (read once per epoch, no per-step
    synchronisation). precision 'bf16': the forward pass and loss under bf16 autocast (precision.py).
    With cfg.augment each batch is randomly cropped and flipped (data/augment.py) with draws from
    generator(seed, "augment", epoch) on the CPU, never from global random state.
    """
    if len(data) == 0:
        raise ConfigError(f"dataset '{data.name}' is empty; cannot train on 0 samples")
    aug = cfg.augment
    if aug is not None:
        check_images(data.input_shape, "train.augment")
    device = model_device(model)
    x, y = data.x.to(device), data.y.to(device)
    opt = _optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    model.train()
    steps, step = cfg.epochs * math.ceil(len(data) / cfg.batch_size), 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(data), generator=generator(seed, "batches", epoch), device="cpu").to(device)
        aug_rng = generator(seed, "augment", epoch) if aug is not None else None
        total = torch.zeros((), device=device)
        for start in range(0, len(data), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step, steps)
            step += 1
            opt.zero_grad(set_to_none=True)
            xb = x[idx] if aug is None else augment(x[idx], aug_rng, aug.crop_padding, aug.flip)
            with autocast(device, precision):
                loss = loss_fn(model(xb), y[idx])
            loss.backward()
            opt.step()
            total += loss.detach().float() * len(idx)
        losses.append(float(total) / len(data))
        progress.step(f"epoch {epoch + 1}/{cfg.epochs}: loss {losses[-1]:.4f}")
        check_epoch(losses[-1], epoch, cfg)
    model.eval()
    return losses


def fine_tune(model: nn.Module, data: Dataset, cfg: TrainConfig = TrainConfig(epochs=3, lr=0.01), seed: int = 0,
              precision: str = "fp32") -> nn.Module:
    """A copy of model trained further on data (the original is not modified)."""
    tuned = copy.deepcopy(model)
    train(tuned, data, cfg, seed, precision)
    return tuned


IMAGE_BATCH = 128
"""Batch size for evaluating models with convolutions: activations of 128 images stay in cache (2048 did not)."""


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Logits of model on x, in eval mode, batched; computed on the model's device (x moved there once) and
    returned on x's device.

    Models with Conv2d on images run as a channels_last copy in batches of at most IMAGE_BATCH: on CPU the
    convolutions then emit channels_last outputs, whose max-pool and ReLU are several times faster than
    on NCHW (2,000 MNIST images through `cnn`: 474 -> 87 ms; docs/benchmarks.md). The model is not changed.
    """
    if not len(x):
        return torch.empty(0, device=x.device)
    home, device = x.device, model_device(model)
    x = x.to(device)
    if x.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        batch_size = min(batch_size, IMAGE_BATCH) if device.type == "cpu" else batch_size  # a CPU cache size
        batches = (x[i:i + batch_size].contiguous(memory_format=torch.channels_last) for i in range(0, len(x), batch_size))
    else:
        batches = (x[i:i + batch_size] for i in range(0, len(x), batch_size))
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(b) for b in batches]).contiguous().to(home)
    finally:
        model.train(was_training)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Predicted labels (argmax of logits), int64."""
    return predict_logits(model, x, batch_size).argmax(dim=1)


@dataclass(frozen=True)
class Evaluation:
    """Clean evaluation of a model on a labelled dataset."""

    accuracy: float
    loss: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]


def evaluate(model: nn.Module, data: Dataset) -> Evaluation:
    """Accuracy, mean cross-entropy, per-class accuracy and confusion matrix of model on data."""
    logits = predict_logits(model, data.x)
    pred = logits.argmax(dim=1)
    loss = float(nn.functional.cross_entropy(logits, data.y)) if len(data) else float("nan")
    return Evaluation(accuracy(pred, data.y), loss,
                      per_class_accuracy(pred, data.y, data.num_classes).tolist(),
                      confusion_matrix(pred, data.y, data.num_classes).tolist())
