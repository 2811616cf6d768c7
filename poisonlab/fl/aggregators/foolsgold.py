"""FoolsGold (Fung, Yoon and Beschastnikh 2020): sybils share a direction, so damp similar histories.

Each client's history H_i is the sum of all its past updates (ctx.state['history'], by client id). With
cs_ij = cos(H_i, H_j) among the round's rows and v_i = max_{j != i} cs_ij:
  pardoning: cs_ij <- cs_ij * v_i / v_j when v_j > v_i;
  alpha_i = 1 - max_{j != i} cs_ij, clipped to [0, 1], divided by max alpha (0.99 for 1);
  logit: alpha_i = kappa * (ln(alpha_i / (1 - alpha_i)) + 0.5), clipped to [0, 1].
update = sum_i alpha_i w_i x_i / sum_i w_i (alpha is a per-client learning rate; FedAvg if all 1).
selected: alpha_i > 0; scores: 1 - alpha_i (higher = more sybil-like).
"""

from __future__ import annotations

import os

import torch

from poisonlab.errors import ResourceError
from poisonlab.fl.aggregators.base import Rule, check_positive, client_ids, cosine_similarities, normalized
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Fung, Yoon and Beschastnikh 2020, The Limitations of Federated Learning in Sybil Settings"
             " (RAID)")


def foolsgold_alpha(history: torch.Tensor, kappa: float = 1.0, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row learning rates alpha in [0, 1] from the (k, d) histories (Algorithm 1 of the paper); rows
    (an index tensor): those of history[rows], read block by block instead of copied."""
    k = history.shape[0] if rows is None else len(rows)
    if k < 2:
        return torch.ones(k, device=history.device)
    cs = cosine_similarities(history, rows=rows)  # float64, from cache-sized float32 blocks
    cs.fill_diagonal_(float("-inf"))
    v = cs.max(dim=1).values
    pardon = v[None, :] > v[:, None]  # pardon[i, j]: v_j > v_i
    cs = torch.where(pardon, cs * v[:, None] / v[None, :], cs)
    alpha = (1 - cs.max(dim=1).values).clamp(0, 1)
    top = alpha.max()
    if not bool(top > 0):
        return torch.zeros(k, device=history.device)
    alpha = (alpha / top).clamp_max(0.99)
    logit = kappa * (torch.log(alpha / (1 - alpha)) + 0.5)  # log(0) = -inf -> clipped to 0
    return logit.nan_to_num(nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1).float()


def grown_history(history: torch.Tensor | None, rows: int, d: int, max_history_bytes: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """history with room for rows clients of d coordinates (new rows zero) on device; the same tensor when it fits."""
    if history is None or history.shape[1] != d:
        history = torch.zeros(0, d, device=device)
    if rows <= history.shape[0]:
        return history
    if rows * d * 4 > max_history_bytes:
        raise ResourceError(f"foolsgold: histories of {rows} clients x {d} parameters need"
                            f" {rows * d * 4 / 2**30:.1f} GiB > max_history_bytes={max_history_bytes}")
    grown = torch.zeros(rows, d, device=history.device)
    grown[: history.shape[0]] = history
    return grown


def default_history_bytes() -> int:
    """75% of physical memory, as resources.default_budget (which imports the aggregators: not imported here);
    4 GiB where the machine does not say."""
    try:
        return int(0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


@AGGREGATORS.register("foolsgold", reference=REFERENCE)
def foolsgold(kappa: float = 1.0, max_history_bytes: int | None = None) -> Rule:
    """FoolsGold: per-client learning rates from the cosine similarity of accumulated update histories.

    State: {'history': (clients, d) float32 sum of each client's updates}. The round's updates are
    added to the history tensor it was given in place (a (clients, d) copy per round would double
    the largest tensor of the run) and the same tensor is returned as the next state; the round's rows
    of it are read in column blocks (no (k, d) gather). max_history_bytes: a ResourceError above it;
    None (default): 75% of physical memory (as resources.default_budget), the limit a run's memory
    estimate is checked against, where the history is counted (so a ResNet-18 history of 100 clients,
    4.4 GB, runs on a machine that has the memory).
    """
    kappa = check_positive("foolsgold", "kappa", kappa)
    if max_history_bytes is None:
        max_history_bytes = default_history_bytes()
    max_history_bytes = int(check_positive("foolsgold", "max_history_bytes", max_history_bytes))

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k, d = updates.shape
        ids = client_ids(ctx, k)
        history = grown_history((ctx.state or {}).get("history"), max(int(ids.max()) + 1, ctx.num_clients), d,
                                max_history_bytes, updates.device)
        history.index_add_(0, ids, updates.float())
        every = bool((ids == torch.arange(k, device=ids.device)).all())  # the first k clients, in order: a view
        alpha = foolsgold_alpha(history[:k], kappa) if every else foolsgold_alpha(history, kappa, rows=ids)
        update = (alpha * normalized(weights)).to(updates.dtype) @ updates
        return Aggregate(update, alpha > 0, 1 - alpha, {"alpha": alpha.tolist()}, {"history": history})

    def memory(k: int, d: int, clients: int) -> dict[str, int]:
        return {"foolsgold history ({clients} x {d})": min(max_history_bytes, 4 * clients * d) + 8 * k * k}

    return Rule(apply, f"foolsgold(kappa={kappa})", memory=memory)
