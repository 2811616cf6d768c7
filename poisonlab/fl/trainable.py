"""What local training takes and gives, shared by both engines (fl/local.py, fl/reference.py): the check that a
model can be trained, its parameters as the flat vector of the update matrix, and the result of training."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.fl.buffers import Buffers
from poisonlab.fl.dropout import dropout_modules


class LocalResult(NamedTuple):
    """What local training returns: updates (k, d) = local params - global params (parameters only) and the
    clients' buffers after training, name -> (k, *shape) (empty for a buffer-free model)."""

    updates: torch.Tensor
    buffers: Buffers


class ClientStarts(NamedTuple):
    """Where each of k clients starts local training when it is not the global model (FedBN: each client's own
    batch-norm layers, fl/fedbn.py): params (k, d) and buffers name -> (k, *shape)."""

    params: torch.Tensor
    buffers: Buffers


def check_trainable(model: nn.Module) -> None:
    """ConfigError for a model local training cannot train: no floating-point parameters to train, or a random
    module whose draws neither engine can reproduce (fl/dropout.py)."""
    params = list(model.parameters())
    if not params or not all(p.is_floating_point() for p in params):
        raise ConfigError(f"model {type(model).__name__} has {len(params)} parameters, not all floating point;"
                          " accepted: a model with floating-point parameters to train")
    dropout_modules(model)


def flat_params(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one flat float32 vector (named_parameters order)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float()
