"""Sign-based rules: signSGD with majority vote (Bernstein et al. 2019) and the Robust Learning Rate
(Ozdayi, Kantarcioglu and Gel 2021).

signsgd_vote(step): every row with weight > 0 casts one vote per coordinate, sign(x_ij);
  update_j = step * sign(sum_i sign(x_ij)) (a tie gives 0). Client weights only say who votes (the
  paper's vote is one client, one vote). selected: rows with weight > 0; scores: the fraction of
  coordinates where the row's sign disagrees with the vote.
robust_lr(threshold): with the weighted mean m = sum_i w_i x_i / sum_i w_i and the vote count
  s_j = |sum_i sign(x_ij)| over rows with weight > 0, update_j = m_j if s_j >= threshold else -m_j
  (the server learning rate of coordinate j flips sign where too few clients agree: Algorithm 1 and
  eq. 3 of the paper, with the server rate eta carried by ctx.server_lr as for every rule).
  selected: rows with weight > 0; scores: as signsgd_vote's (disagreement with the vote).
  info: 'flipped', the number of coordinates whose rate was flipped.

Both run over column chunks of the (k, d) matrix (a (k, chunk) sign temporary, no loop over clients).
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, check_positive, column_chunks, normalized
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

SIGNSGD_REFERENCE = ("Bernstein, Zhao, Azizzadenesheli and Anandkumar 2019, signSGD with Majority Vote is"
                     " Communication Efficient and Fault Tolerant (ICLR)")
RLR_REFERENCE = ("Ozdayi, Kantarcioglu and Gel 2021, Defending against Backdoors in Federated Learning with"
                 " Robust Learning Rate (AAAI)")


def vote(updates: torch.Tensor, voters: torch.Tensor, chunk_bytes: int = CHUNK_BYTES
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over voting rows of sign(x_ij), per coordinate (d,) float32; per-row count of coordinates whose
    sign differs from the vote's sign (k,)), from column chunks."""
    k, d = updates.shape
    total = torch.zeros(d, dtype=torch.float32, device=updates.device)
    disagree = torch.zeros(k, dtype=torch.float32, device=updates.device)
    v = voters.to(updates.dtype)[:, None]
    for cols in column_chunks(k, d, updates.element_size(), chunk_bytes):
        signs = torch.sign(updates[:, cols])
        s = (signs * v).sum(dim=0).float()
        total[cols] = s
        disagree += (signs != torch.sign(s).to(signs.dtype)).sum(dim=1).float()
    return total, disagree


@AGGREGATORS.register("signsgd_vote", reference=SIGNSGD_REFERENCE)
def signsgd_vote(step: float = 0.001, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """signSGD with majority vote: step * sign(sum_i sign(x_i)), one vote per client with weight > 0.

    step is the sign-descent learning rate of the paper (the update has entries in {-step, 0, step});
    the engine's server_lr multiplies it as for every rule.
    """
    step = check_positive("signsgd_vote", "step", step)
    chunk_bytes = check_int("signsgd_vote", "chunk_bytes", chunk_bytes, 1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        voters = weights > 0
        total, disagree = vote(updates, voters, chunk_bytes)
        update = (step * torch.sign(total)).to(updates.dtype)
        return Aggregate(update, voters, disagree / max(1, updates.shape[1]),
                         {"ties": int((total == 0).sum())})

    return Rule(apply, f"signsgd_vote(step={step})")


@AGGREGATORS.register("robust_lr", reference=RLR_REFERENCE)
def robust_lr(threshold: int = 4, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Robust Learning Rate: the weighted mean, each coordinate's sign flipped where the sign vote is weak.

    Coordinate j is flipped where fewer than threshold clients agree on its sign (|sum_i sign(x_ij)| < threshold).

    A round needs at least threshold voting rows (otherwise every coordinate would flip): check_rows.
    """
    threshold = check_int("robust_lr", "threshold", threshold, low=1)
    chunk_bytes = check_int("robust_lr", "chunk_bytes", chunk_bytes, 1)

    def check_rows(n: int) -> None:
        if n < threshold:
            raise ConfigError(f"robust_lr: threshold={threshold} needs at least {threshold} clients per round;"
                              f" got {n} (accepted: threshold <= clients per round)")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        voters = weights > 0
        total, disagree = vote(updates, voters, chunk_bytes)
        keep = total.abs() >= threshold
        mean = normalized(weights).to(updates.dtype) @ updates
        update = torch.where(keep, mean, -mean)
        return Aggregate(update, voters, disagree / max(1, updates.shape[1]), {"flipped": int((~keep).sum())})

    return Rule(apply, f"robust_lr(threshold={threshold})", check_rows=check_rows)
