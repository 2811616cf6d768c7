"""Activation clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by
Activation Clustering", AAAI SafeAI workshop 2019, arXiv:1811.03728, 2018).

Per class: penultimate activations (the input of ``feature_layer``, default the last nn.Linear) -> reduce to ``dims`` (10) dimensions with PCA or FastICA
-> 2-means. Which cluster is poisoned is decided by one of the paper's analyses:

- ``smaller``: the smaller cluster of every class;
- ``relative_size``: the smaller cluster when its share of the class is <= ``size_threshold``
  (0.35);
- ``silhouette``: the smaller cluster when the class's mean silhouette coefficient
  s = mean_i (b_i - a_i) / max(a_i, b_i) is >= ``silhouette_threshold`` (two clusters fit a
  poisoned class well, a clean class poorly);
- ``distance``: ART's ``analyze_by_distance`` (Adversarial Robustness Toolbox, ClusteringAnalyzer): with
  m_c the median activation of class c and m_c,j that of its cluster j, cluster j is poisonous if for
  some other class k, |m_c,j - m_k| < |m_c,j - m_c| while the class's other cluster stays nearer its own
  class (|m_c,j' - m_k| > |m_c,j' - m_c|): relabeled poison sits nearer the class it came from. ART
  measures the medians in each class's own reduced space (``distance_space="reduced"``), which are
  separate PCA/ICA fits, so the class medians are not in one coordinate system;
  ``distance_space="activations"`` (default) measures them on the activations themselves. Score: the
  cluster's |m_c,j - m_c| / min_k |m_c,j - m_k| (above 1: nearer another class than its own).

Optional exclusionary reclassification (the paper's Section 4): for each suspicious class,
fit a classifier on all data except one cluster and classify that cluster; a cluster mostly
classified as its own label is legitimate, one classified as another label (ratio
own / best-other < 1) is poisonous. Affordable approximation used here: the classifier is a
multinomial logistic regression on the same penultimate activations, not a retrained network.

poisonlab extension (``orient=True``, not in the paper): the paper assumes the poison is the
smaller cluster. An all-to-one backdoor at 10% of the training set makes the target class about
half poison, so size cannot tell; orient=True names as suspicious the cluster whose raw inputs lie
nearer (median nearest-neighbour distance) to other classes, since dirty-label poison is
relabeled from them.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.features import poisoned_side, representations
from poisonlab.detect.registry import DETECTORS
from poisonlab.errors import ConfigError, check_range
from poisonlab.rng import derive_seed, generator

ANALYSES = ("smaller", "relative_size", "silhouette", "distance")
DISTANCE_SPACES = ("activations", "reduced")
REDUCERS = ("pca", "ica")


def reduce_dims(acts: np.ndarray, dims: int, method: str, seed: int) -> np.ndarray:
    """acts projected to min(dims, n-1, d) dimensions with PCA or FastICA (seeded)."""
    k = max(1, min(dims, acts.shape[0] - 1, acts.shape[1]))
    if method == "pca":
        return PCA(n_components=k, random_state=seed).fit_transform(acts)
    return FastICA(n_components=k, random_state=seed, max_iter=400, tol=1e-3,
                   whiten="unit-variance").fit_transform(acts)


def two_means(z: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """(labels with 1 = the smaller cluster (ties: cluster 1), mean silhouette) of a seeded 2-means on z."""
    labels = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(z)
    if np.bincount(labels, minlength=2)[1] > np.bincount(labels, minlength=2)[0]:
        labels = 1 - labels
    sil = float(silhouette_score(z, labels, random_state=seed, sample_size=min(len(z), 3000))) \
        if 0 < labels.sum() < len(labels) else 0.0
    return labels, sil


@DETECTORS.register("activation_clustering",
                    reference="Chen et al., Detecting Backdoor Attacks on DNNs by Activation Clustering, 2018")
class ActivationClustering:
    """Per class, PCA/ICA to 10 dims then 2-means on activations; smaller / relative-size / silhouette analysis."""

    inspects = "data"
    requires = ("data",)

    def __init__(self, *, dims: int = 10, reduce: str = "pca", analysis: str = "silhouette",
                 size_threshold: float = 0.35, silhouette_threshold: float = 0.3,
                 exclusionary: bool = False, orient: bool = False, distance_space: str = "activations",
                 feature_layer: str | None = None, seed: int = 0):
        if distance_space not in DISTANCE_SPACES:
            raise ConfigError(f"distance_space='{distance_space}' is not known; accepted: {', '.join(DISTANCE_SPACES)}")
        self.distance_space = distance_space
        if reduce not in REDUCERS:
            raise ConfigError(f"reduce='{reduce}' is not known; accepted: {', '.join(REDUCERS)}")
        if analysis not in ANALYSES:
            raise ConfigError(f"analysis='{analysis}' is not known; accepted: {', '.join(ANALYSES)}")
        self.dims = int(check_range("dims", dims, 1))
        self.reduce, self.analysis = reduce, analysis
        self.size_threshold = check_range("size_threshold", size_threshold, 0.0, 0.5)
        self.silhouette_threshold = check_range("silhouette_threshold", silhouette_threshold, -1.0, 1.0)
        self.exclusionary, self.orient, self.seed = bool(exclusionary), bool(orient), int(seed)
        self.feature_layer = feature_layer  # module whose input is the features; None: the last nn.Linear

    def _suspicious(self, share: float, sil: float) -> bool:
        if self.analysis == "distance":
            return False  # decided over all classes at once (_by_distance)
        if self.analysis == "smaller":
            return True
        if self.analysis == "relative_size":
            return share <= self.size_threshold
        return sil >= self.silhouette_threshold

    def scan(self, *, data: Dataset | None = None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Score each sample of data on model activations (raw inputs if model is None).

        Score: for a sample in the suspicious cluster of its class (the smaller one, or with
        orient=True the one nearer to other classes), 1 - share of that cluster (size analyses) or
        the class silhouette (silhouette analysis); 0 otherwise.
        """
        require(self, data=data)
        acts = representations(data.x, model, self.feature_layer).double().cpu().numpy()  # to scikit-learn
        y = data.y.cpu().numpy()
        scores = np.zeros(len(data))
        flagged = np.zeros(len(data), dtype=bool)
        clusters = np.zeros(len(data), dtype=np.int64)
        per_class, spaces = {}, {}
        for c in range(data.num_classes):
            idx = np.nonzero(y == c)[0]
            if len(idx) < 3:
                continue
            seed = derive_seed(self.seed, "activation_clustering", c)
            z = reduce_dims(acts[idx], self.dims, self.reduce, seed % 2**32)
            labels, sil = two_means(z, seed % 2**32)
            spaces[c] = (idx, labels, acts[idx] if self.distance_space == "activations" else z)
            if self.orient and not poisoned_side(data.x, data.y, torch.from_numpy(idx).to(data.y.device),
                                                 torch.from_numpy(labels == 1).to(data.y.device),
                                                 c, generator(self.seed, "activation_clustering", c)):
                labels = 1 - labels  # the cluster nearer to other classes is the suspicious one
            share = float(labels.mean())
            clusters[idx] = labels
            small = idx[labels == 1]
            scores[small] = sil if self.analysis == "silhouette" else 1.0 - share
            suspicious = self._suspicious(share, sil)
            per_class[c] = {"n": int(len(idx)), "suspicious_share": share, "silhouette": sil, "suspicious": suspicious}
            if suspicious:
                flagged[small] = True
        if self.analysis == "distance":
            self._by_distance(spaces, scores, flagged, per_class)
        if self.exclusionary:
            self._reclassify(acts, y, clusters, flagged, per_class)
        return Detection(torch.from_numpy(scores), torch.from_numpy(flagged), {"per_class": per_class})

    @staticmethod
    def _by_distance(spaces: dict, scores, flagged, per_class) -> None:
        """ART's analyze_by_distance over every clustered class (updates scores, flagged, per_class in place)."""
        centre = {c: np.median(v, axis=0) for c, (_, _, v) in spaces.items()}
        for c, (idx, labels, v) in spaces.items():
            poison, ratios = [], []
            for j in (0, 1):
                if not (labels == j).any() or not (labels == 1 - j).any():
                    ratios.append(0.0)
                    continue
                own = np.median(v[labels == j], axis=0)
                other = np.median(v[labels == 1 - j], axis=0)
                to_own, other_to_own = np.linalg.norm(own - centre[c]), np.linalg.norm(other - centre[c])
                near = [k for k in centre if k != c and np.linalg.norm(own - centre[k]) < to_own
                        and np.linalg.norm(other - centre[k]) > other_to_own]
                nearest = min((np.linalg.norm(own - centre[k]) for k in centre if k != c), default=np.inf)
                ratios.append(float(to_own / max(nearest, 1e-12)))
                scores[idx[labels == j]] = ratios[-1]
                if near:
                    poison.append(j)
            flagged[idx] = np.isin(labels, poison)
            per_class[c].update(suspicious=bool(poison), distance_ratio={"larger": ratios[0], "smaller": ratios[1]},
                                poisonous_clusters=[["larger", "smaller"][j] for j in poison])

    def _reclassify(self, acts, y, clusters, flagged, per_class) -> None:
        """Exclusionary reclassification of each suspicious class's clusters (updates flagged in place)."""
        for c, info in per_class.items():
            if not info["suspicious"]:
                continue
            ratios = []
            for k in (0, 1):
                out = (y == c) & (clusters == k)
                clf = LogisticRegression(max_iter=300).fit(acts[~out], y[~out])
                counts = np.bincount(clf.predict(acts[out]), minlength=int(y.max()) + 1).astype(float)
                own = counts[c]
                counts[c] = 0
                ratios.append(own / max(counts.max(), 1.0))
            idx = np.nonzero(y == c)[0]
            flagged[idx] = False
            worst = int(np.argmin(ratios))
            if ratios[worst] < 1.0:
                flagged[idx[clusters[idx] == worst]] = True
            info["reclassification_ratio"] = {"larger": ratios[0], "smaller": ratios[1]}
