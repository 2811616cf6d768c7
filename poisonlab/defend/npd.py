"""NPD, neural polarizer defense (Zhu, Wei, Zha & Wu, "Neural Polarizer: A Lightweight and Effective Backdoor
Defense via Purifying Poisoned Features", NeurIPS 2023), as a registered repair defense.

A neural polarizer is a small linear layer inserted into the frozen backdoored model, at the input of a chosen
module (``layer``; default the last nn.Linear, i.e. on the penultimate features): a 1x1 convolution on feature
maps, a square nn.Linear on feature vectors, initialised to the identity so the polarised model starts as the
original. Only the polarizer is trained, on the defender's clean set, by the paper's bi-level scheme: for each
batch the inner step finds, per sample, a targeted perturbation delta (PGD, L-inf radius ``eps``, ``steps``
signed-gradient steps of eps / 4) that moves the input to its most likely wrong label y' (the paper's estimate of
the target class), and the outer step updates the polarizer to minimise

    w_clean * CE(f(x), y) + w_target * mean(-log(1 - p_{y'}(x + delta))) + w_robust * CE(f(x + delta), y),

keeping clean inputs right while filtering what the perturbations (the trigger's proxies) rely on. The returned
model is a copy of the original with the module at ``layer`` replaced by ``Polarized(polarizer, module)``.
Simplifications (CPU scale, documented in docs/backdoor-defenses.md): the polarizer has no batch norm (the paper's
is a 1x1 conv followed by batch norm), the three weights are 1, perturbations start at zero, y' is re-estimated
on each batch, and the default schedule is 20 epochs of SGD (lr 0.01, momentum 0.9) instead of the paper's 50+.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from poisonlab import progress
from poisonlab.defend.base import Defended, require
from poisonlab.defend.registry import DEFENSES
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.models import feature_module
from poisonlab.rng import construction_stream, generator


class Polarized(nn.Module):
    """module(polarizer(x)): the original module with a neural polarizer on its input."""

    def __init__(self, polarizer: nn.Module, module: nn.Module):
        super().__init__()
        self.polarizer = polarizer
        self.module = module

    def forward(self, x, *args, **kwargs):
        return self.module(self.polarizer(x), *args, **kwargs)


def identity_polarizer(shape: torch.Size) -> nn.Module:
    """A linear layer that is the identity at start: 1x1 Conv2d for (n, c, h, w) inputs, nn.Linear for (n, f)."""
    if len(shape) not in (2, 4):
        raise ConfigError(f"the polarizer's layer gets inputs of shape {tuple(shape)}; accepted: a module whose input"
                          f" is (n, features) or (n, channels, h, w)")
    # built on the CPU whatever the default device (moved by the caller); the layer's default init draws from a
    # forked, seeded stream (never the caller's) and is overwritten by the identity anyway
    with construction_stream(0, "npd", "polarizer"), torch.device("cpu"):
        layer = nn.Conv2d(shape[1], shape[1], 1) if len(shape) == 4 else nn.Linear(shape[1], shape[1])
        eye = torch.eye(shape[1]).view(layer.weight.shape)
    with torch.no_grad():
        layer.weight.copy_(eye)
        layer.bias.zero_()
    return layer


def insert_polarizer(model: nn.Module, x: torch.Tensor, layer: str | None) -> nn.Module:
    """A frozen copy of model with an identity polarizer on the input of the module named layer (trainable)."""
    name, module = feature_module(model, layer)
    if not name:
        raise ConfigError("layer names the whole model; accepted: the name of one of its submodules")
    shape = _input_shape(model, module, x)
    polarized = copy.deepcopy(model).requires_grad_(False).eval()
    parent_name, _, child = name.rpartition(".")
    parent = polarized.get_submodule(parent_name) if parent_name else polarized
    polarizer = identity_polarizer(shape).to(model_device(model))
    setattr(parent, child, Polarized(polarizer, parent.get_submodule(child)))
    return polarized


def _input_shape(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Size:
    """The shape of module's (unflattened) input when model runs on two rows of x."""
    shapes = []
    handle = module.register_forward_pre_hook(lambda _m, args: shapes.append(args[0].shape))
    was = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(x[:2].to(model_device(model)))
    finally:
        model.train(was)
        handle.remove()
    if not shapes:
        raise ConfigError("the polarizer's layer was not called in the forward pass; accepted: a module the model runs")
    return shapes[-1]


