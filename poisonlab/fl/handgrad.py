"""Hand-written forward and backward of a fast Sequential (Conv2d, MaxPool2d, ReLU, Flatten, Linear) for
stacked clients: the weighted cross-entropy gradients of a clients at once, without autograd.

Why not autograd: on this CPU a CNN step of 4 clients x 20 samples spends about as long between the
kernels as in conv2 itself. Here each tensor keeps the layout the next kernel wants (images grouped as
(B, a*c, h, w) in channels_last, features as (a, B, f)), the gradient of the flattened features is
handed back to the convolutional part in channels_last (autograd hands a contiguous NCHW gradient to the
ReLU's backward, whose mixed-layout kernel is 10x slower), ReLUs run in place on fresh outputs, and the
first convolution skips its input gradient. Measured in docs/benchmarks.md ("FL engine").

Each backward is the textbook one of its layer (the same aten kernels autograd calls):
conv -> ``aten.convolution_backward``; max-pool -> ``aten.max_pool2d_with_indices_backward`` with the
forward's argmax indices; ReLU -> dz = dh * (out > 0); Linear z = h W^T + b -> dW = dz^T h, db = sum dz,
dh = dz W; the loss sum_i w_i CE(z_i, y_i) -> dz = w * (softmax(z) - onehot(y)).
tests/test_fl_local.py checks the result against the plain per-client loop (autograd, torch.optim.SGD).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

aten = torch.ops.aten
CL = torch.channels_last


@dataclass(frozen=True)
class Layer:
    """One layer of the compiled Sequential: kind in conv/pool/relu/flatten/linear and its settings."""

    kind: str
    bias: bool = False
    args: tuple = ()  # conv: (stride, padding, dilation); pool: (kernel, stride, padding, dilation, ceil_mode)
    needs_dx: bool = True  # False when no layer before it has parameters: its input gradient is never used


def compile_layers(model: nn.Sequential) -> list[Layer]:
    """The model's layers as Layer records, in pool_before_relu's order."""
    out: list[Layer] = []
    for m in pool_before_relu(list(model)):
        if isinstance(m, nn.Conv2d):
            out.append(Layer("conv", m.bias is not None, (list(m.stride), list(m.padding), list(m.dilation))))
        elif isinstance(m, nn.Linear):
            out.append(Layer("linear", m.bias is not None))
        elif isinstance(m, nn.MaxPool2d):
            stride = m.stride if m.stride is not None else m.kernel_size
            args = (_pair(m.kernel_size), _pair(stride), _pair(m.padding), _pair(m.dilation), bool(m.ceil_mode))
            out.append(Layer("pool", args=tuple(list(v) if isinstance(v, tuple) else v for v in args)))
        elif isinstance(m, nn.ReLU):
            out.append(Layer("relu"))
        else:
            out.append(Layer("flatten"))
    first = next((i for i, layer in enumerate(out) if layer.kind in ("conv", "linear")), len(out))
    return [dataclasses.replace(layer, needs_dx=i > first) for i, layer in enumerate(out)]


def pool_before_relu(layers: list[nn.Module]) -> list[nn.Module]:
    """Swap ReLU -> MaxPool2d into MaxPool2d -> ReLU: equal outputs (max commutes with the monotone ReLU),
    and the ReLU and its backward then touch a quarter of the activations."""
    out = list(layers)
    for i in range(len(out) - 1):
        if isinstance(out[i], nn.ReLU) and isinstance(out[i + 1], nn.MaxPool2d):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def grouped_images(x: torch.Tensor) -> torch.Tensor:
    """Images of a clients (a, B, c, h, w) as one grouped batch (B, a*c, h, w) in channels_last, where a grouped
    convolution and max-pool run 2-3x faster than in NCHW on CPU."""
    a, B = x.shape[:2]
    return x.transpose(0, 1).reshape(B, a * x.shape[2], *x.shape[3:]).contiguous(memory_format=CL)


def stacked_grads(layers: list[Layer], params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                  w: torch.Tensor) -> list[torch.Tensor]:
    """Gradients (each (a, *shape), params order) of sum over clients and samples of w * CE(logits, y).

    params: a clients' stacked parameters; x (a, B, c, h, w) images or (a, B, f) features; y (a, B)
    labels; w (a, B) loss weights (1/len(batch) for real samples, 0 for padding).
    """
    with torch.no_grad():
        tape, z = _forward(layers, params, x)
        g = torch.exp(z - z.amax(dim=2, keepdim=True))  # softmax written out: faster than torch.softmax
        g *= w.unsqueeze(2) / g.sum(dim=2, keepdim=True)  # over ~10 classes on CPU
        g.scatter_add_(2, y.unsqueeze(2), -w.unsqueeze(2))
        return _backward(tape, g)


def _forward(layers: list[Layer], params: list[torch.Tensor], x: torch.Tensor) -> tuple[list, torch.Tensor]:
    """Logits (a, B, C) and the tape of what each layer's backward needs."""
    a, B = x.shape[:2]
    it = iter(params)
    h = grouped_images(x) if x.dim() == 5 else x
    fresh = False  # True when h is this forward's own output, so a ReLU may overwrite it
    tape: list[tuple] = []
    for layer in layers:
        if layer.kind == "conv":
            W, b = next(it), (next(it) if layer.bias else None)
            W_all = W.reshape(a * W.shape[1], *W.shape[2:])
            tape.append(("conv", h, W_all, layer, layer.needs_dx, a))
            h = F.conv2d(h, W_all, b.reshape(-1) if b is not None else None, *layer.args, a)
        elif layer.kind == "pool":
            out, idx = aten.max_pool2d_with_indices(h, *layer.args)
            tape.append(("pool", h, idx, layer))
            h = out
        elif layer.kind == "relu":
            h = torch.relu_(h) if fresh else torch.relu(h)
            tape.append(("relu", h))
        elif layer.kind == "flatten":
            tape.append(("flatten", h.shape, h.dim() == 4))
            if h.dim() == 4:  # grouped (B, a*c, h, w) -> (a, B, c*h*w), one copy
                h = h.unflatten(1, (a, -1)).transpose(0, 1).reshape(a, B, -1)
            else:
                h = h.reshape(a, B, -1)
        else:
            W, b = next(it), (next(it) if layer.bias else None)
            tape.append(("linear", h, W, layer.bias, layer.needs_dx))
            h = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2)) if b is not None else torch.bmm(h, W.transpose(1, 2))
        fresh = layer.kind != "flatten" or tape[-1][2]  # a grouped flatten copies; otherwise it is a view
    return tape, h


