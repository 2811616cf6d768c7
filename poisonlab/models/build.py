"""Build a model and initialise every parameter and buffer exactly as PyTorch would, from an explicit seed.

A model is constructed on the real CPU device, so each module runs its own ``reset_parameters`` (and
its buffers get their constructor values): batch norm weight 1 / bias 0 / running_var 1, embeddings
N(0, 1), constant buffers as written. Those defaults draw from torch's global CPU stream, so the
construction runs inside ``torch.random.fork_rng`` after ``torch.manual_seed(derive_seed(seed, "init",
key, "defaults"))`` (key: the registered name). This is not global random state in the sense
poisonlab forbids: the stream is forked, seeded from our derived seed (so the model depends on
nothing but (seed, key, params), never on what ran before), and the caller's global RNG state is
restored on exit, whatever happens inside (``fork_rng(devices=[])``: the CPU stream only; the model is
built on the CPU whatever the default device).

Then every ``nn.Linear`` and ``nn.Conv2d`` is re-initialised with PyTorch's default scheme from
``generator(seed, "init", key)`` (:func:`init_parameters`), which keeps poisonlab's built-in models
bit-identical to the earlier meta-device builder. The "defaults" key keeps the forked stream distinct
from that generator, so the two never replay the same random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models.registry import MODELS
from poisonlab.registry import check_params
from poisonlab.rng import derive_seed, generator


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
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(derive_seed(seed, "init", key, "defaults"))
        model = factory(input_shape=input_shape, num_classes=num_classes, **(params or {}))
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory '{key}' returned {type(model).__name__}; accepted: a torch.nn.Module")
    init_parameters(model, generator(seed, "init", key))
    return model


def init_parameters(model: nn.Module, g: torch.Generator) -> None:
    """PyTorch's default Linear/Conv2d init (kaiming_uniform a=sqrt(5); bias U(+-1/sqrt(fan_in))) from g.

    The same distribution as ``reset_parameters`` of those layers (He et al. 2015 uniform variant, as
    torch.nn implements it), drawn from an explicit generator; other modules keep their own init.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=g)
                if module.bias is not None:
                    fan_in = module.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in)
                    nn.init.uniform_(module.bias, -bound, bound, generator=g)
