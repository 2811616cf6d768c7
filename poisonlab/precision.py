"""Mixed precision for training: ``precision: fp32 | bf16`` (fp32 by default).

bf16 runs the forward pass and the loss of centralized training (training.py ``train``) and of local training
under ``torch.autocast(device_type, dtype=torch.bfloat16)``; parameters, optimizer state, gradients and the
federated updates stay float32, and evaluation always runs in float32. The layer program's hand-written
backward (fl/program.py, fl/layers.py) computes in float32 only, so under bf16 local training runs the
model's autograd program instead (torch.func under vmap, where autocast applies): slower, but what it says.
The plain per-client loop (engine: reference) is the fp32 definition and refuses bf16.
"""

from __future__ import annotations

import contextlib

import torch

from poisonlab.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    """precision itself when it is fp32 or bf16, else a one-line ConfigError."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not known; accepted: {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str = "fp32"):
    """The context training runs in: bf16 autocast on device for precision 'bf16', nothing for 'fp32'."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
