"""MCR, mode connectivity repair (Zhao, Chen, Das, Natesan Ramamurthy & Lin, "Bridging Mode Connectivity in Loss
Landscapes and Adversarial Robustness", ICLR 2020), as a registered repair defense.

Two end models w_0 (the suspect model) and w_1 are joined by a quadratic Bezier curve (Garipov et al. 2018)

    phi_theta(t) = (1 - t)^2 w_0 + 2 t (1 - t) theta + t^2 w_1,   t in [0, 1],

whose bend theta (initialised at (w_0 + w_1) / 2) is trained on the clean set to minimise
E_{t ~ U(0, 1)} CE(phi_theta(t)); the ends stay fixed. The paper finds that models on the curve away from the ends
keep much of the clean accuracy while the backdoor, which the small clean set does not hold, fades; the defense
returns the model at ``t`` (default 0.4, inside the range where the paper's figures show the ASR gone).

The far end w_1 (``end``): "retrain" (default; the paper's main setting, two backdoored models): a second model
of the same architecture, re-initialised from a derived seed and trained on the same (poisoned) training data with
the experiment's settings, so it needs ``data``, ``build`` and ``train_cfg``; "fine_tune" (the paper's setting
with one model): a copy fine-tuned on the clean set (``finetune_epochs`` at ``finetune_lr``), cheaper but on our
small tests too close to w_0 for the curve to leave the backdoor (docs/backdoor-defenses.md).
Batch-norm running statistics are recomputed on the clean set at the returned point (as the paper's code does,
after Garipov et al.). Defaults scaled to a CPU: curve 40 epochs (paper: 100 to 600), SGD lr 0.05 momentum 0.9.
Each batch draws its own t (Garipov et al.'s sampling) from a seeded CPU generator.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.defend.base import Defended, require, trainable_copy
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.models import init_parameters
from poisonlab.rng import derive_seed, generator
from poisonlab.training import TrainConfig, train


def bezier(t: float, w0: torch.Tensor, theta: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """The quadratic Bezier point (1 - t)^2 w0 + 2 t (1 - t) theta + t^2 w1."""
    return (1 - t) ** 2 * w0 + 2 * t * (1 - t) * theta + t ** 2 * w1


def curve_point(start: dict, bend: dict, end: dict, t: float) -> dict:
    """{name: bezier(t, ...)} for every parameter name of the curve."""
    return {name: bezier(t, start[name], bend[name], end[name]) for name in start}


def train_bend(model: nn.Module, end: nn.Module, clean: Dataset, epochs: int, lr: float, batch_size: int,
               seed: int) -> dict[str, torch.Tensor]:
    """The curve's bend theta {parameter name: tensor}, trained on clean with a fresh t ~ U(0, 1) per batch."""
    template = copy.deepcopy(model).train()
    start = {k: v.detach() for k, v in model.named_parameters()}
    stop = {k: v.detach() for k, v in end.named_parameters()}
    bend = {k: ((start[k] + stop[k]) / 2).clone().requires_grad_(True) for k in start}
    buffers = dict(template.named_buffers())
    opt = torch.optim.SGD(bend.values(), lr=lr, momentum=0.9)
    device = model_device(model)
    x, y = clean.x.to(device), clean.y.to(device)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        order = torch.randperm(len(clean), generator=generator(seed, "mcr", "batches", epoch), device="cpu").to(device)
        ts = torch.rand(math.ceil(len(clean) / batch_size), generator=generator(seed, "mcr", "t", epoch), device="cpu")
        for i, start_row in enumerate(range(0, len(clean), batch_size)):
            idx = order[start_row:start_row + batch_size]
            params = curve_point(start, bend, stop, float(ts[i]))
            loss = loss_fn(functional_call(template, {**params, **buffers}, (x[idx],)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        progress.step(f"curve epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.4f}")
    return {k: v.detach() for k, v in bend.items()}


@torch.no_grad()
def refresh_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Recompute every batch-norm layer's running statistics on x (cumulative average over batches), in place."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    device = model_device(model)
    for i in range(0, len(x), batch_size):
        model(x[i:i + batch_size].to(device))
    model.train(was_training)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum


@DEFENSES.register("mcr", reference="Zhao, Chen, Das, Natesan Ramamurthy & Lin, Bridging Mode Connectivity in Loss"
                                    " Landscapes and Adversarial Robustness (MCR), ICLR 2020")
class MCR:
    """Train a Bezier curve from the suspect model to a clean fine-tuned copy; deploy the model at t on it."""

    stage = "repair"
    requires = ("model", "clean")

    ENDS = ("retrain", "fine_tune")

    def __init__(self, *, t: float = 0.4, end: str = "retrain", epochs: int = 40, lr: float = 0.05,
                 batch_size: int = 32, finetune_epochs: int = 5, finetune_lr: float = 0.01):
        self.t = check_range("t", t, 0.0, 1.0)
        if end not in self.ENDS:
            raise ConfigError(f"end={end!r} is not valid; accepted: {', '.join(self.ENDS)}")
        self.end = end
        self.requires = ("model", "clean") + (("data", "build", "train_cfg") if end == "retrain" else ())
        self.epochs = int(check_range("epochs", epochs, 0, 10000))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.batch_size = int(check_range("batch_size", batch_size, 1, None))
        self.finetune_epochs = int(check_range("finetune_epochs", finetune_epochs, 0, 10000))
        self.finetune_lr = check_range("finetune_lr", finetune_lr, 0.0, None, low_open=True)

    def end_model(self, model: nn.Module, clean: Dataset, data, build, train_cfg, seed: int) -> nn.Module:
        """The curve's far end: a second model trained on data ("retrain") or a copy fine-tuned on clean."""
        with progress.phase("end model"):
            if self.end == "fine_tune":
                end = trainable_copy(model)
                train(end, clean, TrainConfig(epochs=self.finetune_epochs, lr=self.finetune_lr,
                                              batch_size=self.batch_size), seed)
                return end
            end = build().requires_grad_(True)
            device = model_device(end)
            end = end.cpu()
            init_parameters(end, generator(seed, "mcr", "end"))  # re-drawn on the CPU from a derived seed, then moved
            end = end.to(device)
            train(end, data, train_cfg, derive_seed(seed, "mcr", "end"))
        if [k for k, _ in end.named_parameters()] != [k for k, _ in model.named_parameters()]:
            raise ConfigError("build() made a model whose parameters differ from the defended model's; accepted:"
                              " the same architecture")
        return end

    def defend(self, *, model=None, clean=None, data=None, build=None, train_cfg=None, seed: int = 0,
               **_) -> Defended:
        """The model at t on the trained curve (batch-norm statistics recomputed on the clean set)."""
        require(self, model=model, clean=clean, data=data, build=build, train_cfg=train_cfg)
        end = self.end_model(model, clean, data, build, train_cfg, seed)
        with progress.phase("curve"):
            bend = train_bend(model, end, clean, self.epochs, self.lr, self.batch_size, seed)
        point = curve_point({k: v.detach() for k, v in model.named_parameters()}, bend,
                            {k: v.detach() for k, v in end.named_parameters()}, self.t)
        out = trainable_copy(model)
        with torch.no_grad():
            for name, p in out.named_parameters():
                p.copy_(point[name])
        refresh_batch_norm(out, clean.x)
        return Defended(out.eval(), details={"t": self.t, "end": self.end})
