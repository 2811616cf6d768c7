"""FedBN: every client keeps its batch-norm layers local (``federated.batch_norm: local``).

Li, Jiang, Zhang, Kamp and Dou 2021, "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization" (ICLR), Algorithm 1: clients train the whole model; the server averages every parameter EXCEPT
those of batch-norm layers, which each client keeps for itself (its affine weight and bias and, here, its
running statistics and batch counter too).

``LocalNorm`` holds each of the K clients' batch-norm parameters (K, n_bn) and buffers (K, *shape). A sampled
client starts local training from the global shared layers and ITS OWN batch-norm layers (``starts``); after
training its batch-norm layers are stored back (``store``). The update matrix the attacks and the aggregator
see is zero on the batch-norm entries (``shared_only``), so the rule aggregates the shared layers alone.

Evaluation: FedBN has no single global model (each client's model is the shared layers plus its own
batch-norm layers, evaluated in the paper on that client's own test data). poisonlab evaluates on one test
set, so the global model it evaluates, checkpoints and returns is the shared layers plus the weighted mean
(weights = the clients' sample counts) of ALL K clients' batch-norm parameters and statistics
(``global_view``); clients never sampled still hold the initial layers. That accuracy is a server-side view,
not the per-client accuracy the paper reports.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.fl.buffers import Buffers, average
from poisonlab.fl.trainable import ClientStarts, flat_params

NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


class LocalNorm:
    """Each client's own batch-norm parameters and buffers (see the module docstring)."""

    def __init__(self, model: nn.Module, sizes: list[int]):
        norms = [name for name, m in model.named_modules() if isinstance(m, NORM_TYPES)]
        if not norms:
            raise ConfigError(f"federated.batch_norm='local' keeps batch-norm layers local, but model"
                              f" {type(model).__name__} has none; accepted: 'shared', or a model with batch norm")
        owned = [any(n.startswith(prefix + ".") for prefix in norms) for n, _ in model.named_parameters()]
        mask = torch.cat([torch.full((p.numel(),), flag, device=p.device) for flag, p in zip(owned, model.parameters())])
        self.mask = mask
        self.buffer_names = tuple(n for n, _ in model.named_buffers() if any(n.startswith(p + ".") for p in norms))
        self.weights = torch.tensor([float(s) for s in sizes], device=mask.device)
        K = len(sizes)
        self.params = flat_params(model)[mask].unsqueeze(0).repeat(K, 1)
        named = dict(model.named_buffers())
        self.buffers = {n: named[n].detach().unsqueeze(0).repeat(K, *([1] * named[n].dim())) for n in self.buffer_names}

    def starts(self, global_params: torch.Tensor, global_buffers: Buffers, clients: list[int]) -> ClientStarts:
        """The sampled clients' starting points: the global shared layers with each client's own batch norm."""
        params = global_params.unsqueeze(0).repeat(len(clients), 1)
        params[:, self.mask] = self.params[clients]
        buffers = {n: (self.buffers[n][clients] if n in self.buffers else
                       b.unsqueeze(0).repeat(len(clients), *([1] * b.dim()))) for n, b in global_buffers.items()}
        return ClientStarts(params, buffers)

    def store(self, clients: list[int], trained: torch.Tensor, buffers: Buffers) -> None:
        """Keep the clients' batch-norm layers after local training (trained: their (k, d) parameters)."""
        self.params[clients] = trained[:, self.mask]
        for n in self.buffer_names:
            self.buffers[n][clients] = buffers[n]

    def shared_only(self, updates: torch.Tensor) -> torch.Tensor:
        """The update matrix with its batch-norm entries zeroed (a copy): the rule aggregates shared layers only."""
        out = updates.clone()
        out[:, self.mask] = 0
        return out

    def global_view(self, params: torch.Tensor, buffers: Buffers) -> tuple[torch.Tensor, Buffers]:
        """The evaluated global model: params and buffers with the batch-norm entries replaced by the weighted mean
        of all clients' own (weights = sample counts)."""
        params = params.clone()
        w = self.weights / self.weights.sum()
        params[self.mask] = (w.unsqueeze(1).to(self.params.dtype) * self.params).sum(dim=0).to(params.dtype)
        norm = average({n: self.buffers[n] for n in self.buffer_names}, self.weights,
                       {n: buffers[n] for n in self.buffer_names})
        return params, {**buffers, **norm}

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint: "fedbn.params" and "fedbn.buffer.<name>"."""
        return {"fedbn.params": self.params, **{f"fedbn.buffer.{n}": b for n, b in self.buffers.items()}}

    def load(self, tensors: dict[str, torch.Tensor]) -> str | None:
        """Restore from checkpoint tensors; None, or what does not fit this federation, in words."""
        params = tensors.get("fedbn.params")
        if params is None or params.shape != self.params.shape:
            return f"fedbn.params is {None if params is None else tuple(params.shape)}; expected {tuple(self.params.shape)}"
        for n, b in self.buffers.items():
            got = tensors.get(f"fedbn.buffer.{n}")
            if got is None or got.shape != b.shape or got.dtype != b.dtype:
                return f"fedbn.buffer.{n} is missing or of another shape"
        device = self.params.device  # checkpoints hold CPU tensors
        self.params = params.to(device).clone()
        self.buffers = {n: tensors[f"fedbn.buffer.{n}"].to(device).clone() for n in self.buffers}
        return None
