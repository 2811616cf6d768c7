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


COLLAPSE_SHARE = 0.9
"""A model that gives one class to at least this share of the clean test inputs has collapsed (when no class
is half of the test set): its training failed without a NaN, e.g. a batch-norm model on a poisoned set."""


def collapse_warning(confusion: list[list[int]], which: str) -> str | None:
    """A one-line warning when a model predicts one class for >= 90% of the clean test inputs although no class
    is more than half of them; None otherwise.

    Such a model reports an attack success rate of ~100% toward that class (every triggered input lands
    there too) and a chance clean accuracy: the ASR measures the collapse, not a backdoor, and is not to be
    read as one. confusion: rows true class, columns predicted class (training.evaluate's).
    """
    total = sum(sum(row) for row in confusion)
    if total == 0:
        return None
    predicted = [sum(row[c] for row in confusion) for c in range(len(confusion))]
    cls = max(range(len(predicted)), key=predicted.__getitem__)
    share, largest_class = predicted[cls] / total, max(sum(row) for row in confusion) / total
    if share < COLLAPSE_SHARE or largest_class > 0.5:
        return None
    accuracy = sum(confusion[c][c] for c in range(len(confusion))) / total
    return (f"the {which} predicts class {cls} for {share:.0%} of the clean test inputs (clean accuracy"
            f" {accuracy:.1%}): its training collapsed, so an attack success rate toward class {cls} measures"
            " the collapse, not a backdoor")
