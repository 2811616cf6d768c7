"""Any model, one door: ``build_model(spec, input_shape, num_classes, seed, **params)``.

A model spec is what a user hands poisonlab for "the model":

- a registered name (``"cnn"``): ``poisonlab.models.make_model``;
- ``"package.module:factory"`` (YAML's ``model: {name: ..., params: {...}}``): the module is imported
  with importlib (it must be on ``sys.path``, like any Python import) and ``factory`` is called as below;
- a factory callable (a function or an ``nn.Module`` class): called as
  ``factory(input_shape, num_classes, **params)`` -- input_shape positionally as a tuple of ints
  (e.g. ``(1, 28, 28)``), num_classes as an int, the config's params as keywords -- and must return an
  ``nn.Module`` whose output on a batch ``(B, *input_shape)`` is ``(B, num_classes)`` logits;
- an ``nn.Module`` instance: a deep copy is returned on every call (a centralized run trains a clean
  and a poisoned model from it, and the caller's instance is never trained); its weights are the
  user's, so ``seed`` does not change them and ``params`` are refused.

A factory is built as a registered model is (``models.build_seeded``): its construction runs in
``rng.construction_stream`` (forked, seeded, restored), then its Linear, convolution and Embedding
layers are re-drawn from an explicit generator; the same seed gives the same model, and the caller's
global RNG state is untouched.

Importing a user's module runs its code. That module is the user's own file, named in the user's own
config, exactly like a Python import; nothing is ever unpickled, and a checkpoint's metadata never
names a module to import (``model_checkpoint.load_checkpoint`` rebuilds registered names only).
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable
from typing import Any, Union

import torch
from torch import nn

from poisonlab.errors import ConfigError

ModelSpec = Union[str, nn.Module, Callable[..., nn.Module]]

ACCEPTED = ("accepted: a registered model name (see 'poisonlab list models'), 'package.module:factory',"
            " a factory (input_shape, num_classes, **params) -> nn.Module, or an nn.Module")
CALL = "factory(input_shape, num_classes, **params) -> nn.Module"


def build_model(spec: ModelSpec, input_shape, num_classes: int, seed: int = 0, **params: Any) -> nn.Module:
    """A fresh model from spec for samples of input_shape and num_classes classes (see the module docstring)."""
    input_shape = tuple(int(s) for s in input_shape)
    if isinstance(spec, str) and not is_import_spec(spec):
        from poisonlab.models import make_model

        return make_model(spec, input_shape, num_classes, seed=seed, **params)
    if isinstance(spec, nn.Module):
        if params:
            raise ConfigError(f"model params {sorted(params)} given with an nn.Module instance; accepted: no params"
                              " (build the module with them) or a factory")
        return copy.deepcopy(spec)
    factory = load_factory(spec) if isinstance(spec, str) else spec
    if not callable(factory):
        raise ConfigError(f"model {spec!r} is a {type(spec).__name__}; {ACCEPTED}")
    model = _seeded_call(factory, spec_label(spec), input_shape, num_classes, seed, params)
    check_output(model, spec_label(spec), input_shape, num_classes)
    return model


def is_import_spec(spec: object) -> bool:
    """True for a 'package.module:factory' string (a registered name never holds ':')."""
    return isinstance(spec, str) and ":" in spec


def spec_label(spec: ModelSpec) -> str:
    """How errors and logs name a spec: the string itself, a callable's qualified name, a module's class."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, nn.Module):
        return f"{type(spec).__name__} instance"
    return getattr(spec, "__qualname__", type(spec).__name__)


def load_factory(text: str) -> Callable[..., nn.Module]:
    """Import 'package.module:factory' (the attribute may be dotted, 'module:Class.create') and return it."""
    module_name, _, attr = text.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"model '{text}' is not of the form 'package.module:factory'; {ACCEPTED}")
    module = _import(text, module_name)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model '{text}': module '{module_name}' has no attribute '{attr}';"
                              f" accepted: the name of a {CALL} defined in {module_name}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module) or not callable(obj):
        what = "an nn.Module instance" if isinstance(obj, nn.Module) else f"of type {type(obj).__name__}, not callable"
        raise ConfigError(f"model '{text}': {module_name}.{attr} is {what}; accepted: a {CALL}"
                          " (or an nn.Module class)")
    return obj


def _import(text: str, module_name: str):
    """importlib.import_module, with a one-line ConfigError naming the module when it fails."""
    try:
        return importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - the user's module: any failure to import is their config's
        first = (str(err).splitlines() or [""])[0]
        raise ConfigError(f"model '{text}': module '{module_name}' cannot be imported ({type(err).__name__}:"
                          f" {first}); accepted: a module on sys.path (PYTHONPATH) defining a {CALL}") from err


def check_factory_params(text: str, params: dict) -> None:
    """Refuse, before any data is loaded, params the imported factory cannot take (positional convention)."""
    factory = load_factory(text)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # no signature to check (a builtin); the call itself will tell
    try:
        sig.bind((1,), 2, **params)
    except TypeError as err:
        raise ConfigError(f"model '{text}' cannot be called with params {params}: {err}; accepted: {CALL}") from None


def _seeded_call(factory, label: str, input_shape, num_classes: int, seed: int, params: dict) -> nn.Module:
    """factory(input_shape, num_classes, **params) built and initialised as a registered model is
    (models.build_seeded: seeded construction, explicit-generator init of the standard layers)."""
    from poisonlab.models import build_seeded

    def positional(input_shape, num_classes, **kwargs):
        try:
            model = factory(input_shape, num_classes, **kwargs)
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's factory: reported in one line, cause chained
            first = (str(err).splitlines() or [""])[0]
            raise ConfigError(f"model '{label}' failed to build for input_shape={input_shape},"
                              f" num_classes={num_classes}, params={params} ({type(err).__name__}: {first});"
                              f" accepted: {CALL}") from err
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model '{label}' returned a {type(model).__name__}, not an nn.Module; accepted: {CALL}")
        return model

    return build_seeded(positional, input_shape, num_classes, seed, key=f"user-model:{label}", params=params)


def check_output(model: nn.Module, label: str, input_shape, num_classes: int) -> None:
    """Run a zero probe batch of 2 in eval mode (no statistics updated, no RNG drawn): logits must be (2, C)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except Exception as err:  # noqa: BLE001 - the user's forward
        first = (str(err).splitlines() or [""])[0]
        raise ConfigError(f"model '{label}' fails on a probe batch of shape {(2, *input_shape)}"
                          f" ({type(err).__name__}: {first}); accepted: a model taking (B, *input_shape)") from err
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, num_classes):
        raise ConfigError(f"model '{label}' outputs {shape} on a probe batch of shape {(2, *input_shape)};"
                          f" accepted: logits of shape (B, num_classes) = (2, {num_classes})")
