"""A model's buffers in federated training: read, stacked per client, loaded back, and averaged by the server.

The global model is its flat parameters (d,) plus its buffers (batch norm's running_mean / running_var /
num_batches_tracked, constant buffers), a dict name -> tensor in ``named_buffers`` order. During local
training every client carries its own copy, stacked as (k, *shape) per buffer, so batch norm's in-place
running-statistic updates land per client. The update matrix (k, d) stays parameters only; the clients'
buffers travel beside it, and the server sets the new global buffers to their weighted mean
(``average``: client weights = local sample counts, as FedAvg of McMahan et al. 2017 does for parameters).
"""

from __future__ import annotations

import torch
from torch import nn

Buffers = dict[str, torch.Tensor]


def model_buffers(model: nn.Module) -> Buffers:
    """The model's buffers as detached copies, name -> tensor (named_buffers order)."""
    return {name: b.detach().clone() for name, b in model.named_buffers()}


def load_buffers(model: nn.Module, buffers: Buffers) -> None:
    """Copy buffers into the model's buffers of the same names (in place)."""
    own = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in buffers.items():
            own[name].copy_(value)


def stack(buffers: Buffers, k: int) -> Buffers:
    """Each buffer repeated for k clients: (k, *shape), contiguous, independent of the input."""
    return {name: b.unsqueeze(0).repeat(k, *([1] * b.dim())) for name, b in buffers.items()}


def rows(stacked: Buffers, index) -> Buffers:
    """The clients index (a slice, a list or a tensor of rows) of stacked buffers."""
    return {name: b[index] for name, b in stacked.items()}


def concat(parts: list[Buffers], template: Buffers) -> Buffers:
    """Stacked buffers of several groups of clients joined along the client axis (template: the names)."""
    return {name: torch.cat([p[name] for p in parts]) for name in template}


def average(stacked: Buffers, weights: torch.Tensor, global_buffers: Buffers) -> Buffers:
    """The new global buffers: the weighted mean over clients of each stacked (k, *shape) buffer.

    Written as global + sum_i w_i (b_i - global) / sum_i w_i, equal to the weighted mean sum_i w_i b_i / sum_i w_i,
    so a buffer no client changed (a constant buffer) stays bit-identical. Floating buffers (running mean and
    variance) get exactly that; integer buffers (num_batches_tracked) get it rounded to the nearest integer, the
    global count plus the clients' mean number of batches this round. With no clients, zero total weight, or a
    non-finite result, the global buffers are kept (a global model is never non-finite).
    """
    if not stacked:
        return dict(global_buffers)
    w = weights.detach().to(torch.float64).reshape(-1)
    total = float(w.sum())
    if w.numel() == 0 or not total > 0:
        return dict(global_buffers)
    out = {}
    for name, base in global_buffers.items():
        clients = stacked[name]
        delta = clients.to(torch.float64) - base.to(torch.float64)
        mean = base.to(torch.float64) + torch.tensordot(w.to(delta.device), delta, dims=1) / total
        out[name] = mean.to(base.dtype) if base.is_floating_point() else mean.round().to(base.dtype)
        if base.is_floating_point() and not bool(torch.isfinite(out[name]).all()):
            return dict(global_buffers)
    return out


def same_layout(buffers: Buffers, template: Buffers) -> str | None:
    """None if buffers has exactly template's names (in any order), shapes and dtypes; else the first difference,
    in words."""
    if set(buffers) != set(template):
        missing, extra = sorted(set(template) - set(buffers)), sorted(set(buffers) - set(template))
        return f"buffers missing {missing[:3]}, unexpected {extra[:3]} for this model"
    for name, b in buffers.items():
        t = template[name]
        if b.shape != t.shape or b.dtype != t.dtype:
            return f"buffer '{name}' is {b.dtype} {tuple(b.shape)}; the model's is {t.dtype} {tuple(t.shape)}"
    return None
