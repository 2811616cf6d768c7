"""Stacked training: the SGD loop of k clients at once, as rows of one (k, d) parameter matrix.

Every parameter tensor is a view (k, *shape) into the rows, trained in place, so nothing is split into
separate tensors or concatenated back. One forward and one backward per local step serve all clients (the
program's ``grads``; fl/program.py); since the clients' losses are independent, the gradient of their sum is
each client's own gradient. The update is SGD with momentum and weight decay exactly as ``torch.optim.SGD``
(first step: buf = g; then buf = m*buf + g; p -= lr*buf; g includes wd*p).

Within a chunk the clients are ordered by step count, so at step t only the prefix of clients still active is
computed and updated (a slice, not a copy) and finished clients' parameters stop changing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from poisonlab.fl.batching import BatchPlan
from poisonlab.fl.dropout import DropoutMasks
from poisonlab.fl.program import Program

if TYPE_CHECKING:
    from poisonlab.fl.local import LocalConfig


def views(flat: torch.Tensor, shapes) -> list[torch.Tensor]:
    """Split flat (..., d) into views shaped like shapes (with the leading dims), in order."""
    lead = flat.shape[:-1]
    out, start = [], 0
    for shape in shapes:
        numel = shape.numel()
        out.append(flat[..., start:start + numel].reshape(*lead, *shape))
        start += numel
    return out


@torch.no_grad()
def train_stacked(program: Program, start: torch.Tensor, x: torch.Tensor, y: torch.Tensor, plan: BatchPlan,
                  cfg: LocalConfig, buffers: dict | None = None, dropout: DropoutMasks | None = None,
                  generators: list[torch.Generator] = ()) -> torch.Tensor:
    """Run the plan's SGD for its k clients from the stacked parameters start (k, d); returns the trained (k, d).

    buffers: name -> (k, *shape) the clients' buffers (client order), trained in place (batch norm's running
    statistics); dropout: the model's dropout masks, drawn at each step from generators (one per client,
    client order) after the plan's draws, in step order, then module order (fl/dropout.py).
    """
    order = torch.argsort(plan.steps, descending=True, stable=True)
    flat = start[order]  # a fresh copy: start is not modified
    params = views(flat, program.shapes)  # views into flat, trained in place
    state = {n: b[order] for n, b in (buffers or {}).items()}  # fresh copies in the same order
    gens = [generators[i] for i in order.tolist()] if dropout else []
    bufs = [torch.zeros_like(p) for p in params] if cfg.momentum > 0 else []
    index, weight, steps = plan.index[:, order], plan.weight[:, order], plan.steps[order]
    S = int(steps.max()) if len(steps) else 0
    active = (steps.unsqueeze(0) > torch.arange(S, device=steps.device).unsqueeze(1)).sum(dim=1).tolist()  # a prefix per step
    augment = None if plan.augment is None else plan.augment[:, order.cpu()]  # crop-and-flip draws, same order
    for t, (a, batch) in enumerate(program.batches(x, y, index, weight, active, augment)):
        masks = _draw_masks(dropout, gens[:a], weight[t, :a]) if dropout else None
        grads = program.grads([p[:a] for p in params], batch, {n: b[:a] for n, b in state.items()}, masks)
        _sgd_step(params, grads, bufs, a, t == 0, cfg)
    for n, b in state.items():
        buffers[n][order] = b
    if bool((order[1:] > order[:-1]).all()):  # already in client order (equal step counts): no copy
        return flat
    return flat[torch.argsort(order)]


def _draw_masks(dropout: DropoutMasks, gens: list[torch.Generator], weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each dropout module's masks (a, B, *shape) for one step: client i's first L_i rows (its real samples)
    drawn from its generator (DropoutMasks.draw), padding rows 1."""
    a, B = weight.shape
    lengths = (weight > 0).sum(dim=1).tolist()
    masks = tuple(torch.ones(a, B, *shape, device=weight.device) for shape in dropout.shapes)
    for i, (g, L) in enumerate(zip(gens, lengths)):
        for m, drawn in zip(masks, dropout.draw(g, L)):
            m[i, :L] = drawn
    return masks


def _sgd_step(params, grads, bufs, a: int, first: bool, cfg: LocalConfig) -> None:
    """torch.optim.SGD's update (dampening 0, no nesterov) on the first a stacked clients, in place."""
    pa = [p[:a] for p in params]
    grads = list(grads)
    if cfg.weight_decay:
        grads = torch._foreach_add(grads, pa, alpha=cfg.weight_decay)
    if cfg.momentum > 0:
        ba = [b[:a] for b in bufs]
        if first:
            torch._foreach_copy_(ba, grads)
        else:
            torch._foreach_mul_(ba, cfg.momentum)
            torch._foreach_add_(ba, grads)
        grads = ba
    torch._foreach_add_(pa, grads, alpha=-cfg.lr)
