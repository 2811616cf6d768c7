"""Exact readers and writers for the dataset file formats: idx, CIFAR-10 python batches, npz.

- idx (LeCun et al., MNIST): big-endian header ``0 0 <dtype code> <ndim>`` then ndim
  uint32 sizes, then the values; gzip-compressed or raw (detected from the bytes, not the name).
- CIFAR-10 python batches (Krizhevsky, 2009): a pickled dict {data: uint8 (n, 3072),
  labels: list of n ints, ...}. Read through ``SafeUnpickler``, which refuses every global
  except numpy's array-reconstruction names, so a crafted file cannot run code.
- npz: ``np.load(..., allow_pickle=False)``.
Every problem is a DataError naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from poisonlab.rundir import atomic_write_bytes  # noqa: F401  (re-exported: save_idx, save_npz use it)
from poisonlab.errors import DataError

# idx dtype codes -> big-endian numpy dtypes
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"




def _open_maybe_gzip(path: Path):
    """A binary stream of the file's content, decompressing if it starts with the gzip magic."""
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == _GZIP_MAGIC else open(path, "rb")


# ---------------------------------------------------------------- idx

#: Largest idx payload read (bytes); a header declaring more is refused before reading.
MAX_IDX_BYTES = 1 << 32


def _read_at_most(f, limit: int) -> bytes:
    """Up to limit bytes, in chunks, so memory follows the real content, not a header's claim."""
    chunks, left = [], limit
    while left > 0:
        block = f.read(min(left, 1 << 24))
        if not block:
            break
        chunks.append(block)
        left -= len(block)
    return b"".join(chunks)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (gzip or raw) into a numpy array in native byte order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"idx file {path} does not exist")
    try:
        with _open_maybe_gzip(path) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0":
                raise DataError(f"{path} is not an idx file: magic number {magic.hex() or '(empty)'}"
                                " should start with 0000 (expected e.g. 00000803 for images, 00000801 for labels)")
            code, ndim = magic[2], magic[3]
            if code not in IDX_DTYPES:
                raise DataError(f"{path}: unknown idx dtype code 0x{code:02x};"
                                f" accepted: {', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}")
            if ndim == 0:
                raise DataError(f"{path}: idx header declares 0 dimensions")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated idx header: expected {ndim} dimension sizes")
            dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
            dtype = IDX_DTYPES[code]
            expected = math.prod(dims) * dtype.itemsize
            if expected > MAX_IDX_BYTES:
                raise DataError(f"{path}: idx header declares shape {dims} ({expected} bytes),"
                                f" over the {MAX_IDX_BYTES} byte limit")
            body = _read_at_most(f, expected + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
        raise DataError(f"{path}: corrupt or truncated gzip stream ({err})") from None
    what = "pixel data" if len(dims) >= 3 else "data"
    if len(body) != expected:
        found = f"found {len(body)}" if len(body) < expected else "found more (trailing bytes)"
        raise DataError(f"{path}: expected {expected} bytes of {what} for shape {dims}, {found}")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------- CIFAR batches

# The only globals a CIFAR-10 batch needs: numpy's array and dtype reconstruction, as
# (module, name) pairs; numpy 2 writes numpy._core, numpy 1 and python 2 files numpy.core.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


def _allowed_global(module: str, name: str):
    """The numpy object for an allowed (module, name), resolved without importing by name; else None."""
    if (module, name) not in _ALLOWED:
        return None
    if module == "numpy":
        return np.ndarray if name == "ndarray" else np.dtype
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    return multiarray._reconstruct if name == "_reconstruct" else numeric._frombuffer


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that builds only plain containers and numpy arrays; every other global is refused."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str):
        obj = _allowed_global(module, name)
        if obj is None:
            raise DataError(f"refusing to unpickle {module}.{name} from {self.source}"
                            " (only dicts, lists, bytes, strings, numbers and numpy arrays are accepted)")
        return obj

    def persistent_load(self, pid):
        raise DataError(f"refusing to unpickle a persistent id from {self.source}")


def safe_unpickle(path: str | os.PathLike):
    """Unpickle a data file with SafeUnpickler; DataError for anything unsafe or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pickle file {path} does not exist")
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise DataError(f"{path}: corrupt gzip stream ({err})") from None
    try:
        return SafeUnpickler(io.BytesIO(data), str(path)).load()
    except DataError:
        raise
    except Exception as err:  # a corrupt pickle raises many kinds of error
        raise DataError(f"{path} is not a readable pickle: {type(err).__name__}: {err}") from None


def _text_keys(obj: dict) -> dict:
    """Dict keys as str (python 2 pickles may give bytes)."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batch(path: str | os.PathLike, image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10/100 python batch -> (x uint8 (n, 3, 32, 32), y int64 (n,)), checked."""
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict batch, found {type(batch).__name__}")
    batch = _text_keys(batch)
    label_key = "labels" if "labels" in batch else "fine_labels"
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: batch lacks 'data' or 'labels'; found keys {sorted(map(str, batch))}")
    data, labels = batch["data"], batch[label_key]
    per_image = 3 * image_size * image_size
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != per_image:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' should be a uint8 array of shape (n, {per_image}),"
                        f" found {type(data).__name__} {getattr(data, 'dtype', '')} {shape}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'labels' is not a list of integers") from None
    if y.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but labels of shape {y.shape}")
    return data.reshape(-1, 3, image_size, image_size), y


