"""Per-neuron masks and multiplicative perturbations on any nn.Module, for ANP and RNP.

A "neuron" is one output channel of a layer: a batch-norm channel when the model has batch norm (the
neurons ANP and RNP mask, Wu & Wang 2021; Li et al. 2023), otherwise an output unit of each nn.Conv2d
and nn.Linear except the classification head (the feature layer). A forward hook rewrites the layer's
output ``out = w-part + b`` (``b`` the layer's bias, 0 without one) as

    out' = (m + delta) * (out - b) + (1 + xi) * b          (ANP's NoisyBatchNorm2d, per channel)

with mask m (starts at 1) and the perturbations delta, xi (start at 0, used only while ``perturbed``).
For batch norm ``out - b`` is gamma * x_hat, so this is exactly ANP's (m + delta) * gamma, (1 + xi) * beta.
Pruning a neuron (``prune``) zeroes its weight row in a copy, which is the hook with m = 0 and no noise.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from poisonlab.device import model_device
from poisonlab.errors import ConfigError
from poisonlab.models import default_feature_layer

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def channels(module: nn.Module) -> int:
    """Output channels of a batch norm, conv or linear layer."""
    if isinstance(module, NORMS):
        return module.num_features
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    return module.out_features


def neuron_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose channels are neurons: the affine batch norms, else every Conv2d and Linear but the head."""
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, NORMS) and m.affine]
    if norms:
        return norms
    head = default_feature_layer(model) if any(isinstance(m, nn.Linear) for m in model.modules()) else None
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n != head]
    if not layers:
        raise ConfigError(f"model {type(model).__name__} has no batch norm, conv or hidden linear layer to mask;"
                          f" accepted: a model with at least one of them besides its head")
    return layers


class NeuronMasks:
    """Masks (m) and perturbations (delta on the weight part, xi on the bias) on model's neuron layers,
    applied by forward hooks while the object lives; ``remove()`` takes the hooks off."""

    def __init__(self, model: nn.Module):
        device = model_device(model)
        self.layers = neuron_layers(model)
        sizes = [channels(m) for _, m in self.layers]
        self.mask = [torch.ones(k, device=device, requires_grad=True) for k in sizes]
        self.delta = [torch.zeros(k, device=device, requires_grad=True) for k in sizes]
        self.xi = [torch.zeros(k, device=device, requires_grad=True) for k in sizes]
        self.perturbed = False
        self._handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(self.layers)]

    def _hook(self, i: int):
        def hook(module, _args, out):
            shape = (1, -1) + (1,) * (out.dim() - 2)
            bias = module.bias.view(shape) if getattr(module, "bias", None) is not None else torch.zeros((), device=out.device)
            if self.perturbed:
                weight_coeff, bias_coeff = self.mask[i] + self.delta[i], 1.0 + self.xi[i]
                return weight_coeff.view(shape) * (out - bias) + bias_coeff.view(shape) * bias
            return self.mask[i].view(shape) * (out - bias) + bias
        return hook

    def noise(self) -> list[torch.Tensor]:
        """The perturbation tensors (delta then xi per layer)."""
        return self.delta + self.xi

    def values(self) -> torch.Tensor:
        """All mask values, layer after layer (detached)."""
        return torch.cat([m.detach() for m in self.mask])

    def clip_mask(self) -> None:
        """Project the masks onto [0, 1]."""
        with torch.no_grad():
            for m in self.mask:
                m.clamp_(0.0, 1.0)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def prune(model: nn.Module, layers: list[tuple[str, nn.Module]], pruned: torch.Tensor) -> nn.Module:
    """A copy of model with the neurons flagged in pruned (a bool vector over layers' channels, in order)
    removed: their weight rows set to 0, so each outputs its bias only (ANP's and RNP's pruning)."""
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    start = 0
    with torch.no_grad():
        for name, layer in layers:
            k = channels(layer)
            rows = pruned[start:start + k].to(modules[name].weight.device)
            modules[name].weight[rows] = 0.0
            start += k
    return out
