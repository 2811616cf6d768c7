"""3-sigma score filter (as Blades and FLPoison ship it): drop rows whose score lies beyond mean ± c std.

With a per-row score s_i (score="norm": ||x_i||; "median_distance": ||x_i - coordinate median||;
"mean_distance": ||x_i - weighted mean||), mu = mean_i s_i and sd = the population standard deviation
of s (both unweighted, over the round's rows), a row is kept iff |s_i - mu| <= n_sigma * sd; the update
is the weighted mean of the kept rows. Scores are float64 (exact column chunks, no cancellation).
selected: kept rows; scores: |s_i - mu| / sd (0 when sd = 0).

Property (Samuelson's inequality): |s_i - mu| <= sd * sqrt(k - 1) for every row, so with
k <= n_sigma^2 + 1 rows (10 rows at n_sigma = 3) no row can ever be dropped; the filter only bites in
larger rounds. Reference for the rule: the classic three-sigma (Pukelsheim 1994) outlier rule as
applied to client updates in Blades (Li et al. 2023) and FLPoison.
"""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import (CHUNK_BYTES, Rule, check_int, check_positive, normalized, row_distances,
                                           row_norms_float64)
from poisonlab.fl.aggregators.median import coordinate_median
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Pukelsheim 1994, The Three Sigma Rule (The American Statistician); as a client filter in"
             " Li et al. 2023 (Blades) and FLPoison")
SCORES = ("norm", "median_distance", "mean_distance")


def row_scores(updates: torch.Tensor, weights: torch.Tensor, score: str, chunk_bytes: int) -> torch.Tensor:
    """The (k,) float64 score of each row (see the module docstring)."""
    if score == "norm":
        return row_norms_float64(updates, chunk_bytes)
    if score == "median_distance":
        return row_distances(updates, coordinate_median(updates, chunk_bytes), chunk_bytes)
    return row_distances(updates, normalized(weights).to(updates.dtype) @ updates, chunk_bytes)


def sigma_keep(scores: torch.Tensor, n_sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep mask |s_i - mu| <= n_sigma * sd, standardized deviation |s_i - mu| / sd) of (k,) float64 scores."""
    mu = scores.mean()
    sd = scores.std(correction=0) if len(scores) > 1 else torch.zeros((), dtype=scores.dtype, device=scores.device)
    dev = (scores - mu).abs()
    z = torch.where(sd > 0, dev / sd.clamp_min(1e-300), torch.zeros_like(dev))
    return dev <= n_sigma * sd, z


@AGGREGATORS.register("three_sigma", reference=REFERENCE)
def three_sigma(score: str = "median_distance", n_sigma: float = 3.0, chunk_bytes: int = CHUNK_BYTES) -> Rule:
    """Keep rows whose score is within n_sigma standard deviations of the round's mean score; weighted mean."""
    if score not in SCORES:
        raise ConfigError(f"three_sigma: score={score!r} is not known; accepted: {', '.join(SCORES)}")
    n_sigma = check_positive("three_sigma", "n_sigma", n_sigma)
    chunk_bytes = check_int("three_sigma", "chunk_bytes", chunk_bytes, 1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        keep, z = sigma_keep(row_scores(updates, weights, score, chunk_bytes), n_sigma)
        keep = keep.to(updates.device)
        update = normalized(weights * keep).to(updates.dtype) @ updates
        return Aggregate(update, keep, z.float(), {"dropped": int((~keep).sum())})

    return Rule(apply, f"three_sigma(score={score!r}, n_sigma={n_sigma})")