def _backward(tape: list[tuple], g: torch.Tensor) -> list[torch.Tensor]:
    """Walk the tape backwards from dL/dlogits; returns the parameter gradients in forward order."""
    grads: list[torch.Tensor] = []  # collected in reverse: (bias, weight) pairs appended as (b, W)
    for entry in reversed(tape):
        if g is None:  # below the first layer with parameters: nothing left to differentiate
            break
        kind = entry[0]
        if kind == "linear":
            _, h, W, bias, needs_dx = entry
            if bias:
                grads.append(g.sum(dim=1))
            grads.append(torch.bmm(g.transpose(1, 2), h))
            g = torch.bmm(g, W) if needs_dx else None
        elif kind == "relu":
            g = aten.threshold_backward(g, entry[1], 0)
        elif kind == "flatten":
            _, shape, grouped = entry
            if grouped:  # (a, B, c*h*w) -> grouped (B, a*c, h, w) in channels_last, as the ReLU output is
                a, B = g.shape[:2]
                out = torch.empty(shape, memory_format=CL)
                out.unflatten(1, (a, -1)).copy_(g.reshape(a, B, -1, *shape[2:]).transpose(0, 1))
                g = out
            else:
                g = g.reshape(shape)
        elif kind == "pool":
            _, h, idx, layer = entry
            g = aten.max_pool2d_with_indices_backward(g, h, *layer.args, idx)
        else:
            _, h, W_all, layer, needs_dx, a = entry
            bias_sizes = [W_all.shape[0]] if layer.bias else None
            g_in, gW, gb = aten.convolution_backward(g, h, W_all, bias_sizes, *layer.args, False, [0, 0], a,
                                                     [needs_dx, True, layer.bias])
            if layer.bias:
                grads.append(gb.reshape(a, -1))
            grads.append(gW.reshape(a, -1, *gW.shape[1:]))
            g = g_in
    return grads[::-1]
