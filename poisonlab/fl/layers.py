"""The layer ops of local training: one small class per supported nn layer, owning its stacked forward and its
hand-written backward for a clients at once (the vocabulary that fl/program.py compiles a model into).

Why hand-written: on this CPU a CNN step of 4 clients x 20 samples spends about as long between the
kernels as in conv2 itself, and a small MLP step is a few matrix products. Each op keeps its tensors in
the layout its next kernel wants and calls the same aten kernels autograd would (measured in
docs/benchmarks.md, "FL engine"):
- Linear z = h W^T + b as one ``baddbmm`` over clients -> dW = dz^T h, db = sum dz, dh = dz W; in the MLP's
  transposed layout z^T = W h^T + b, which runs 2.3x faster than h W^T for the narrow last layer on CPU
  (measured: 17 vs 39 us for 20 clients, B=32, 64->10);
- Conv2d as ONE grouped convolution: input (B, a*c, h, w) in channels_last (2-3x faster than NCHW for a grouped
  convolution and max-pool on CPU), weights (a*c_out, c_in, kh, kw), groups=a -> ``aten.convolution_backward``;
- MaxPool2d -> ``aten.max_pool2d_with_indices_backward`` with the forward's argmax indices;
- ReLU dz = dh * (out > 0) (``threshold_backward``), in place on a fresh output; Tanh dz = dh * (1 - out^2);
- Flatten hands the gradient back to the convolutional part in channels_last (autograd hands a contiguous
  NCHW gradient to the ReLU's backward, whose mixed-layout kernel is 10x slower).

The activation between two ops is in one of four layouts (``Pass.layout``):
SHARED (B, *sample), one input for every client (evaluation of many models on the same data);
ROWS (a, B, f) features; COLUMNS (a, f, B) features, the MLP program's transposed layout; GROUPED (B, a*c, h, w).

Adding a layer type: one class here with ``of`` (the module's settings, or None when outside what the op
supports), ``forward`` and, for training, ``backward``, decorated with ``@register(nn.TheModule)``.
tests/test_fl_program.py checks the ops against autograd, tests/test_fl_local.py against the plain
per-client loop.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from poisonlab.errors import ConfigError

aten = torch.ops.aten
CL = torch.channels_last

SHARED, ROWS, COLUMNS, GROUPED = "shared", "rows", "columns", "grouped"


class Pass:
    """One forward pass's state, shared by its ops: k stacked clients, the activation's layout, whether the
    activation is fresh (made by this pass and held by no tape entry, so an op may overwrite it), and the tape
    (None: evaluation, no backward) on which each op leaves (op, what its backward needs)."""

    __slots__ = ("k", "layout", "fresh", "tape")

    def __init__(self, k: int, layout: str, tape: list | None = None) -> None:
        self.k, self.layout, self.fresh, self.tape = k, layout, False, tape


@dataclass(frozen=True)
class LayerOp(abc.ABC):
    """One layer of a compiled program.

    forward(h, params, run) -> the next activation (its layout and freshness set on run; with a tape, appends
    (self, saved)); backward(g, saved) -> (gradient of the input or None when needs_dx is False, the gradients
    of this op's parameters in parameter order). needs_dx is False when no earlier op has parameters (set by
    the compiler); columns says the op also runs in the MLP program's transposed COLUMNS layout.
    """

    needs_dx: bool = True
    columns: ClassVar[bool] = False

    @property
    def n_params(self) -> int:
        """How many parameter tensors the op takes (named_parameters order)."""
        return 0

    @abc.abstractmethod
    def forward(self, h: torch.Tensor, params: Sequence[torch.Tensor], run: Pass) -> torch.Tensor:
        """The next activation for all clients (see the class docstring)."""

    @abc.abstractmethod
    def backward(self, g: torch.Tensor, saved) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...]]:
        """(input gradient or None, parameter gradients) from the output gradient and what forward saved."""


OPS: dict[type[nn.Module], Callable[[nn.Module], LayerOp | None]] = {}
"""nn module type -> the op for one such module (None when its settings are outside the op)."""


def register(module_type: type[nn.Module]):
    """Class decorator: the op compiles modules of module_type (and its subclasses) through its ``of``."""
    def add(cls):
        OPS[module_type] = cls.of
        return cls
    return add


def op_for(module: nn.Module) -> LayerOp | None:
    """The op for module (looked up along its class hierarchy, as isinstance does), or None when unsupported."""
    for cls in type(module).__mro__:
        if cls in OPS:
            return OPS[cls](module)
    return None


def _layout_error(op: LayerOp, run: Pass) -> ConfigError:
    return ConfigError(f"{type(op).__name__} cannot follow a {run.layout} activation; accepted: the layer order of"
                       " poisonlab models (Conv2d/MaxPool2d on images, Flatten, then Linear)")


@register(nn.Linear)
@dataclass(frozen=True)
class Linear(LayerOp):
    """nn.Linear: one baddbmm over the clients (ROWS z = h W^T + b, COLUMNS z^T = W h^T + b); SHARED inputs
    go through one matrix product with all clients' weights side by side, (B, f) @ (f, k*out)."""

    bias: bool = True
    out_features: int = 0
    columns: ClassVar[bool] = True

    @classmethod
    def of(cls, m: nn.Linear) -> Linear:
        return cls(bias=m.bias is not None, out_features=m.out_features)

    @property
    def n_params(self) -> int:
        return 2 if self.bias else 1

    def forward(self, h, params, run):
        W, b = params[0], (params[1] if self.bias else None)
        layout = run.layout
        if run.tape is not None:
            run.tape.append((self, (h, W, layout)))
        if layout == COLUMNS:
            h = torch.baddbmm(b.unsqueeze(2), W, h) if b is not None else torch.bmm(W, h)
        elif layout == ROWS:
            Wt = W.transpose(1, 2)
            h = torch.baddbmm(b.unsqueeze(1), h, Wt) if b is not None else torch.bmm(h, Wt)
        elif layout == SHARED:  # (B, f) @ (f, k*out) -> (k, B, out)
            out = h @ W.reshape(-1, W.shape[-1]).T
            h = out.reshape(h.shape[0], run.k, -1).transpose(0, 1)
            h = h + b.unsqueeze(1) if b is not None else h
            run.layout = ROWS
        else:
            raise _layout_error(self, run)
        run.fresh = True
        return h

    def backward(self, g, saved):
        h, W, layout = saved
        if layout == COLUMNS:
            gW = torch.bmm(g, h.transpose(1, 2))
            gb = g.sum(dim=2) if self.bias else None
            dx = torch.bmm(W.transpose(1, 2), g) if self.needs_dx else None
        else:
            gW = torch.bmm(g.transpose(1, 2), h)
            gb = g.sum(dim=1) if self.bias else None
            dx = torch.bmm(g, W) if self.needs_dx else None
        return dx, ((gW, gb) if self.bias else (gW,))


