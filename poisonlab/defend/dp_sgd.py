"""DP-SGD training (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) as a training-stage
backdoor defense (Du, Jia & Song, "Robust Anomaly Detection and Backdoor Attack Detection via Differential
Privacy", ICLR 2020; Hong et al., "On the Effectiveness of Mitigating Data Poisoning Attacks with Gradient
Shaping", 2020): bounding every sample's influence on the model bounds what a few poisoned rows can teach it.

Each step: rows enter the batch independently with probability q = batch_size / n (Poisson sampling, what
the privacy analysis assumes); every row's gradient is computed separately (torch.func: vmap over grad of
a functional_call) and clipped to L2 norm ``clip`` over all parameters; the clipped gradients are summed,
Gaussian noise N(0, (noise_multiplier * clip)^2) is added to each coordinate, and the result, divided by the
expected batch size, is the gradient train_cfg's optimizer steps with. The (epsilon, delta) spent is reported
by the RDP accountant of defend/rdp_accountant.py (checked against opacus's published values).

Defaults: clip 1.0, noise_multiplier 1.0, delta 1e-5 (opacus's MNIST example); train_cfg's epochs, batch
size (as the expected batch size), optimizer and lr. Batch-norm models are refused: a row's gradient
through batch statistics depends on the other rows, so per-sample clipping bounds nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from poisonlab import progress
from poisonlab.defend.base import Defended, require
from poisonlab.defend.rdp_accountant import dp_sgd_epsilon
from poisonlab.defend.registry import DEFENSES
from poisonlab.defend.training_loop import batch_norm_layers, fresh_model, on_device, optimizer
from poisonlab.device import model_device
from poisonlab.errors import ConfigError, check_range
from poisonlab.rng import generator
from poisonlab.training import lr_at


def per_sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """{parameter name: (n, *shape) gradients of each row's cross-entropy} (torch.func vmap over grad)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = dict(model.named_buffers())

    def row_loss(p, b, xi, yi):
        return F.cross_entropy(functional_call(model, (p, b), (xi.unsqueeze(0),)), yi.unsqueeze(0))

    return vmap(grad(row_loss), in_dims=(None, None, 0, 0), randomness="different")(params, buffers, x, y)


def private_gradient(per_sample: dict[str, torch.Tensor], clip: float, noise_multiplier: float,
                     denominator: float, g: torch.Generator) -> dict[str, torch.Tensor]:
    """(sum of the per-sample gradients, each clipped to total L2 norm clip, plus N(0, (noise_multiplier *
    clip)^2) noise per coordinate drawn from g on the CPU) / denominator, per parameter."""
    first = next(iter(per_sample.values()))
    norms = torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in per_sample.values())) if len(first) else None
    out = {}
    for name, v in per_sample.items():
        total = torch.einsum("n,n...->...", (clip / (norms + 1e-12)).clamp(max=1.0), v) if len(v) else \
            torch.zeros(v.shape[1:], device=v.device, dtype=v.dtype)
        noise = torch.randn(tuple(v.shape[1:]), generator=g, device="cpu").to(v.device, v.dtype)
        out[name] = (total + noise * (noise_multiplier * clip)) / denominator
    return out


@DEFENSES.register("dp_sgd", reference="Abadi et al., Deep Learning with Differential Privacy, CCS 2016;"
                                       " Du, Jia & Song, ICLR 2020 (backdoors)")
class DPSGD:
    """Train a fresh model with per-sample clipped, noised gradients; details: the (epsilon, delta) spent."""

    stage = "training"
    requires = ("data", "build", "train_cfg")

    def __init__(self, *, clip: float = 1.0, noise_multiplier: float = 1.0, delta: float = 1e-5,
                 lr: float | None = None):
        self.clip = check_range("clip", clip, 0.0, None, low_open=True)
        self.noise_multiplier = check_range("noise_multiplier", noise_multiplier, 0.0, None)
        self.delta = check_range("delta", delta, 0.0, 1.0, low_open=True, high_open=True)
        self.lr = None if lr is None else check_range("lr", lr, 0.0, None, low_open=True)

    def defend(self, *, data=None, build=None, train_cfg=None, seed: int = 0, **_) -> Defended:
        """A fresh model trained with DP-SGD on data."""
        require(self, data=data, build=build, train_cfg=train_cfg)
        model = fresh_model(build, "dp_sgd")
        bn = batch_norm_layers(model)
        if bn:
            raise ConfigError(f"dp_sgd: the model has batch-norm layers ({', '.join(bn[:3])}), where a row's gradient"
                              f" depends on the other rows, so per-sample clipping bounds nothing; accepted: a model"
                              f" without batch norm (e.g. mlp, cnn)")
        n = len(data)
        q = min(1.0, train_cfg.batch_size / n)
        steps = train_cfg.epochs * max(1, round(n / train_cfg.batch_size))
        self.train(model, data, train_cfg, q, steps, seed)
        eps = dp_sgd_epsilon(q, self.noise_multiplier, steps, self.delta) if self.noise_multiplier > 0 else math.inf
        return Defended(model, details={"epsilon": eps if math.isfinite(eps) else None, "delta": self.delta,
                                        "sample_rate": q, "steps": steps})

    def train(self, model: nn.Module, data, cfg, q: float, steps: int, seed: int) -> None:
        """steps DP-SGD steps on model in place (Poisson batches of rate q, drawn on the CPU)."""
        device = model_device(model)
        x, y = on_device(data, device)
        opt = optimizer(model, cfg, self.lr)
        base = cfg if self.lr is None else cfg.model_copy(update={"lr": self.lr})
        pick, noise = generator(seed, "dp-sgd-sample"), generator(seed, "dp-sgd-noise")
        params = dict((k, v) for k, v in model.named_parameters() if v.requires_grad)
        expected = q * len(data)
        model.train()
        for step in range(steps):
            rows = torch.nonzero(torch.rand(len(data), generator=pick, device="cpu") < q).flatten().to(device)
            per_sample = per_sample_gradients(model, x[rows], y[rows]) if len(rows) else \
                {k: torch.zeros((0, *p.shape), device=device) for k, p in params.items()}
            grads = private_gradient(per_sample, self.clip, self.noise_multiplier, expected, noise)
            for name, p in params.items():
                p.grad = grads[name]
            for group in opt.param_groups:
                group["lr"] = lr_at(base, step, steps)
            opt.step()
            progress.step(f"DP-SGD step {step + 1}/{steps}")
        model.eval()
