"""FreqFed (Fereidooni et al. 2024): cluster updates on their low-frequency DCT components.

1. Each update x_i (flat, length d) goes to the frequency domain with the orthonormal DCT-II,
   X_i[f] = c_f sum_n x_i[n] cos(pi f (2n + 1) / (2d)), c_0 = sqrt(1/d), c_f = sqrt(2/d)
   (scipy.fft.dct(x, type=2, norm='ortho')); the low-frequency components are the first
   m = ceil(fraction * d) coefficients (fraction in (0, 0.5]).
2. HDBSCAN on the cosine distances of those (k, m) vectors (min_cluster_size = k // 2 + 1, as FLAME);
   the rows of the largest cluster are admitted (all rows when HDBSCAN finds none, or k < 3).
3. update = weighted mean of the admitted rows (FedAvg over the majority cluster).
selected: admitted rows; scores: 1 - HDBSCAN membership probability.

The paper applies the 2-D DCT to each layer's weight matrix and keeps its top-left (low-frequency)
triangle; poisonlab's updates are one flat vector without layer shapes, so the 1-D DCT of the whole
vector stands in for it (documented deviation). The DCT is Makhoul's (1980) FFT algorithm: the even
entries then the reversed odd ones, an rfft, a twiddle exp(-i pi f / (2d)); rows go through it in
float64 chunks of at most base.CHUNK_BYTES (no loop over clients, no (k, d) complex copy).
"""

from __future__ import annotations

import math

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_positive, normalized
from poisonlab.fl.aggregators.flame import cosine_distances, majority_cluster
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Fereidooni et al. 2024, FreqFed: A Frequency Analysis-Based Approach for Mitigating Poisoning"
             " Attacks in Federated Learning (NDSS)")


def dct_low(x: torch.Tensor, m: int, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """(k, m) float64: the first m orthonormal DCT-II coefficients of each row of x (m <= d // 2 + 1)."""
    k, d = x.shape
    f = torch.arange(m, dtype=torch.float64, device=x.device)
    scale = torch.full((m,), math.sqrt(2 / d), dtype=torch.float64, device=x.device)
    scale[0] = math.sqrt(1 / d)
    angle = math.pi * f / (2 * d)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale  # Re(V e^{-i angle}) = V.re cos + V.im sin
    out = torch.empty(k, m, dtype=torch.float64, device=x.device)
    n = torch.arange(d, device=x.device)
    order = torch.cat([n[0::2], n[1::2].flip(0)])  # Makhoul's reordering: even entries, then odd ones reversed
    step = max(1, int(chunk_bytes) // max(1, 32 * d))  # float64 reordered rows + their complex rfft
    for lo in range(0, k, step):
        rows = x[lo:lo + step].double()
        spectrum = torch.fft.rfft(rows.index_select(1, order), dim=1)[:, :m]
        out[lo:lo + step] = spectrum.real * cos + spectrum.imag * sin
    return out


@AGGREGATORS.register("freqfed", reference=REFERENCE)
def freqfed(fraction: float = 0.5) -> Rule:
    """FreqFed: admit the majority HDBSCAN cluster of the updates' low-frequency DCT components."""
    fraction = check_positive("freqfed", "fraction", fraction)
    if fraction > 0.5:
        raise ConfigError(f"freqfed: fraction={fraction!r} is out of range; accepted: (0, 0.5]")

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k, d = updates.shape
        low = dct_low(updates, max(1, math.ceil(fraction * d)))
        admitted, outlier, found = majority_cluster(cosine_distances(low))
        admitted = torch.from_numpy(admitted).to(updates.device)
        update = normalized(weights * admitted).to(updates.dtype) @ updates
        return Aggregate(update, admitted, torch.from_numpy(outlier).float().to(updates.device),
                         {"cluster_found": found, "admitted": int(admitted.sum())})

    return Rule(apply, f"freqfed(fraction={fraction})",
                memory=lambda k, d, clients: {"freqfed DCT chunks": min(CHUNK_BYTES, 32 * k * d)
                                              + 8 * k * (d // 2 + 1) + 8 * k * k})
