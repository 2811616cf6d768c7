"""The plain per-client loop of local training: the readable definition the vectorized path must match.

For each client: copy the model, load the global parameters, run ``torch.optim.SGD`` (momentum,
weight decay) over the same mini-batches as ``local.plan_batches`` gives, return local - global.
It is what common FL frameworks do, and it is the baseline of benchmarks/fl_engine.py.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.fl.batching import plan_batches
from poisonlab.fl.local import LocalConfig, flat_params


def reference_updates(model: nn.Module, global_params: torch.Tensor, datasets: list, cfg: LocalConfig,
                      generators: list[torch.Generator]) -> torch.Tensor:
    """Updates (k, d) of k clients, one after the other, each with its own model copy and optimizer."""
    plan = plan_batches([len(ds) for ds in datasets], cfg, generators)
    x = torch.cat([ds.x for ds in datasets])
    y = torch.cat([ds.y for ds in datasets])
    rows = []
    for i in range(len(datasets)):  # the per-client loop this module exists to show
        local = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(global_params.clone(), local.parameters())
        opt = torch.optim.SGD(local.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        local.train()
        for t in range(int(plan.steps[i])):
            real = plan.weight[t, i] > 0
            idx = plan.index[t, i][real]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(local(x[idx]), y[idx]).backward()
            opt.step()
        rows.append(flat_params(local) - global_params)
    return torch.stack(rows) if rows else torch.zeros(0, global_params.numel(), device=global_params.device)
