"""The plain per-client loop of local training: the readable definition the vectorized path must match.

For each client: copy the model, load the global parameters and buffers, run ``torch.optim.SGD`` (momentum,
weight decay) over the same mini-batches as ``local.plan_batches`` gives, in train mode with dropout modules
applying the masks drawn from the client's generator after the plan's draws (fl/dropout.py: step order,
then module order); return local - global and the client's buffers (batch norm's running statistics).
It is what common FL frameworks do, the baseline of benchmarks/fl_engine.py, and the fallback for a model
the vectorized engine cannot run.

``channels_last=True`` is the same loop in the layout a CPU-savvy user would write for a convolutional model:
each client's model copy and every batch in ``torch.channels_last`` (NHWC strides). The batches, the optimizer
and the maths are the same; only the kernels' summation order differs, so the updates agree up to float rounding
(tests/test_fl_loop_layout.py). It is a candidate of ``engine: auto`` (fl/engine_choice.py), which picks it where it
is faster than the vectorized engine.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.data.augment import apply as augment_apply
from poisonlab.fl.batching import plan_batches
from poisonlab.fl.buffers import Buffers, load_buffers, model_buffers
from poisonlab.fl.dropout import DropoutMasks, MaskHooks, check_global_stream, global_stream, set_training_modes
from poisonlab.config.local import LocalConfig
from poisonlab.fl.trainable import ClientStarts, LocalResult, check_trainable, flat_params


def reference_updates(model: nn.Module, global_params: torch.Tensor, datasets: list, cfg: LocalConfig,
                      generators: list[torch.Generator], buffers: Buffers | None = None,
                      channels_last: bool = False) -> torch.Tensor:
    """Updates (k, d) of k clients, one after the other, each with its own model copy and optimizer."""
    return reference_train(model, global_params, datasets, cfg, generators, buffers,
                           channels_last=channels_last).updates


def reference_train(model: nn.Module, global_params: torch.Tensor, datasets: list, cfg: LocalConfig,
                    generators: list[torch.Generator], buffers: Buffers | None = None,
                    starts: ClientStarts | None = None, channels_last: bool = False) -> LocalResult:
    """Updates (k, d) and buffers (name -> (k, *shape)) of k clients trained one after the other from the global
    model (global_params and buffers; None: the model's own buffers), or each from its own starts.
    channels_last: each client's model and batches in torch.channels_last (image inputs only; a no-op for others)."""
    check_trainable(model)
    buffers = model_buffers(model) if buffers is None else buffers
    plan = plan_batches([len(ds) for ds in datasets], cfg, generators)
    x = torch.cat([ds.x for ds in datasets])
    y = torch.cat([ds.y for ds in datasets])
    dropout = DropoutMasks.of(model, tuple(x.shape[1:])) if datasets else DropoutMasks((), (), ())
    layout = torch.channels_last if channels_last and x.dim() == 4 else None
    rows, states = [], []
    for i in range(len(datasets)):  # the per-client loop this module exists to show
        local = copy.deepcopy(model)
        start = global_params if starts is None else starts.params[i]
        torch.nn.utils.vector_to_parameters(start.clone(), local.parameters())
        load_buffers(local, buffers if starts is None else {n: b[i] for n, b in starts.buffers.items()})
        if layout is not None:  # after loading: vector_to_parameters makes contiguous views
            local = local.to(memory_format=layout)
        opt = torch.optim.SGD(local.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        set_training_modes(local)  # train mode; dropout modules apply the drawn masks through hooks
        hooks = MaskHooks(local, dropout.names)
        for t in range(int(plan.steps[i])):
            real = plan.weight[t, i] > 0
            idx = plan.index[t, i][real]
            hooks.masks = [m.to(x.device) for m in dropout.draw(generators[i], len(idx))]
            opt.zero_grad(set_to_none=True)
            stream = global_stream(x.device)
            xb = x[idx] if plan.augment is None else augment_apply(x[idx], plan.augment[t, i][real])
            xb = xb if layout is None else xb.contiguous(memory_format=layout)
            F.cross_entropy(local(xb), y[idx]).backward()
            check_global_stream(stream, x.device)  # a random op the masks do not cover is refused
            opt.step()
        rows.append(flat_params(local) - start)
        states.append(model_buffers(local))
    updates = torch.stack(rows) if rows else torch.zeros(0, global_params.numel(), device=global_params.device)
    stacked = {n: torch.stack([s[n] for s in states]) if states else b.new_zeros(0, *b.shape)
               for n, b in buffers.items()}
    return LocalResult(updates, stacked)
