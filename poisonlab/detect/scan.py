"""SCAn, statistical contamination analyzer (Tang, Wang, Tang & Zhang, "Demon in the Variant: Statistical Analysis
of DNNs for Robust Backdoor Contamination Detection", USENIX Security 2021; the EM steps follow the authors' code
as ported in github.com/vtu81/backdoor-toolbox, other_defenses_tool_box/SCAn.py).

Two-component decomposition: a representation (the input of ``feature_layer``, default the last nn.Linear) is
r = mu + e_c + eps, with the identity vector e_c of its class ~ N(0, S_u) and the within-class variation
eps ~ N(0, S_e), S_e shared by every class.

1. Global model (the paper's Algorithm 1, an EM from Chen et al.'s joint Bayesian face model), fitted on clean
   data: starting from the class means and the residuals, repeat E: e_k = -S_e G_k sum_(i in k) x_i with
   G_k = -(n_k S_u + S_e)^-1 S_u S_e^-1, eps_i = x_i - e_k(i); M: S_u, S_e = the covariances of the e_k(i) and
   the eps_i; until both move less than 1e-5 (at most 100 rounds).
2. Untangling (Algorithm 2), per class of the scanned data with F = S_e^-1: two identity vectors u_1, u_2 and a
   split, by alternating the subgroup means and the assignment of each x to the subgroup nearer in the F
   metric (u_1 F u_1 - u_2 F u_2 - 2 x F (u_1 - u_2) < 0 -> subgroup 1), from a seeded random split.
3. Test statistic: with mu = -S_e G sum_i x_i, G = -(n S_u + S_e)^-1 (the one-identity estimate),
   J = (1/n) sum_i [(x_i - mu) F (x_i - mu) - (x_i - u_g(i)) F (x_i - u_g(i))], the log-likelihood gain of two
   identities over one (the reference's expanded form; tests check the two agree).
4. J is scaled by its largest value, and each class's anomaly index is |J_c - median| / (1.4826 MAD); a class
   whose index exceeds ``threshold`` (e^2, the paper's) and whose J is above the median is infected. One-sided
   (the reference's index is two-sided; a class whose J is unusually small is not contaminated).

Flags: in each infected class, the subgroup whose identity vector is further (F metric) from the clean data's
mean of that class, or the smaller subgroup when the clean data has none of the class (not in the paper, which
names the class; the reference uses clean samples mixed into the scanned set the same way). Score of a sample:
its class's anomaly index (signed: negative below the median) when it is in that subgroup, else 0.

Clean data: ``validation`` (the defender's held-out clean set), labels as given; without it the global model
is fitted on the scanned data itself (details say so; the paper's clean set makes S_u, S_e uncontaminated).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from poisonlab import progress
from poisonlab.data.dataset import Dataset
from poisonlab.detect.base import Detection, require
from poisonlab.detect.features import representations
from poisonlab.detect.registry import DETECTORS
from poisonlab.errors import DataError, check_range
from poisonlab.rng import numpy_rng

EPS = 1e-5
ROUNDS = 100


def global_model(x: np.ndarray, labels: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(S_u, S_e, rounds) of the two-component model fitted by EM on centred representations x (n, m)."""
    counts = np.bincount(labels, minlength=classes).astype(float)
    sums = np.zeros((classes, x.shape[1]))
    np.add.at(sums, labels, x)
    means = sums / np.maximum(counts, 1)[:, None]
    s_u, s_e = np.cov(means[labels], rowvar=False), np.cov(x - means[labels], rowvar=False)
    rounds = 0
    for rounds in range(1, ROUNDS + 1):
        f = np.linalg.pinv(s_e)
        identity = np.stack([s_e @ np.linalg.pinv(counts[k] * s_u + s_e) @ (s_u @ f) @ sums[k] for k in range(classes)])
        last_u, last_e = s_u, s_e
        s_u, s_e = np.cov(identity[labels], rowvar=False), np.cov(x - identity[labels], rowvar=False)
        if np.linalg.norm(s_u - last_u) + np.linalg.norm(s_e - last_e) <= EPS:
            break
    return s_u, s_e, rounds