@register(nn.Conv2d)
@dataclass(frozen=True)
class Conv2d(LayerOp):
    """nn.Conv2d (groups=1, zero padding given as numbers): ONE grouped convolution of all clients, weights
    (k*c_out, c_in, kh, kw) with groups=k; a SHARED input needs no groups (every filter sees it)."""

    bias: bool = True
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @classmethod
    def of(cls, m: nn.Conv2d) -> Conv2d | None:
        if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
            return None
        return cls(bias=m.bias is not None, stride=tuple(m.stride), padding=tuple(m.padding),
                   dilation=tuple(m.dilation))

    @property
    def n_params(self) -> int:
        return 2 if self.bias else 1

    def forward(self, h, params, run):
        if run.layout not in (GROUPED, SHARED):
            raise _layout_error(self, run)
        W, b = params[0], (params[1] if self.bias else None)
        k = run.k
        W_all = W.reshape(k * W.shape[1], *W.shape[2:])
        groups = 1 if run.layout == SHARED else k
        if run.tape is not None:
            run.tape.append((self, (h, W_all, groups, k)))
        b_all = b.reshape(-1) if b is not None else None
        h = F.conv2d(h, W_all, b_all, self.stride, self.padding, self.dilation, groups)
        run.layout, run.fresh = GROUPED, True
        return h

    def backward(self, g, saved):
        h, W_all, groups, k = saved
        bias_sizes = [W_all.shape[0]] if self.bias else None
        g_in, gW, gb = aten.convolution_backward(g, h, W_all, bias_sizes, self.stride, self.padding, self.dilation,
                                                 False, [0, 0], groups, [self.needs_dx, True, self.bias])
        gW = gW.reshape(k, -1, *gW.shape[1:])
        return g_in, ((gW, gb.reshape(k, -1)) if self.bias else (gW,))


