"""Feature layers: the representation of any nn.Module, read as the INPUT of one named submodule.

Detectors, clean-label poisons and mitigations work on a model's penultimate features. For a
model of any shape (a ResNet, a user's class) those are defined as the input to a named module,
``feature_layer`` (a name from ``model.named_modules()``, e.g. ``fc`` or ``layer3``), read by a
forward pre-hook. The default is the last ``nn.Linear`` in ``named_modules()`` order: the classifier
head of nearly every network, whose input is the penultimate representation. For a poisonlab
``nn.Sequential`` ending in ``nn.Linear`` this gives exactly (bit for bit) what ``model[:-1]``
(everything before the head) computes.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.errors import ConfigError, did_you_mean

SHOWN = 8  # how many valid module names an error lists


def default_feature_layer(model: nn.Module) -> str:
    """The name of the last nn.Linear in model.named_modules() order (its input is the features)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError(f"model {type(model).__name__} has no nn.Linear to take features from;"
                          f" accepted: a model with an nn.Linear head, or feature_layer=<a module name>")
    return names[-1]


def feature_module(model: nn.Module, feature_layer: str | None = None) -> tuple[str, nn.Module]:
    """(name, module) whose input is the features: feature_layer, or the default_feature_layer."""
    name = default_feature_layer(model) if feature_layer is None else str(feature_layer)
    modules = dict(model.named_modules())
    if name not in modules:
        valid = [n for n in modules if n]
        shown = ", ".join(valid[-SHOWN:]) + (", ..." if len(valid) > SHOWN else "")
        raise ConfigError(f"feature_layer '{name}' is not a module of {type(model).__name__};"
                          f"{did_you_mean(name, valid)} accepted module names include: {shown}")
    return name, modules[name]


def capture_input(module: nn.Module) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    """(list that each forward through module appends its first input to, flattened per sample; the hook handle)."""
    seen: list[torch.Tensor] = []

    def hook(_module, args):
        seen.append(args[0].flatten(1))

    return seen, module.register_forward_pre_hook(hook)


def features_with_grad(model: nn.Module, x: torch.Tensor, feature_layer: str | None = None) -> torch.Tensor:
    """The features (n, f) of x in model's CURRENT mode, differentiable w.r.t. x (one forward, hook removed after)."""
    _, module = feature_module(model, feature_layer)
    seen, handle = capture_input(module)
    try:
        model(x)
    finally:
        handle.remove()
    if not seen:
        raise ConfigError(f"feature_layer module {type(module).__name__} was not called in the forward pass;"
                          f" accepted: a module the model's forward runs")
    return seen[-1]


@torch.no_grad()
def features(model: nn.Module, x: torch.Tensor, feature_layer: str | None = None,
             batch_size: int = 1024) -> torch.Tensor:
    """Features (n, f) of x: the input of feature_layer (default: the last nn.Linear), flattened per sample.

    Eval mode, no gradients, in batches of batch_size; the model's training mode is restored and
    the hook removed afterwards, also when the forward pass raises. Computed on the model's device (x moved
    there once) and returned on x's device.
    """
    feature_module(model, feature_layer)  # a bad name fails before any forward pass
    home = x.device
    first = next(iter(model.parameters()), None)
    x = x.to(first.device) if first is not None else x
    was_training = model.training
    model.eval()
    try:
        parts = [features_with_grad(model, x[i:i + batch_size], feature_layer) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts).to(home) if parts else torch.empty(0, 0, device=home)


class FeatureExtractor(nn.Module):
    """model as a module x -> features (the input of feature_layer), differentiable; shares model's parameters.

    What clean-label poisons optimise against and what head-only fine-tuning computes once; for a
    poisonlab nn.Sequential it computes exactly what ``model[:-1]`` does.
    """

    def __init__(self, model: nn.Module, feature_layer: str | None = None):
        super().__init__()
        self.model = model
        self.feature_layer = feature_module(model, feature_layer)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return features_with_grad(self.model, x, self.feature_layer)


def linear_head(model: nn.Module, feature_layer: str | None = None) -> tuple[str, nn.Linear]:
    """(name, module) of the feature layer, which must be an nn.Linear (the head to fine-tune or prune)."""
    name, module = feature_module(model, feature_layer)
    if not isinstance(module, nn.Linear):
        raise ConfigError(f"feature_layer '{name}' is a {type(module).__name__}; accepted here: the name of an nn.Linear"
                          f" (default: the last one, '{default_feature_layer(model)}')")
    return name, module
