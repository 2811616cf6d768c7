"""Checksum-verified downloads of MNIST, Fashion-MNIST and CIFAR-10 for users who are online.

Each file is streamed to a temp file next to its destination while its MD5 is computed
(MD5 is what the datasets' publishers list), compared with the table below, and only then
renamed into place (``os.replace``): an interrupted or tampered download never leaves a
file that a loader would read. A mismatch is a DataError naming the file and both digests.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from poisonlab.errors import DataError, unknown_name


@dataclass(frozen=True)
class Resource:
    """One published file: its name, the mirrors it is served from and its MD5."""

    filename: str
    md5: str
    mirrors: tuple[str, ...]
    part: str  # "train", "test" or "all" (an archive holding both)


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")

#: Published MD5 digests of each dataset's files.
RESOURCES: dict[str, tuple[Resource, ...]] = {
    "mnist": (
        Resource("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", _MNIST_MIRRORS, "train"),
        Resource("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", _MNIST_MIRRORS, "train"),
        Resource("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", _MNIST_MIRRORS, "test"),
        Resource("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", _MNIST_MIRRORS, "test"),
    ),
    "fashion_mnist": (
        Resource("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", _FASHION_MIRRORS, "train"),
        Resource("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", _FASHION_MIRRORS, "train"),
        Resource("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", _FASHION_MIRRORS, "test"),
        Resource("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", _FASHION_MIRRORS, "test"),
    ),
    "cifar10": (
        Resource("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                 ("https://www.cs.toronto.edu/~kriz/",), "all"),
    ),
}

_CHUNK = 1 << 20


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of a file's bytes, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: str | os.PathLike, md5: str, timeout: float = 60.0) -> Path:
    """Download url to dest: stream to a temp file, check its MD5, then rename atomically.

    Raises DataError on a checksum mismatch (the temp file is removed, dest is untouched).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(_CHUNK), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != md5.lower():
            raise DataError(f"checksum mismatch for {dest.name} from {url}: expected md5 {md5},"
                            f" got {h.hexdigest()}; the file was not saved")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def _fetch_any(res: Resource, dest: Path) -> Path:
    """Try each mirror in turn; DataError listing the failures if none works."""
    failures = []
    for base in res.mirrors:
        try:
            return fetch(base + res.filename, dest, res.md5)
        except (urllib.error.URLError, OSError) as err:
            failures.append(f"{base}: {getattr(err, 'reason', err)}")
    raise DataError(f"could not download {res.filename} (offline?); tried " + "; ".join(failures))


def download(name: str, data_dir: str | os.PathLike, part: str = "all") -> list[Path]:
    """Download (and verify) the files of dataset name for part into data_dir; returns their paths.

    Files already present with the right MD5 are kept. CIFAR-10's archive is extracted
    with tarfile's 'data' filter (no absolute paths, links or devices) into data_dir.
    """
    if name not in RESOURCES:
        raise unknown_name("downloadable dataset", name, RESOURCES)
    data_dir = Path(data_dir)
    paths = []
    for res in RESOURCES[name]:
        if part != "all" and res.part not in (part, "all"):
            continue
        dest = data_dir / res.filename
        if not (dest.is_file() and file_md5(dest) == res.md5):
            _fetch_any(res, dest)
        if res.filename.endswith(".tar.gz"):
            extract_tar(dest, data_dir)
        paths.append(dest)
    return paths


def extract_tar(archive: str | os.PathLike, into: str | os.PathLike) -> None:
    """Extract a tar archive with the 'data' filter (refuses absolute paths, '..', links, devices)."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"cannot extract {archive}: {err}") from None
