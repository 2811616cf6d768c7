"""Content hashes: SHA-256 of a file, and of each sample of a dataset.

The per-sample hash is shared by the ``poisonlab poison`` manifest and the provenance manifests
(``detect.provenance``), so the two can be compared: a sample's float32 little-endian C-order bytes
followed by its int64 little-endian label bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def sample_hashes(x, y) -> list[str]:
    """Hex SHA-256 of each sample: x[i] as float32 little-endian C-order bytes, then y[i] as int64 bytes.

    x and y: numpy arrays or tensors (n, ...) and (n,).
    """
    x = np.ascontiguousarray(np.asarray(x), dtype="<f4")
    y = np.ascontiguousarray(np.asarray(y), dtype="<i8")
    return [hashlib.sha256(x[i].tobytes() + y[i].tobytes()).hexdigest() for i in range(len(y))]


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