def read_cifar_meta(path: str | os.PathLike) -> list[str]:
    """Class names from a CIFAR batches.meta file (key label_names)."""
    meta = safe_unpickle(path)
    meta = _text_keys(meta) if isinstance(meta, dict) else {}
    names = meta.get("label_names")
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"{path}: expected a dict with 'label_names' (a list of strings)")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


# ---------------------------------------------------------------- npz


#: Largest array read from an npz/npy file (bytes): a header declaring more is refused before allocation.
MAX_ARRAY_BYTES = 1 << 34


def check_npy_header(f, where: str, stored_bytes: int | None = None, array: str | None = None
                     ) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the .npy header at f's position, refusing object dtypes, shapes over
    MAX_ARRAY_BYTES and (stored_bytes: the member's declared size) shapes larger than the data stored.

    numpy's reader allocates the whole declared array before reading a zip member, so a 200-byte file
    declaring shape (10**12,) would otherwise ask for terabytes; the header is read alone first.
    """
    of = f" (array '{array}')" if array else ""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise DataError(f"{where} is not a readable .npy array{of}: {err}") from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds a pickled object array; refusing to unpickle it{of}")
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise DataError(f"{where}: the header declares shape {shape}{of}; accepted: non-negative sizes")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise DataError(f"{where}: the header declares shape {shape} ({nbytes} bytes){of}; accepted: at most"
                        f" {MAX_ARRAY_BYTES} bytes")
    if stored_bytes is not None and nbytes > stored_bytes:
        raise DataError(f"{where}: the header declares shape {shape} ({nbytes} bytes){of} but only"
                        f" {stored_bytes} bytes are stored; the file is truncated or crafted")
    return shape, dtype


def _check_npz_members(path: Path, names: list[str]) -> None:
    """check_npy_header on each named member of the npz archive at path."""
    with zipfile.ZipFile(path) as zf:
        for name in names:
            info = zf.getinfo(f"{name}.npy")
            with zf.open(info) as f:
                check_npy_header(f, str(path), info.file_size, array=name)


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """One .npy array, its header checked first (check_npy_header), loaded with allow_pickle=False."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npy file {path} does not exist")
    with open(path, "rb") as f:
        check_npy_header(f, str(path), path.stat().st_size)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path} is not a readable .npy array: {err}") from None


def read_npz(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of an npz file, loaded with allow_pickle=False (object arrays refused), each
    member's header checked before numpy allocates what it declares (check_npy_header)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist")
    with open(path, "rb") as f:
        if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise DataError(f"{path} is not a readable npz file: it is not a zip archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataError(f"{path}: no array named {', '.join(map(repr, missing))};"
                                f" found {', '.join(map(repr, npz.files)) or 'none'}")
            wanted = [k for k in npz.files if k in keys or k == "classes"]
            _check_npz_members(path, wanted)
            return {k: npz[k] for k in wanted}
    except DataError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DataError(f"{path}: holds a pickled object array; refusing to unpickle it") from None
        raise DataError(f"{path} is not a readable npz file: {err}") from None
    except (OSError, EOFError, zlib.error, KeyError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} is not a readable npz file: {err}") from None
