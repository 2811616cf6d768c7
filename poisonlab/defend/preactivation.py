"""Batch-norm pre-activations: what BNP and EP (Zheng et al., NeurIPS 2022) read, and how they prune.

Zheng, Tang, Li & Liu, "Pre-activation Distributions Expose Backdoor Neurons" (NeurIPS 2022) read each
channel's pre-activation as the INPUT of its batch-norm layer (found by type, so any nn.Module with
BatchNorm1d/2d/3d works) and prune a channel by zeroing that batch-norm layer's scale (gamma) for it,
so the channel's output becomes its constant shift (beta), exactly as their code does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from poisonlab.errors import ConfigError


def batch_norm_layers(model: nn.Module) -> dict[str, _BatchNorm]:
    """{name: module} of every batch-norm layer of model (by type); ConfigError when there is none or one has no scale."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
    if not layers:
        raise ConfigError(f"model {type(model).__name__} has no batch-norm layer; accepted: a model with"
                          f" BatchNorm1d/2d/3d layers (e.g. resnet20, vgg11_bn)")
    for name, m in layers.items():
        if m.weight is None:
            raise ConfigError(f"batch-norm layer '{name}' has no affine scale to prune; accepted: affine=True")
    return layers


def per_channel(x: torch.Tensor) -> torch.Tensor:
    """A batch-norm input (n, c, ...) as (n, c, positions): every value of each channel per sample."""
    return x.reshape(x.shape[0], x.shape[1], -1)


@torch.no_grad()
def read_inputs(model: nn.Module, x: torch.Tensor, reduce: Callable[[torch.Tensor], object],
                batch_size: int = 256) -> dict[str, list]:
    """{layer name: [reduce(its input) for each batch]} over x, in eval mode (the model's mode restored after).

    The forward runs on the model's device; hooks are removed also when the forward raises."""
    layers = batch_norm_layers(model)
    seen: dict[str, list] = {name: [] for name in layers}
    handles = [m.register_forward_pre_hook(lambda _m, args, name=name: seen[name].append(reduce(args[0])))
               for name, m in layers.items()]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size].to(device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return seen


def threshold_above(score: torch.Tensor, u: float) -> torch.Tensor:
    """Channels whose score exceeds mean + u * std over the layer's channels (the papers' rule)."""
    return score > score.mean() + u * score.std()


def prune_channels(model: nn.Module, chosen: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of model with each chosen[layer] (a boolean mask over its channels) pruned: the scale set to 0."""
    pruned = copy.deepcopy(model)
    layers = batch_norm_layers(pruned)
    with torch.no_grad():
        for name, mask in chosen.items():
            layers[name].weight[mask.to(layers[name].weight.device)] = 0.0
    return pruned