def find_split(x: np.ndarray, f: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(subgroup mask, u_1, u_2): two identity vectors of the rows of x by alternating means and F-metric assignment."""
    n = len(x)
    group = rng.random(n) >= 0.5
    if n == 1:
        return np.zeros(1, dtype=bool), x[0].copy(), x[0].copy()
    group[0] = group[0] if 0 < group.sum() < n else not group[0]
    u1, u2 = x[group].mean(axis=0), x[~group].mean(axis=0)
    for _ in range(ROUNDS):
        if group.all() or not group.any():
            break
        u1, u2 = x[group].mean(axis=0), x[~group].mean(axis=0)
        bias = u1 @ f @ u1 - u2 @ f @ u2
        new = bias - 2 * (x @ f @ (u1 - u2)) < 0
        if np.array_equal(new, group):
            break
        group = new
    return group, u1, u2


def j_statistic(x: np.ndarray, s_u: np.ndarray, s_e: np.ndarray, group: np.ndarray, u1: np.ndarray,
                   u2: np.ndarray) -> float:
    """J = mean_i [(x_i - mu) F (x_i - mu) - (x_i - u_g(i)) F (x_i - u_g(i))], mu the one-identity estimate."""
    f = np.linalg.pinv(s_e)
    mu = s_e @ np.linalg.pinv(len(x) * s_u + s_e) @ x.sum(axis=0)  # -S_e G sum x, G = -(n S_u + S_e)^-1
    one, two = x - mu, x - np.where(group[:, None], u1, u2)
    return float((np.einsum("ni,ij,nj->n", one, f, one) - np.einsum("ni,ij,nj->n", two, f, two)).mean())


def anomaly_index(j: np.ndarray) -> np.ndarray:
    """Signed MAD anomaly index of J / max(J): (a - median) / (1.4826 median |a - median|)."""
    a = j / max(float(np.max(j)), 1e-300) if np.max(j) > 0 else j
    med = np.median(a)
    mad = 1.4826 * np.median(np.abs(a - med))
    return (a - med) / max(mad, 1e-12)


@DETECTORS.register("scan", reference="Tang et al., Demon in the Variant: Statistical Analysis of DNNs for Robust "
                                       "Backdoor Contamination Detection, USENIX Security 2021")
class SCAn:
    """Two-component decomposition fitted on clean data; per class, J of a two-identity split; MAD test at e^2."""

    inspects = "data"
    requires = ("data", "model")

    def __init__(self, *, threshold: float = math.e ** 2, feature_layer: str | None = None, seed: int = 0):
        self.threshold = check_range("threshold", threshold, 0.0, low_open=True)
        self.feature_layer, self.seed = feature_layer, int(seed)

    def scan(self, *, data: Dataset | None = None, model: nn.Module | None = None, clean=None, validation=None,
             sources=None) -> Detection:
        """Score and flag the training samples of data (labels as given) in the classes found infected."""
        require(self, data=data, model=model)
        reference = validation if validation is not None else data
        if not isinstance(data, Dataset) or not isinstance(reference, Dataset):
            raise DataError("SCAn needs labelled datasets for data and validation; got "
                            f"{type(data).__name__} and {type(reference).__name__}")
        classes = data.num_classes
        reps = representations(data.x, model, self.feature_layer).double().cpu().numpy()
        ref = representations(reference.x, model, self.feature_layer).double().cpu().numpy()
        ref_y, y = reference.y.cpu().numpy(), data.y.cpu().numpy()
        progress.step("SCAn: global model")
        centre = ref.mean(axis=0)
        s_u, s_e, rounds = global_model(ref - centre, ref_y, classes)
        f = np.linalg.pinv(s_e)
        x = reps - reps.mean(axis=0)  # the reference centres the scanned set on its own mean
        ref_x = ref - reps.mean(axis=0)
        j = np.zeros(classes)
        splits = {}
        for c in range(classes):
            idx = np.nonzero(y == c)[0]
            if len(idx) == 0:
                continue
            group, u1, u2 = find_split(x[idx], f, numpy_rng(self.seed, "scan", c))
            j[c] = j_statistic(x[idx], s_u, s_e, group, u1, u2)
            splits[c] = (idx, group, self._poison_side(group, u1, u2, ref_x[ref_y == c], f))
        index = anomaly_index(j)
        infected = [c for c in splits if index[c] > self.threshold]
        scores, flagged = np.zeros(len(y)), np.zeros(len(y), dtype=bool)
        for c, (idx, group, side) in splits.items():
            members = idx[group == side]
            scores[members] = index[c]
            flagged[members] = c in infected
        return Detection(torch.from_numpy(scores), torch.from_numpy(flagged),
                         {"j": j.tolist(), "anomaly_index": index.tolist(), "infected": infected,
                          "threshold": self.threshold, "em_rounds": rounds,
                          "global_model_on": "validation" if validation is not None else "the scanned data"})

    @staticmethod
    def _poison_side(group: np.ndarray, u1: np.ndarray, u2: np.ndarray, clean: np.ndarray, f: np.ndarray) -> bool:
        """Which subgroup (True: group 1) is the contamination: the one further from the clean class mean, else the
        smaller one."""
        if len(clean) == 0:
            return bool(group.sum() <= len(group) / 2)
        m = clean.mean(axis=0)
        return bool((u1 - m) @ f @ (u1 - m) > (u2 - m) @ f @ (u2 - m))
