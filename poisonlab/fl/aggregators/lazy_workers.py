"""Cross-round lazy-worker checks: flag a client that resends an update it (or anyone) sent before,
copies another client's update in the same round, or sends a zero update.

A lazy worker (free-rider) skips training and submits a stale update (its own earlier one or one
seen on the wire), a copy of another client's, or zeros (Lin et al. 2019, "Free-riders in Federated
Learning"; the lazy / stale workers of Blades, Li et al. 2024). Each row is compared on a CountSketch
(Charikar, Chen and Farach-Colton 2002): s_i[b] = sum_{j: h(j) = b} sign(j) x_ij with m buckets,
h and sign drawn once from the experiment seed, so equal updates have equal sketches and
E ||s_i - s_j||^2 = ||x_i - x_j||^2 (a Johnson-Lindenstrauss-type estimate; the squared distance's
relative standard deviation is at most sqrt(2 / m)). Two rows are the same update when ||s_i - s_j|| <= tol * max(||s_i||, ||s_j||).

  zero:  ||x_i|| = 0;
  stale: same as a sketch kept from one of the last `window` rounds (any client);
  copy:  same as another row of this round; of each group of copies the row of the smallest
         client id is kept (the copies carry no extra information), the others are flagged.
update = weighted mean of the rows not flagged (zero update if all are flagged).
selected: rows not flagged; scores: 1 for a flagged row, else 0; info: which check flagged whom.
State: 'sketches' (n, m) float64, 'rounds' (n,) long of the last `window` rounds' rows
(kept only for rows that were not flagged: a stale update is not a new original).
"""

from __future__ import annotations

import torch

from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, check_positive, client_ids, column_chunks
from poisonlab.fl.aggregators.base import normalized, row_abs_max
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext
from poisonlab.rng import generator

REFERENCE = ("Lin et al. 2019, Free-riders in Federated Learning: Attacks and Defenses (arXiv:1911.12560);"
             " Charikar, Chen and Farach-Colton 2002, Finding Frequent Items in Data Streams (CountSketch)")


def count_sketch(x: torch.Tensor, buckets: int, seed: int) -> torch.Tensor:
    """(k, buckets) float64 CountSketch of the rows of x: bucket h(j) and sign(j) of each coordinate from
    generator(seed, 'lazy_workers', d), built from column chunks (no (k, d) temporary)."""
    k, d = x.shape
    g = generator(seed, "lazy_workers", d)
    h = torch.randint(0, buckets, (d,), generator=g, device="cpu").to(x.device)
    sign = (torch.randint(0, 2, (d,), generator=g, device="cpu") * 2 - 1).to(x.device, torch.float64)
    out = torch.zeros(k, buckets, dtype=torch.float64, device=x.device)
    for cols in column_chunks(k, d, 8, CHUNK_BYTES):
        out.index_add_(1, h[cols], x[:, cols].double() * sign[cols])
    return out


def same(a: torch.Tensor, b: torch.Tensor, tol: float) -> torch.Tensor:
    """(len(a), len(b)) bool: ||a_i - b_j|| <= tol * max(||a_i||, ||b_j||), both non-zero."""
    if len(a) == 0 or len(b) == 0:
        return torch.zeros(len(a), len(b), dtype=torch.bool, device=a.device)
    na, nb = torch.linalg.vector_norm(a, dim=1), torch.linalg.vector_norm(b, dim=1)
    dist = torch.cdist(a, b)
    scale = torch.maximum(na[:, None], nb[None, :])
    return (dist <= tol * scale) & (scale > 0)


@AGGREGATORS.register("lazy_workers", reference=REFERENCE)
def lazy_workers(tol: float = 1e-3, window: int = 5, buckets: int = 1024) -> Rule:
    """Cross-round lazy-worker checks: zero, stale (seen in the last `window` rounds) and copied updates."""
    tol = check_positive("lazy_workers", "tol", tol, allow_zero=True)
    window = check_int("lazy_workers", "window", window, low=1)
    buckets = check_int("lazy_workers", "buckets", buckets, low=16)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k = updates.shape[0]
        ids = client_ids(ctx, k)
        sk = count_sketch(updates, buckets, ctx.seed)
        state = ctx.state or {}
        old, old_rounds = state.get("sketches"), state.get("rounds")
        if old is None or old.shape[1] != buckets:
            old = torch.zeros(0, buckets, dtype=torch.float64, device=updates.device)
            old_rounds = torch.zeros(0, dtype=torch.long, device=updates.device)
        old, old_rounds = old.to(updates.device, torch.float64), old_rounds.to(updates.device)
        recent = (old_rounds >= ctx.round - window) & (old_rounds < ctx.round)
        old, old_rounds = old[recent], old_rounds[recent]
        zero = row_abs_max(updates) == 0
        stale = same(sk, old, tol).any(dim=1) & ~zero
        pairs = same(sk, sk, tol)
        pairs.fill_diagonal_(False)
        earlier = ids[None, :] < ids[:, None]  # earlier[i, j]: client j's id is smaller than i's
        copy = (pairs & earlier).any(dim=1) & ~zero
        flagged = zero | stale | copy
        keep = ~flagged
        coef = normalized(weights * keep)
        update = coef.to(updates.dtype) @ updates
        nxt = {"sketches": torch.cat([old, sk[keep]]),
               "rounds": torch.cat([old_rounds, torch.full((int(keep.sum()),), ctx.round, device=updates.device)])}
        info = {"zero": ids[zero].tolist(), "stale": ids[stale].tolist(), "copy": ids[copy].tolist()}
        return Aggregate(update, keep, flagged.float(), info, nxt)

    def memory(k: int, d: int, clients: int) -> dict[str, int]:
        return {"lazy_workers sketch chunks": min(CHUNK_BYTES, 8 * k * d) + 12 * d,
                "lazy_workers sketches (window x k x buckets)": 8 * (window + 1) * k * buckets}

    return Rule(apply, f"lazy_workers(tol={tol}, window={window}, buckets={buckets})", memory=memory)
