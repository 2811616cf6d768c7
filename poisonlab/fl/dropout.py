"""Dropout in federated training with masks both engines draw identically, and the model's modes.

Local training runs the model in train mode (batch norm uses batch statistics) EXCEPT its dropout modules,
which run in eval mode (identity); a forward hook on each of them multiplies its output by a mask drawn
beforehand from the client's own generator (inverted dropout: keep with probability 1 - p, scaled by
1 / (1 - p), as torch's dropout). The vectorized engine (fl/local.py) and the plain loop (fl/reference.py)
draw the masks with the same ``DropoutMasks.draw``: per client, after the batch plan's draws, in step order,
then in module order, so the two agree exactly and no mask comes from torch's global stream.

Supported: nn.Dropout (an element mask) and nn.Dropout1d/2d/3d (a channel mask, one value per sample and
channel), each called once per forward. Other random modules (AlphaDropout, FeatureAlphaDropout, RReLU) are
refused with a ConfigError; a random op inside a user's forward (e.g. F.dropout) is detected (the vectorized
engine's vmap refuses random ops; the plain loop checks torch's global stream) and refused too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from poisonlab.errors import ConfigError

ELEMENT = (nn.Dropout,)
CHANNEL = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
UNSUPPORTED_RANDOM = (nn.AlphaDropout, nn.FeatureAlphaDropout, nn.RReLU)

HIDDEN_RANDOM = ("model draws random numbers the engine cannot see (e.g. F.dropout in its forward);"
                 " accepted: nn.Dropout / nn.Dropout1d/2d/3d modules, whose masks come from the client's generator")


def dropout_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's dropout modules (named_modules order); ConfigError for a random module that is not supported."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, UNSUPPORTED_RANDOM):
            raise ConfigError(f"module '{name}' ({type(m).__name__}) is random and not supported in federated"
                              " training; accepted: nn.Dropout, nn.Dropout1d/2d/3d")
        if isinstance(m, ELEMENT + CHANNEL):
            found.append((name, m))
    return found


@dataclass(frozen=True)
class DropoutMasks:
    """The dropout modules of a model with each one's probability p and per-sample mask shape."""

    names: tuple[str, ...]
    probs: tuple[float, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module, sample_shape: tuple[int, ...]) -> DropoutMasks:
        """Probe one forward (eval mode, no grad) for each dropout module's output shape."""
        modules = dropout_modules(model)
        if not modules:
            return cls((), (), ())
        seen: dict[str, list[tuple[int, ...]]] = {name: [] for name, _ in modules}
        handles = [m.register_forward_hook(lambda _m, _i, out, n=name: seen[n].append(tuple(out.shape)))
                   for name, m in modules]
        probe = next(iter(model.parameters()), None)
        x = torch.zeros(2, *sample_shape, device=probe.device if probe is not None else None)
        try:
            with torch.no_grad(), evaluating(model):
                model(x)
        finally:
            for h in handles:
                h.remove()
        shapes = []
        for name, m in modules:
            if len(seen[name]) != 1:
                raise ConfigError(f"dropout module '{name}' runs {len(seen[name])} times per forward;"
                                  " accepted: each dropout module called exactly once")
            out = seen[name][0][1:]  # without the batch axis
            shapes.append(out if isinstance(m, ELEMENT) else out[:1] + (1,) * (len(out) - 1))
        return cls(tuple(n for n, _ in modules), tuple(float(m.p) for _, m in modules), tuple(shapes))

    def __bool__(self) -> bool:
        return bool(self.names)

    def draw(self, gen: torch.Generator, length: int) -> list[torch.Tensor]:
        """One client's masks for one step of `length` samples, in module order: (length, *shape) each,
        1 / (1 - p) where kept (probability 1 - p) and 0 where dropped."""
        out = []
        for p, shape in zip(self.probs, self.shapes):
            keep = torch.rand((length, *shape), generator=gen, device=gen.device) >= p
            out.append(keep.float() * (1.0 / (1.0 - p) if p < 1 else 0.0))
        return out


class MaskHooks:
    """Forward hooks multiplying each dropout module's output by ``masks[j]`` (None: no change).

    Set ``masks`` before each forward (inside a vmapped function, the per-client masks are batched there).
    """

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        self.masks: list[torch.Tensor] | None = None
        modules = dict(model.named_modules())
        self.handles = [modules[n].register_forward_hook(self._hook(j)) for j, n in enumerate(names)]

    def _hook(self, j: int):
        def hook(_module, _inputs, out):
            if self.masks is None:
                return None
            return out * self.masks[j].to(out.device)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def set_training_modes(model: nn.Module) -> None:
    """Local training's modes, in place: train mode (batch norm on batch statistics) with dropout modules in eval
    mode (their masks come through MaskHooks)."""
    model.train()
    for _, m in dropout_modules(model):
        m.eval()


@contextlib.contextmanager
def _modes(model: nn.Module, train: bool) -> Iterator[None]:
    """Set the modes for the block (train: set_training_modes; else eval) and restore them after."""
    before = [(m, m.training) for m in model.modules()]
    if train:
        set_training_modes(model)
    else:
        model.eval()
    try:
        yield
    finally:
        for m, flag in before:
            m.training = flag


def training(model: nn.Module) -> contextlib.AbstractContextManager:
    """set_training_modes for the block, the modes restored after."""
    return _modes(model, True)


def evaluating(model: nn.Module) -> contextlib.AbstractContextManager:
    """Evaluation's modes: eval mode everywhere (batch norm on running statistics, no dropout)."""
    return _modes(model, False)


def global_stream(device: torch.device) -> tuple:
    """The state of torch's global random streams a forward on device could draw from (CPU, and the device's)."""
    return torch.random.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def check_global_stream(before: tuple, device: torch.device) -> None:
    """ConfigError (HIDDEN_RANDOM) if torch's global streams moved since global_stream(device) gave before."""
    after = global_stream(device)
    if not torch.equal(before[0], after[0]) or (before[1] is not None and not torch.equal(before[1], after[1])):
        raise ConfigError(HIDDEN_RANDOM)
