"""DeepSight (Rieger, Nguyen, Miettinen and Sadeghi 2022), the parts computable from the updates alone.

The output layer is the last classes x (features + 1) coordinates of the flat update: its weight
(classes, features) row-major, then its bias (classes), the order of a final torch Linear layer.
For client i and output neuron j:
  energy   e_ij = |db_ij| + sum_p |dW_ijp|;   NEUP c_ij = e_ij^2 / sum_j' e_ij'^2;
  threshold exceedings TE_i = #{j : c_ij > max(0.01, 1/classes) * max_j' c_ij'};
  label: suspicious when TE_i <= median(TE) / 2 (a backdoor concentrates the energy on few labels).
Clustering: HDBSCAN (min_samples = 3, noise points each their own cluster) on (a) the cosine
distances of the output-layer bias updates and (b) the NEUP vectors; each clustering gives a
0/1 "different cluster" matrix, their mean is clustered once more (HDBSCAN, precomputed,
allow_single_cluster). A cluster is accepted when fewer than tau of its members are suspicious.
The accepted updates are clipped to the median L2 norm of all updates and averaged (plain mean: the
paper, like FLAME, ignores client weights). selected: accepted rows; scores: 1 for a suspicious
row, else 0; info: TE per row.

Left out, and why: the DDifs (division differences, the ratio of the local to the global model's
softmax outputs on random inputs, three seeds) need the models and probe inputs, which an aggregation
rule does not receive; the final clustering therefore merges two distance matrices, not three.
features=0 computes the energies from the output biases only (use the penultimate width of the
model for the paper's definition); fewer than 3 rows are not clustered (each its own cluster).
"""

from __future__ import annotations

import numpy as np
import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.aggregators.base import CHUNK_BYTES, Rule, check_int, check_positive, empty, row_norms_float64
from poisonlab.fl.aggregators.flame import cosine_distances
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.types import Aggregate, RoundContext

REFERENCE = ("Rieger, Nguyen, Miettinen and Sadeghi 2022, DeepSight: Mitigating Backdoor Attacks in Federated"
             " Learning Through Deep Model Inspection (NDSS)")


def neups(output_layer: torch.Tensor, classes: int, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(NEUPs (k, classes) float64, threshold exceedings (k,) long) of the output-layer updates (k, classes * (features + 1))."""
    k = output_layer.shape[0]
    x = output_layer.double()
    energy = x[:, classes * features:].abs()
    if features:
        energy = energy + x[:, :classes * features].reshape(k, classes, features).abs().sum(dim=2)
    sq = energy * energy
    total = sq.sum(dim=1, keepdim=True)
    c = torch.where(total > 0, sq / total.clamp_min(1e-300), torch.zeros_like(sq))
    threshold = max(0.01, 1 / classes) * c.max(dim=1, keepdim=True).values
    return c, (c > threshold).sum(dim=1)


def cluster_labels(features: np.ndarray, precomputed: bool) -> np.ndarray:
    """HDBSCAN labels (min_samples 3 or fewer for tiny rounds), each noise point given a label of its own."""
    from sklearn.cluster import HDBSCAN

    k = features.shape[0]
    labels = HDBSCAN(min_cluster_size=2, min_samples=min(3, k), metric="precomputed" if precomputed else "euclidean",
                     allow_single_cluster=precomputed, copy=True).fit(features).labels_.copy()
    noise = labels < 0
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


def different(labels: np.ndarray) -> np.ndarray:
    """(k, k) float64: 1 where two rows are in different clusters."""
    return (labels[:, None] != labels[None, :]).astype(np.float64)


@AGGREGATORS.register("deepsight", reference=REFERENCE)
def deepsight(classes: int = 10, features: int = 0, tau: float = 1 / 3) -> Rule:
    """DeepSight from updates: NEUP threshold exceedings label clusters of bias cosines and NEUPs (no DDifs)."""
    classes = check_int("deepsight", "classes", classes, low=1)
    features = check_int("deepsight", "features", features, low=0)
    tau = check_positive("deepsight", "tau", tau)
    width = classes * (features + 1)

    def apply(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
        k, d = updates.shape
        if d < width:
            raise ConfigError(f"deepsight: classes={classes}, features={features} need an output layer of {width}"
                              f" coordinates; the updates have d={d}")
        layer = updates[:, d - width:]
        c, te = neups(layer, classes, features)
        suspicious = te.double() <= te.double().median() / 2 if k % 2 else te.double() <= te.double().quantile(0.5) / 2
        if k >= 3:
            bias = cosine_distances(layer[:, classes * features:])
            merged = (different(cluster_labels(bias, True)) + different(cluster_labels(c.cpu().numpy(), False))) / 2
            labels = torch.from_numpy(cluster_labels(merged, True)).to(updates.device)
        else:
            labels = torch.arange(k, device=updates.device)
        same = labels[:, None] == labels[None, :]
        share = (same & suspicious[None, :]).sum(1).double() / same.sum(1).double()
        accepted = share < tau
        if not bool(accepted.any()):
            return empty(updates, {"te": te.tolist(), "accepted": 0})
        norms = row_norms_float64(updates, CHUNK_BYTES)
        bound = float(norms.median()) if k % 2 else float(norms.quantile(0.5))
        factors = (bound / norms.clamp_min(1e-30)).clamp_max(1.0) * accepted / accepted.sum()
        update = factors.to(updates.dtype) @ updates
        return Aggregate(update, accepted, suspicious.float(),
                         {"te": te.tolist(), "accepted": int(accepted.sum()), "clip_bound": bound})

    return Rule(apply, f"deepsight(classes={classes}, features={features}, tau={tau})",
                memory=lambda k, d, clients: {"deepsight output layer and chunks": 8 * k * width + 24 * k * k
                                              + min(CHUNK_BYTES, 8 * k * d)})
