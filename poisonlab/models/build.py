"""Build a model and initialise every parameter and buffer exactly as PyTorch would, from an explicit seed.

A model is constructed on the real CPU device, so each module runs its own ``reset_parameters`` and its
buffers get their constructor values (batch norm weight 1 / bias 0 / running_var 1, constant buffers as
written). Construction is third-party code that draws from torch's default stream, so it runs in
``rng.construction_stream(seed, "init", key, "defaults")`` (forked, seeded, restored: the model depends on
nothing but (seed, key, params), and the caller's RNG state is untouched). Then every layer type with a
random default (Linear, convolutions, Embedding) is re-drawn from ``generator(seed, "init", key)``
(:func:`init_parameters`), so those values come from an explicit generator; for poisonlab's built-in
models this is bit-identical to the earlier meta-device builder.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models.registry import MODELS
from poisonlab.registry import check_params
from poisonlab.rng import construction_stream, generator


def make_model(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0, **params) -> nn.Module:
    """Build the registered model name for samples of input_shape, initialised from seed."""
    factory = MODELS.entry(name).factory
    check_params(f"model '{name}'", factory, {"input_shape": None, "num_classes": None, **params})
    return build_seeded(factory, input_shape, num_classes, seed, key=name, params=params)


def build_seeded(factory: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int, seed: int = 0,
                *, key: str | None = None, params: dict | None = None) -> nn.Module:
    """factory(input_shape=..., num_classes=..., **params) built on the CPU and initialised from (seed, key).

    key names the random streams (default: the factory's ``module:qualname``); make_model passes the
    registered name, so a model's initialisation depends only on (seed, name, params).
    """
    input_shape = tuple(int(s) for s in input_shape)
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes} is too small; accepted: 2 or more")
    if key is None:
        key = f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', '?')}"
    with construction_stream(seed, "init", key, "defaults"), torch.device("cpu"):
        model = factory(input_shape=input_shape, num_classes=num_classes, **(params or {}))
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory '{key}' returned {type(model).__name__}; accepted: a torch.nn.Module")
    init_parameters(model, generator(seed, "init", key))
    return model


KAIMING_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d)
"""Layers whose default init is kaiming_uniform(a=sqrt(5)) on the weight and U(+-1/sqrt(fan_in)) on the bias."""


def init_parameters(model: nn.Module, g: torch.Generator) -> None:
    """PyTorch's default init of every layer type with a random default, drawn from the explicit generator g.

    Linear and (transposed) convolutions: kaiming_uniform a=sqrt(5), bias U(+-1/sqrt(fan_in)) (He et al. 2015
    uniform variant, as torch.nn implements it; fan_in = weight[0].numel(), torch's own fan for these
    shapes); Embedding: N(0, 1) with the padding row zeroed. Deterministic defaults (norm layers, constant
    buffers) keep what construction gave them.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, KAIMING_LAYERS):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=g)
                if module.bias is not None:
                    fan_in = module.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in)
                    nn.init.uniform_(module.bias, -bound, bound, generator=g)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, generator=g)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].fill_(0)
