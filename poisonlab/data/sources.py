"""Named dataset sources: ``load(name, **params)`` -> Dataset.

Embedded sources ship with scikit-learn and run offline (digits is the default for the
demo). File-based sources (mnist, fashion_mnist, cifar10, image_folder, npz) read from a
directory the user points at; see formats.py for the exact file formats.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn import datasets as skdata

from poisonlab.data.dataset import Dataset
from poisonlab.registry import Registry

SOURCES = Registry("dataset")


def load(name: str, **params) -> Dataset:
    """Load the dataset registered under name with the given parameters."""
    return SOURCES.get(name, **params)


@SOURCES.register("digits", reference="scikit-learn load_digits (UCI optical digits), 1797 images 8x8")
def digits() -> Dataset:
    """scikit-learn's 8x8 handwritten digits as 1x8x8 images in [0, 1] (embedded, offline)."""
    raw = skdata.load_digits()
    x = torch.from_numpy((raw.images / 16.0).astype(np.float32)).unsqueeze(1)
    return Dataset(x, torch.from_numpy(raw.target.astype(np.int64)), tuple(str(i) for i in range(10)), "digits")


def _tabular(raw, name: str) -> Dataset:
    """Min-max scale a scikit-learn tabular bunch to [0, 1] per feature."""
    x = raw.data.astype(np.float32)
    lo, hi = x.min(axis=0), x.max(axis=0)
    x = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
    return Dataset(torch.from_numpy(x), torch.from_numpy(raw.target.astype(np.int64)),
                   tuple(str(c) for c in raw.target_names), name)


@SOURCES.register("breast_cancer", reference="scikit-learn load_breast_cancer (Wisconsin diagnostic), 569 x 30")
def breast_cancer() -> Dataset:
    """Wisconsin breast cancer, 30 features scaled to [0, 1], 2 classes (embedded)."""
    return _tabular(skdata.load_breast_cancer(), "breast_cancer")


@SOURCES.register("wine", reference="scikit-learn load_wine (UCI wine), 178 x 13")
def wine() -> Dataset:
    """UCI wine, 13 features scaled to [0, 1], 3 classes (embedded)."""
    return _tabular(skdata.load_wine(), "wine")
