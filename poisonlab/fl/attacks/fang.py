"""Local model poisoning (Fang, Cao, Jia and Gong, USENIX Security 2020): the Krum and trimmed-mean attacks.

Both act on updates (local model minus global model, as FLPoison and Blades do): the global model
w_Re is the origin, a local model w_i is its update. s (d,) is the estimated direction in which
the global model would move without attack, s = sign(mean of the benign updates) (0 counted as +1);
the attack pushes the aggregate the other way.

Full knowledge (ctx.omniscient): the benign updates are the honest rows. Partial knowledge: the
attackers' own honestly trained updates stand in for them (the paper's partial-knowledge setting).
"""

from __future__ import annotations

import math

import torch

from poisonlab.errors import check_range
from poisonlab.fl.aggregators.krum import krum_scores
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.attacks.minmax import sq_distances
from poisonlab.fl.types import RoundContext
from poisonlab.rng import generator

REFERENCE = "Fang et al. 2020, Local Model Poisoning Attacks to Byzantine-Robust Federated Learning (USENIX Security)"


def direction(ref: torch.Tensor) -> torch.Tensor:
    """s = sign(mean of the benign rows ref), with 0 taken as +1."""
    return torch.where(ref.mean(dim=0) >= 0, 1.0, -1.0).to(ref.dtype)


def krum_lambda_bound(ref: torch.Tensor, n: int, c: int) -> float:
    """Fang's upper bound on lambda for n participants, c of them malicious, benign rows ref (b, d):

    lambda = min_i sum_{l in N(i)} ||w_l - w_i|| / ((n - 2c - 1) sqrt(d)) + max_i ||w_i|| / sqrt(d),
    N(i) the n - c - 2 benign rows nearest to benign row i (at most b - 1 of them, at least 1;
    n - 2c - 1 at least 1 where the round is too small for the formula).
    """
    b, d = ref.shape
    near = min(max(n - c - 2, 1), max(b - 1, 1))
    dist = sq_distances(ref, ref).sqrt()
    dist = dist + torch.diag(torch.full((b,), float("inf"), dtype=ref.dtype, device=ref.device)) if b > 1 else dist
    sums = torch.topk(dist, near, dim=1, largest=False).values.sum(dim=1) if b > 1 else torch.zeros_like(dist[0])
    return float(sums.min()) / (max(n - 2 * c - 1, 1) * math.sqrt(d)) + float(ref.norm(dim=1).max()) / math.sqrt(d)


def krum_picks_crafted(ref: torch.Tensor, s: torch.Tensor, lam: float, c: int,
                       benign_dist: torch.Tensor | None = None) -> bool:
    """Whether Krum (with f = c) over the benign rows ref and c copies of -lam * s picks a copy.

    The distances of the copies are closed-form, ||-lam s - w_i||^2 = lam^2 d + ||w_i||^2 + 2 lam s.w_i,
    so a trial costs O(b^2) given the benign squared distances (benign_dist, computed if None).
    Ties go to the benign rows (a strict win).
    """
    b, d = ref.shape
    n = b + c
    dist = torch.zeros(n, n, dtype=ref.dtype, device=ref.device)
    dist[:b, :b] = sq_distances(ref, ref) if benign_dist is None else benign_dist
    cross = lam * lam * d + (ref * ref).sum(dim=1) + 2 * lam * (ref @ s)
    dist[:b, b:] = cross[:, None]
    dist[b:, :b] = cross[None, :]
    scores = krum_scores(dist, c)
    return bool(scores[b:].min() < scores[:b].min())


@ATTACKS.register("fang_krum", reference=REFERENCE)
def fang_krum(epsilon: float = 1e-5):
    """Fang's attack on Krum: every malicious row becomes -lambda * s, lambda the largest that Krum picks.

    lambda starts at krum_lambda_bound and is halved until Krum (f = number of malicious rows) over
    the benign rows and the crafted copies picks a copy, or lambda < epsilon (then the attack has
    failed and the rows are -lambda s with that last, tiny lambda). Partial knowledge runs the same
    check with the attackers' own updates as the benign rows.
    """
    check_range("epsilon", epsilon, 0.0, low_open=True)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        c = int(malicious.sum())
        if c == 0:
            return updates.clone()
        ref = benign_rows(updates, malicious, ctx).double()
        s = direction(ref)
        lam, benign_dist = krum_lambda_bound(ref, updates.shape[0], c), sq_distances(ref, ref)
        while lam >= epsilon and not krum_picks_crafted(ref, s, lam, c, benign_dist):
            lam /= 2
        return rewrite(updates, malicious, -lam * s)

    return attack


@ATTACKS.register("fang_trim", reference=REFERENCE)
def fang_trim(b: float = 2.0):
    """Fang's attack on trimmed mean and median: per coordinate, values beyond the benign range, against s.

    Full knowledge, w_max / w_min the per-coordinate max / min of the honest rows: where s_j = -1
    each malicious value is uniform in [w_max, b w_max] (w_max > 0) or [w_max, w_max / b]; where
    s_j = +1 in [w_min / b, w_min] (w_min > 0) or [b w_min, w_min].
    Partial knowledge, mu / sigma the mean / std of the attackers' own rows: uniform in
    [mu + 3 sigma, mu + 4 sigma] where s_j = -1, [mu - 4 sigma, mu - 3 sigma] where s_j = +1.
    Draws from generator(seed, "attack", "fang_trim", round), one per malicious row and coordinate.
    """
    check_range("b", b, 1.0, low_open=True)

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        c, d = int(malicious.sum()), updates.shape[1]
        if c == 0:
            return updates.clone()
        ref = benign_rows(updates, malicious, ctx).double()
        s = direction(ref)
        u = torch.rand(c, d, generator=generator(ctx.seed, "attack", "fang_trim", ctx.round), dtype=torch.float64,
                       device="cpu").to(updates.device)  # drawn on the CPU
        if ctx.omniscient and bool((~malicious).any()):
            hi, lo = ref.max(dim=0).values, ref.min(dim=0).values
            up = torch.where(hi > 0, hi * b, hi / b)      # s = -1: [hi, up] (up >= hi)
            down = torch.where(lo > 0, lo / b, lo * b)    # s = +1: [down, lo] (down <= lo)
            rows = torch.where(s < 0, hi + u * (up - hi), down + u * (lo - down))
        else:
            mu, sigma = ref.mean(dim=0), ref.std(dim=0, correction=0)
            rows = torch.where(s < 0, mu + (3 + u) * sigma, mu - (3 + u) * sigma)
        return rewrite(updates, malicious, rows)

    return attack