def most_likely_wrong(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """argmax over the classes other than y of each row of logits (the paper's estimate of the target label)."""
    return logits.scatter(1, y[:, None], float("-inf")).argmax(dim=1)


def targeted_pgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, eps: float, steps: int,
                 low: float, high: float) -> torch.Tensor:
    """delta with |delta|_inf <= eps that lowers CE(model(x + delta), target): steps signed steps of eps / 4."""
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x + delta), target)
        grad, = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta -= eps / 4 * grad.sign()
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(low, high) - x)
    return delta.detach()


def polarizer_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, target: torch.Tensor,
                   weights: tuple[float, float, float]) -> torch.Tensor:
    """w_clean CE(f(x), y) + w_target mean(-log(1 - p_target(x + delta))) + w_robust CE(f(x + delta), y)."""
    adv = model(x + delta)
    p_target = adv.softmax(dim=1).gather(1, target[:, None]).squeeze(1)
    away = -torch.log((1 - p_target).clamp_min(1e-12)).mean()
    return (weights[0] * nn.functional.cross_entropy(model(x), y) + weights[1] * away
            + weights[2] * nn.functional.cross_entropy(adv, y))


@DEFENSES.register("npd", reference="Zhu, Wei, Zha & Wu, Neural Polarizer: A Lightweight and Effective Backdoor"
                                    " Defense via Purifying Poisoned Features (NPD), NeurIPS 2023")
class NPD:
    """Insert an identity-initialised linear polarizer into the frozen model; train it so perturbed inputs stay right."""

    stage = "repair"
    requires = ("model", "clean")

    def __init__(self, *, layer: str | None = None, eps: float = 0.1, steps: int = 5, epochs: int = 20,
                 lr: float = 0.01, batch_size: int = 32, weights: tuple[float, float, float] | list = (1.0, 1.0, 1.0)):
        self.layer = layer
        self.eps = check_range("eps", eps, 0.0, None, low_open=True)
        self.steps = int(check_range("steps", steps, 1, 1000))
        self.epochs = int(check_range("epochs", epochs, 1, 10000))
        self.lr = check_range("lr", lr, 0.0, None, low_open=True)
        self.batch_size = int(check_range("batch_size", batch_size, 1, None))
        if not isinstance(weights, (list, tuple)) or len(weights) != 3:
            raise ConfigError(f"weights={weights!r} is not valid; accepted: three numbers (clean, target, robust)")
        self.weights = tuple(float(check_range("weights", w, 0.0, None)) for w in weights)

    def defend(self, *, model=None, clean=None, seed: int = 0, **_) -> Defended:
        """The original model with a trained polarizer; details: the layer it sits on."""
        require(self, model=model, clean=clean)
        polarized = insert_polarizer(model, clean.x, self.layer)
        params = [p for n, p in polarized.named_parameters() if ".polarizer." in f".{n}"]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9)
        device = model_device(model)
        x, y = clean.x.to(device), clean.y.to(device)
        low, high = float(clean.x.min()), float(clean.x.max())
        with progress.phase("polarizer"):
            for epoch in range(self.epochs):
                order = torch.randperm(len(x), generator=generator(seed, "npd", epoch), device="cpu").to(device)
                for start in range(0, len(x), self.batch_size):
                    idx = order[start:start + self.batch_size]
                    with torch.no_grad():
                        target = most_likely_wrong(polarized(x[idx]), y[idx])
                    delta = targeted_pgd(polarized, x[idx], target, self.eps, self.steps, low, high)
                    loss = polarizer_loss(polarized, x[idx], y[idx], delta, target, self.weights)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                progress.step(f"epoch {epoch + 1}/{self.epochs}: loss {float(loss.detach()):.4f}")
        polarized.requires_grad_(False)
        return Defended(polarized.eval(), details={"layer": feature_module(model, self.layer)[0]})
