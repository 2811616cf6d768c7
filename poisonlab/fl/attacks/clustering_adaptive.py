"""The attack Blades adapts to clustering rules (ClippedClustering): a row rotated just past the benign spread."""

from __future__ import annotations

import math

import torch

from poisonlab.errors import ConfigError, check_range
from poisonlab.fl.attacks.base import benign_rows, check, rewrite
from poisonlab.fl.attacks.registry import ATTACKS
from poisonlab.fl.attacks.signguard_adaptive import finite_rows
from poisonlab.fl.types import RoundContext

LINKAGES = ("single", "complete", "average")


def unit(x: torch.Tensor) -> torch.Tensor:
    """x / ||x|| (0 for the zero vector)."""
    length = float(x.norm())
    return x / length if length > 0 else x


def rotated(mean: torch.Tensor, far: torch.Tensor, angle: float) -> torch.Tensor:
    """The unit vector at the given angle from mean, in the plane of mean and far, on far's side
    (-mean/||mean|| at angle >= pi; mean's own direction when far is parallel to it)."""
    m = unit(mean)
    if angle >= math.pi:
        return -m
    e = far - (far @ m) * m
    if float(e.norm()) <= 1e-12 * max(float(far.norm()), 1e-300):
        return m
    return math.cos(angle) * m + math.sin(angle) * unit(e)


def clustering_row(benign: torch.Tensor, margin: float, linkage: str) -> torch.Tensor:
    """The unit direction of the attack from finite benign rows (n >= 2, float64): see clustering_adaptive."""
    from poisonlab.fl.aggregators.clustering import bipartition, larger_cluster  # attacks stay importable alone
    from poisonlab.fl.aggregators.flame import cosine_distances

    dist = cosine_distances(benign)  # (n, n) numpy, as the clustering rules compute it
    labels = torch.from_numpy(bipartition(dist, linkage))
    off = torch.from_numpy(dist) + torch.eye(len(benign), dtype=torch.float64, device="cpu") * 3.0  # in [0, 2]
    cross = max(0.0, math.acos(min(1.0, max(-1.0, 1.0 - float(off.min())))) - margin)
    mean = benign.mean(dim=0)
    big = benign[larger_cluster(labels, torch.ones(len(benign), dtype=torch.float64, device="cpu")).to(benign.device)]
    cosines = (big @ unit(mean)) / big.norm(dim=1).clamp_min(1e-300)
    far = int(cosines.argmin())
    theta = math.acos(min(1.0, max(-1.0, float(cosines[far]))))
    return rotated(mean, big[far], theta + cross)


@ATTACKS.register("clustering_adaptive", reference="Blades (Li et al. 2023, An Experimental Study of Byzantine-Robust"
                  " Aggregation Schemes in Federated Learning) AttackclippedclusteringAdversary, against clustering"
                  " rules (Sattler et al. 2020; ClippedClustering)")
def clustering_adaptive(scale: float = 10.0, margin: float = 0.1, linkage: str = "single"):
    """Clustering-adapted attack: one row rotated from the benign mean just past the larger benign cluster's edge.

    Every malicious row is scale * (median benign norm) * u, with u the unit vector at angle theta + theta_cross
    from the benign mean, in the plane of the mean and the farthest member of the larger benign cluster.

    theta: the angle between the benign mean and the member of the larger cluster (cosine bi-partition of the
    benign rows, agglomerative with linkage, cut at two) farthest from it; theta_cross = max(0, acos(1 - the
    smallest cosine distance between two benign rows) - margin), an angle no larger than the closest pair's.
    So the row sits just beyond the benign cluster's edge, close enough in cosine distance to join it, and
    drags the cluster's mean away; at theta + theta_cross >= pi it is -mean direction. Blades' adversary
    writes the same vector (a, b coefficients) with the absolute norm 10 and lets the angle drift for each
    further attacker; here every attacker sends the one row and the norm is relative to the benign median
    (clipping rules clip it back to about the median). Benign rows: honest if omniscient, else the
    attackers' own; finite rows only; fewer than two: the rows are 0.
    """
    check_range("scale", scale, 0.0, low_open=True)
    check_range("margin", margin, 0.0, math.pi)
    if linkage not in LINKAGES:
        raise ConfigError(f"clustering_adaptive linkage={linkage!r} is not known; accepted: {', '.join(LINKAGES)}")

    def attack(updates: torch.Tensor, malicious: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        malicious = check(updates, malicious)
        if not bool(malicious.any()):
            return updates.clone()
        benign = finite_rows(benign_rows(updates, malicious, ctx)).double()
        norms = benign.norm(dim=1)
        benign, norms = benign[torch.isfinite(norms)], norms[torch.isfinite(norms)]
        if len(benign) < 2 or float(norms.max()) == 0:
            return rewrite(updates, malicious, torch.zeros(updates.shape[1], device=updates.device))
        row = scale * float(norms.median()) * clustering_row(benign / norms.max(), margin, linkage)
        return rewrite(updates, malicious, row.to(device=updates.device))

    return attack
