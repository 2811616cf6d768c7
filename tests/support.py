"""Helpers the tests share: writers of the exact file formats the loaders read, and history comparison.

They live here, not in the package: poisonlab reads idx files and CIFAR batches, it never writes them.
"""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import torch
import torch.nn.functional as F

from poisonlab.data.formats import IDX_DTYPES
from poisonlab.errors import DataError
from poisonlab.rundir import atomic_write_bytes


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write array as an idx file (gzip-compressed if the name ends in .gz), atomically."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("=").str: code for code, dt in IDX_DTYPES.items()}
    key = array.dtype.newbyteorder("=").str
    if key not in codes:
        raise DataError(f"cannot write dtype {array.dtype} as idx; accepted: uint8, int8, int16, int32, float32, float64")
    if array.ndim == 0 or array.ndim > 255:
        raise DataError(f"cannot write a {array.ndim}-d array as idx; accepted: 1 to 255 dimensions")
    code = codes[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)


def write_cifar_batch(path: str | os.PathLike, x: np.ndarray, y: np.ndarray, label: str = "batch") -> None:
    """Write uint8 (n, 3, h, w) images and labels as a CIFAR python batch (plain dict pickle)."""
    x = np.asarray(x, dtype=np.uint8)
    batch = {"batch_label": label, "labels": [int(v) for v in y], "data": x.reshape(len(x), -1),
             "filenames": [f"{i}.png" for i in range(len(x))]}
    atomic_write_bytes(path, pickle.dumps(batch, protocol=4))


def history_without_times(history: list) -> list[dict]:
    """The history as dicts without the wall-clock field: what determinism and resume tests compare."""
    return [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in history]


def assert_grads_match_autograd(mine, logits_of, params, y, w) -> None:
    """Hand-written gradients equal autograd's for sum of w * CE(logits_of(leaves), y) over clients and samples."""
    leaves = [p.clone().requires_grad_() for p in params]
    logits = logits_of(leaves)
    loss = (F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none") * w.reshape(-1)).sum()
    expected = torch.autograd.grad(loss, leaves)
    assert len(mine) == len(expected)
    for a, b in zip(mine, expected):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
