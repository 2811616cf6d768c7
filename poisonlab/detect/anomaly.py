"""Anomaly detection on raw features or model embeddings (higher score = more anomalous).

Methods (``method=``):
- ``zscore``: per-feature z = (x - mean) / std over the scanned set; score = max_j |z_j|; flag score >
  ``threshold`` (3 by default: the classic three-sigma rule).
- ``kmeans``: distance to the nearest of ``k`` k-means centroids (Lloyd 1982; scikit-learn).
- ``dbscan``: Ester et al., KDD 1996: points that are not density-reachable are noise (flagged);
  score = distance to the ``min_samples``-th nearest neighbour (the core distance). eps defaults to
  the (1 - contamination) quantile of that distance.
- ``isolation_forest``: Liu, Ting & Zhou, ICDM 2008; score = -score_samples (mean path length).
- ``autoencoder``: reconstruction error ||x - g(f(x))||^2 / d of a small MLP autoencoder trained
  on the scanned set (Sakurada & Yairi 2014).
Except z-score and DBSCAN, the top ``contamination`` fraction is flagged. Features are
standardised first; model embeddings are the input of ``feature_layer`` (default: the last nn.Linear); ``per_class=True`` runs the method inside each class separately.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import DBSCAN, KMeans
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, flag_top_fraction, require
from poisonlab.detect.features import representations, standardize
from poisonlab.detect.registry import DETECTORS
from poisonlab.device import as_tensor, host
from poisonlab.errors import ConfigError, check_range
from poisonlab.models import init_parameters
from poisonlab.rng import derive_seed, generator

METHODS = ("zscore", "kmeans", "dbscan", "isolation_forest", "autoencoder")


@DETECTORS.register("anomaly", reference="z-score; k-means; DBSCAN (Ester 1996); isolation forest (Liu 2008); autoencoder")
class Anomaly:
    """Anomaly scores on raw features or embeddings: z-score, k-means distance, DBSCAN, isolation forest, autoencoder.

    One score per sample by the chosen method; see the module docstring for the formulas.
    """

    inspects = "data"
    requires = ("data",)

    def __init__(self, *, method: str = "isolation_forest", contamination: float = 0.1, per_class: bool = False,
                 threshold: float = 3.0, k: int = 10, eps: float | None = None, min_samples: int = 5,
                 hidden: int = 16, epochs: int = 200, feature_layer: str | None = None, seed: int = 0):
        if method not in METHODS:
            raise ConfigError(f"method='{method}' is not known; accepted: {', '.join(METHODS)}")
        self.method, self.per_class = method, bool(per_class)
        self.contamination = check_range("contamination", contamination, 0.0, 0.5)
        self.threshold, self.k = float(threshold), int(check_range("k", k, 1))
        self.eps, self.min_samples = eps, int(check_range("min_samples", min_samples, 1))
        self.hidden, self.epochs, self.seed = int(hidden), int(epochs), int(seed)
        self.feature_layer = feature_layer  # module whose input is the features; None: the last nn.Linear

    def scan(self, *, data: Dataset | torch.Tensor | None = None, model: nn.Module | None = None, clean=None,
             validation=None, sources=None) -> Detection:
        """Score each sample of data (a Dataset or a features tensor) on raw features or model embeddings."""
        require(self, data=data)
        x = data.x if isinstance(data, Dataset) else as_tensor(data)
        feats = representations(x, model, self.feature_layer).double()
        groups = [torch.arange(len(feats), device=feats.device)]
        if self.per_class and isinstance(data, Dataset):
            groups = [torch.nonzero(data.y == c).flatten() for c in range(data.num_classes)]
        scores = torch.zeros(len(feats), dtype=torch.float64, device=feats.device)
        flagged = torch.zeros(len(feats), dtype=torch.bool, device=feats.device)
        for key, idx in enumerate(groups):
            if len(idx) < 2:
                continue
            s, f = self._score(standardize(feats[idx])[0], derive_seed(self.seed, "anomaly", key) % 2**32)
            scores[idx], flagged[idx] = s.to(feats.device), f.to(feats.device)
        return Detection(scores, flagged, {"method": self.method, "per_class": self.per_class})

    def _score(self, z: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, flags) of one group of standardised features."""
        if self.method == "zscore":
            s = z.abs().max(dim=1).values
            return s, s > self.threshold
        a = z.cpu().numpy()  # scikit-learn estimators run on the CPU
        if self.method == "kmeans":
            km = KMeans(n_clusters=min(self.k, len(a)), n_init=4, random_state=seed).fit(a)
            s = torch.from_numpy(np.min(km.transform(a), axis=1))
        elif self.method == "dbscan":
            return self._dbscan(a)
        elif self.method == "isolation_forest":
            s = torch.from_numpy(-IsolationForest(random_state=seed).fit(a).score_samples(a))
        else:
            s = self._autoencoder(z.float(), seed)
        return s, flag_top_fraction(s, self.contamination)

    def _dbscan(self, a: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(self.min_samples, len(a) - 1)
        dist = NearestNeighbors(n_neighbors=k + 1).fit(a).kneighbors(a)[0][:, -1]
        eps = self.eps if self.eps is not None else float(np.quantile(dist, 1 - self.contamination))
        labels = DBSCAN(eps=max(eps, 1e-12), min_samples=self.min_samples).fit_predict(a)
        return torch.from_numpy(dist), torch.from_numpy(labels == -1)

    def _autoencoder(self, z: torch.Tensor, seed: int) -> torch.Tensor:
        d = z.shape[1]
        with host():  # built and initialised on the CPU from the seed, then moved to the features' device
            net = nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, max(2, self.hidden // 4)),
                                nn.ReLU(), nn.Linear(max(2, self.hidden // 4), self.hidden), nn.ReLU(),
                                nn.Linear(self.hidden, d))
            init_parameters(net, generator(seed, "autoencoder"))
        net = net.to(z.device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(self.epochs):
            opt.zero_grad(set_to_none=True)
            loss = (net(z) - z).pow(2).mean()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return (net(z) - z).pow(2).mean(dim=1).double()
