"""Stopping a run whose training diverged, with the round or epoch and the likely cause, in one line.

A learning rate too high for the model (or a huge weight decay, momentum close to 1, a huge server
learning rate) makes the loss NaN or Inf. Without a check the run carries on: centralized training
ends with a NaN model, a federation drops every NaN update (the non-finite guard) and keeps its
initial model, and both report chance accuracy as if it were a result. These checks read numbers the
loops already have on the host (an epoch's mean loss, a round's update norms and evaluated loss), so
they add no device synchronisation: once per epoch, once per round.
"""

from __future__ import annotations

import math

from poisonlab.errors import DivergedError


def check_epoch(loss: float, epoch: int, cfg) -> None:
    """DivergedError if an epoch's mean training loss is NaN or Inf (epoch 0-based; cfg a TrainConfig)."""
    if math.isfinite(loss):
        return
    raise DivergedError(f"training diverged in epoch {epoch + 1} of {cfg.epochs}: the mean loss is {loss};"
                        f" likely cause: lr={cfg.lr} too high for this model (weight_decay={cfg.weight_decay},"
                        f" momentum={cfg.momentum}); accepted: a smaller lr")


def check_round(record, cfg) -> None:
    """DivergedError if every honest client's update of a round is NaN/Inf, or its evaluated test loss is.

    record: the round's RoundRecord (update_norms per row, the malicious ids, loss where evaluated);
    cfg: the FederationConfig (for the message). An attacker's NaN rows are the non-finite guard's
    business (dropped); only when the honest clients' own training blows up is the run stopped.
    """
    honest = [n for c, n in zip(record.sampled, record.update_norms) if c not in set(record.malicious)]
    local = cfg.local
    if honest and not any(math.isfinite(n) for n in honest):
        raise DivergedError(f"federated training diverged in round {record.round + 1}: every honest client's"
                            f" update is NaN or Inf; likely cause: federated.local.lr={local.lr} too high for this"
                            f" model (weight_decay={local.weight_decay}, momentum={local.momentum});"
                            " accepted: a smaller federated.local.lr")
    if record.loss is not None and not math.isfinite(record.loss):
        raise DivergedError(f"federated training diverged in round {record.round + 1}: the global model's test"
                            f" loss is {record.loss}; likely cause: federated.server_lr={cfg.server_lr} or"
                            f" federated.local.lr={local.lr} too high; accepted: smaller learning rates")