@register(nn.MaxPool2d)
@dataclass(frozen=True)
class MaxPool2d(LayerOp):
    """nn.MaxPool2d (without return_indices) on images, per channel, so grouped clients need nothing special;
    training keeps the argmax indices for the backward."""

    args: tuple = ()  # (kernel, stride, padding, dilation, ceil_mode)

    @classmethod
    def of(cls, m: nn.MaxPool2d) -> MaxPool2d | None:
        if m.return_indices:
            return None
        stride = m.stride if m.stride is not None else m.kernel_size
        return cls(args=(_pair(m.kernel_size), _pair(stride), _pair(m.padding), _pair(m.dilation), bool(m.ceil_mode)))

    def forward(self, h, params, run):
        if run.tape is None:
            out = F.max_pool2d(h, *self.args)
        else:
            out, idx = aten.max_pool2d_with_indices(h, *self.args)
            run.tape.append((self, (h, idx)))
        run.fresh = True
        return out

    def backward(self, g, saved):
        h, idx = saved
        return aten.max_pool2d_with_indices_backward(g, h, *self.args, idx), ()


@dataclass(frozen=True)
class Activation(LayerOp):
    """An elementwise activation whose backward reads only its output: applied in place on a fresh
    activation (out of place otherwise), the output kept on the tape. A subclass names its kernels."""

    columns: ClassVar[bool] = True
    inplace: ClassVar[Callable[[torch.Tensor], torch.Tensor]]
    outofplace: ClassVar[Callable[[torch.Tensor], torch.Tensor]]

    @classmethod
    def of(cls, m: nn.Module) -> Activation:
        return cls()

    def forward(self, h, params, run):
        out = type(self).inplace(h) if run.fresh else type(self).outofplace(h)
        if run.tape is not None:
            run.tape.append((self, out))
        run.fresh = False  # the tape holds it
        return out


@register(nn.ReLU)
@dataclass(frozen=True)
class ReLU(Activation):
    """nn.ReLU; the backward masks by the output: dz = dh where the output was > 0."""

    inplace = staticmethod(torch.relu_)
    outofplace = staticmethod(torch.relu)

    def backward(self, g, out):
        return aten.threshold_backward(g, out, 0), ()


@register(nn.Tanh)
@dataclass(frozen=True)
class Tanh(Activation):
    """nn.Tanh; the backward reads the output: dz = dh * (1 - out^2)."""

    inplace = staticmethod(torch.tanh_)
    outofplace = staticmethod(torch.tanh)

    def backward(self, g, out):
        return aten.tanh_backward(g, out), ()


@register(nn.Flatten)
@dataclass(frozen=True)
class Flatten(LayerOp):
    """nn.Flatten(1, -1): grouped images (B, k*c, h, w) -> (k, B, c*h*w) features; a no-op in COLUMNS, whose
    inputs are flattened when the batch is gathered."""

    @classmethod
    def of(cls, m: nn.Flatten) -> Flatten | None:
        return cls() if (m.start_dim, m.end_dim) == (1, -1) else None

    def forward(self, h, params, run):
        layout = run.layout
        if layout == GROUPED:
            B, k = h.shape[0], run.k
            if run.tape is None:  # evaluation reads it once: a view where the images are NCHW
                h = h.reshape(B, k, -1).transpose(0, 1)
                run.fresh = False
            else:  # one copy to (k, B, f), which the Linear's forward and backward both read
                run.tape.append((self, (h.shape, True)))
                h = h.unflatten(1, (k, -1)).transpose(0, 1).reshape(k, B, -1)
                run.fresh = True
            run.layout = ROWS
        elif layout == ROWS:
            if run.tape is not None:
                run.tape.append((self, (h.shape, False)))
            h = h.reshape(h.shape[0], h.shape[1], -1)
            run.fresh = False
        elif layout == SHARED:
            h = h.reshape(h.shape[0], -1)
            run.fresh = False
        return h

    def backward(self, g, saved):
        shape, grouped = saved
        if not grouped:
            return g.reshape(shape), ()
        a, B = g.shape[:2]  # (a, B, c*h*w) -> grouped (B, a*c, h, w) in channels_last, as the ReLU output is
        out = torch.empty(shape, memory_format=CL, device=g.device)
        out.unflatten(1, (a, -1)).copy_(g.reshape(a, B, -1, *shape[2:]).transpose(0, 1))
        return out, ()


def grouped_images(x: torch.Tensor) -> torch.Tensor:
    """Images of a clients (a, B, c, h, w) as one grouped batch (B, a*c, h, w) in channels_last, where a grouped
    convolution and max-pool run 2-3x faster than in NCHW on CPU."""
    a, B = x.shape[:2]
    return x.transpose(0, 1).reshape(B, a * x.shape[2], *x.shape[3:]).contiguous(memory_format=CL)
