"""Named dataset sources: ``load(name, **params)`` -> Dataset.

Embedded sources ship with scikit-learn and run offline (digits is the default for the
demo). File-based sources (mnist, fashion_mnist, cifar10, image_folder, npz) read from a
directory the user points at; see formats.py for the exact file formats.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.data.download import download as fetch_dataset
from poisonlab.data.formats import atomic_write_bytes, read_cifar_batch, read_cifar_meta, read_idx, read_npz
from poisonlab.data.registry import SOURCES
from poisonlab.errors import ConfigError, DataError, did_you_mean


MAX_CLASSES = 100_000
"""Most classes a dataset may have (ImageNet-21k has 21,841); labels implying more are a broken file."""


def load(name: str, **params) -> Dataset:
    """Load the dataset registered under name with the given parameters, refusing an empty dataset and
    NaN/Inf features (a model trained on them is NaN; the count and first sample are named)."""
    data = SOURCES.get(name, **params)
    if len(data) == 0:
        raise DataError(f"dataset '{data.name}' holds 0 samples; accepted: a dataset with at least one sample")
    check_finite(data.x, f"dataset '{data.name}'")
    return data


def check_finite(x: torch.Tensor, where: str) -> None:
    """DataError naming how many values of x are NaN/Inf and the first sample holding one."""
    if not x.is_floating_point() or x.numel() == 0:
        return
    bad = ~torch.isfinite(x.reshape(len(x), -1))
    if bool(bad.any()):
        rows = bad.any(dim=1)
        first = int(torch.nonzero(rows)[0])
        raise DataError(f"{where} has {int(bad.sum())} NaN/Inf values in {int(rows.sum())} samples (first:"
                        f" sample {first}); accepted: finite features")


@SOURCES.register("digits", reference="scikit-learn load_digits (UCI optical digits), 1797 images 8x8")
def digits() -> Dataset:
    """scikit-learn's 8x8 handwritten digits as 1x8x8 images in [0, 1] (embedded, offline)."""
    from sklearn import datasets as skdata  # imported when used: scikit-learn takes ~0.7 s to import

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
    from sklearn import datasets as skdata  # imported when used: scikit-learn takes ~0.7 s to import

    return _tabular(skdata.load_breast_cancer(), "breast_cancer")


@SOURCES.register("wine", reference="scikit-learn load_wine (UCI wine), 178 x 13")
def wine() -> Dataset:
    """UCI wine, 13 features scaled to [0, 1], 3 classes (embedded)."""
    from sklearn import datasets as skdata  # imported when used: scikit-learn takes ~0.7 s to import

    return _tabular(skdata.load_wine(), "wine")


# ---------------------------------------------------------------- idx datasets (MNIST, Fashion-MNIST)

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
PARTS = ("train", "test", "all")


def _check_part(name: str, part: str) -> tuple[str, ...]:
    if part not in PARTS:
        raise ConfigError(f"dataset '{name}': part='{part}' is not known; accepted: {', '.join(PARTS)}")
    return ("train", "test") if part == "all" else (part,)


def _data_dir(name: str, data_dir, expected: str) -> Path:
    """data_dir as an existing directory, or a DataError naming it and the files expected there."""
    if data_dir is None:
        raise DataError(f"dataset '{name}' needs data_dir (--data-dir DIR): a directory holding {expected}")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"dataset '{name}': data directory {path} does not exist; expected it to hold {expected}")
    return path


def _find_idx(name: str, folder: Path, stem: str, part: str) -> Path:
    """folder/stem or folder/stem.gz; DataError naming both and the files that are there."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    hint = " (only the test part is here: use part='test', --part test)" \
        if part == "train" and any(n.startswith("t10k") for n in present) else ""
    raise DataError(f"dataset '{name}': no {stem}.gz or {stem} in {folder} for part '{part}';"
                    f" found: {', '.join(present) or 'nothing'}{hint}")


def _idx_part(name: str, folder: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, h, w) float32 in [0, 1] and labels int64 of one idx part."""
    images_path = _find_idx(name, folder, IDX_FILES[part][0], part)
    labels_path = _find_idx(name, folder, IDX_FILES[part][1], part)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images (n, h, w), found {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: expected {len(images)} labels to match {images_path.name},"
                        f" found shape {labels.shape}")
    if len(labels) and int(labels.max()) > 9:
        raise DataError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    x = torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def _idx_dataset(name: str, classes: tuple[str, ...], data_dir, part: str, download: bool) -> Dataset:
    parts = _check_part(name, part)
    expected = ", ".join(f"{s}[.gz]" for p in parts for s in IDX_FILES[p])
    if download and data_dir is not None:
        fetch_dataset(name, data_dir, part)
    folder = _data_dir(name, data_dir, expected)
    loaded = [_idx_part(name, folder, p) for p in parts]
    x = torch.cat([xi for xi, _ in loaded])
    y = torch.cat([yi for _, yi in loaded])
    return Dataset(x, y, classes, name, meta={"source": str(folder), "part": part})


@SOURCES.register("mnist", reference="LeCun, Cortes, Burges: The MNIST database (idx files), 28x28 grey")
def mnist(data_dir: str | None = None, part: str = "train", download: bool = False) -> Dataset:
    """MNIST from idx files (gzip or raw) in data_dir; part 'train', 'test' or 'all'."""
    return _idx_dataset("mnist", MNIST_CLASSES, data_dir, part, download)


@SOURCES.register("fashion_mnist", reference="Xiao, Rasul, Vollgraf 2017: Fashion-MNIST (idx files), 28x28 grey")
def fashion_mnist(data_dir: str | None = None, part: str = "train", download: bool = False) -> Dataset:
    """Fashion-MNIST from idx files (gzip or raw) in data_dir; part 'train', 'test' or 'all'."""
    return _idx_dataset("fashion_mnist", FASHION_CLASSES, data_dir, part, download)


# ---------------------------------------------------------------- CIFAR-10

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR10_DIR = "cifar-10-batches-py"


@SOURCES.register("cifar10", reference="Krizhevsky 2009: Learning multiple layers of features from tiny images"
                                       " (CIFAR-10 python batches), 32x32 colour")
def cifar10(data_dir: str | None = None, part: str = "train", download: bool = False) -> Dataset:
    """CIFAR-10 from its python batches (data_dir is cifar-10-batches-py or its parent), unpickled safely."""
    parts = _check_part("cifar10", part)
    names = [b for p in parts for b in CIFAR10_BATCHES[p]]
    expected = ", ".join(names) + " (and batches.meta)"
    if download and data_dir is not None:
        fetch_dataset("cifar10", data_dir, "all")
    folder = _data_dir("cifar10", data_dir, expected)
    if (folder / CIFAR10_DIR).is_dir():
        folder = folder / CIFAR10_DIR
    missing = [b for b in names if not (folder / b).is_file()]
    if missing:
        raise DataError(f"dataset 'cifar10': {', '.join(missing)} not found in {folder}; expected {expected}")
    batches = [read_cifar_batch(folder / b) for b in names]
    classes = read_cifar_meta(folder / "batches.meta") if (folder / "batches.meta").is_file() else CIFAR10_CLASSES
    x = torch.from_numpy(np.concatenate([b[0] for b in batches])).float().div_(255.0)
    y = torch.from_numpy(np.concatenate([b[1] for b in batches]))
    return Dataset(x, y, tuple(classes), "cifar10", meta={"source": str(folder), "part": part})


# ---------------------------------------------------------------- image folders


def _label_index(label, classes: tuple[str, ...]) -> int:
    if isinstance(label, str) and label in classes:
        return classes.index(label)
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(classes):
        return label
    raise ConfigError(f"label={label!r} is not one of the classes;{did_you_mean(str(label), classes)}"
                      f" accepted: {', '.join(classes)} or an index 0..{len(classes) - 1}")


@SOURCES.register("image_folder", reference="photos in any format PIL reads, padded to square and resized")
def image_folder(path: str | None = None, shape: tuple[int, int, int] | list[int] = (1, 28, 28),
                 label: int | str | None = None, classes: tuple[str, ...] | list[str] | None = None) -> Dataset:
    """Images from path: one sub-folder per class, or (with label) a flat folder all of one class.

    Sub-folder mode: classes default to the sorted sub-folder names; given classes fix the order
    (and may include classes without a folder). Flat mode: every image gets label (a class
    name or index into classes; classes default to (label,) for a name).
    """
    from poisonlab.data.images import image_extensions, ingest_many, list_images  # PIL only when images are read

    if path is None:
        raise DataError("dataset 'image_folder' needs path: a folder of class sub-folders of images")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset 'image_folder': folder {root} does not exist;"
                        " expected class sub-folders of images, or images with a given label")
    classes = tuple(str(c) for c in classes) if classes is not None else None
    if label is not None:
        if classes is None:
            if not isinstance(label, str):
                raise ConfigError(f"label={label!r} is an index, so classes=[...] is needed to name the classes")
            classes = (label,)
        files = list_images(root)
        labels = [_label_index(label, classes)] * len(files)
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(f"dataset 'image_folder': {root} has no class sub-folders;"
                            " for a flat folder of one class pass label=... (and classes=...)")
        if classes is None:
            classes = tuple(f.name for f in folders)
        files, labels = [], []
        for folder in folders:
            if folder.name not in classes:
                raise DataError(f"dataset 'image_folder': sub-folder {folder} is not one of the classes;"
                                f" accepted: {', '.join(classes)}")
            found = list_images(folder)
            files += found
            labels += [classes.index(folder.name)] * len(found)
    if not files:
        raise DataError(f"dataset 'image_folder': no image files in {root}"
                        f" (accepted suffixes: {', '.join(sorted(image_extensions())[:12])}, ...)")
    x = ingest_many(files, shape)
    return Dataset(x, torch.tensor(labels, dtype=torch.int64), classes, root.name,
                   meta={"source": str(root), "files": [str(f) for f in files]})


# ---------------------------------------------------------------- npz


def _images_nchw(x: np.ndarray) -> np.ndarray:
    """(n, h, w) -> (n, 1, h, w); (n, h, w, c) with c in 1, 3, 4 and a larger h -> (n, c, h, w)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return x.transpose(0, 3, 1, 2)
    return x


@SOURCES.register("npz", reference="numpy .npz archive with arrays x and y (allow_pickle=False)")
def npz(path: str | None = None, x_key: str = "x", y_key: str = "y",
        classes: tuple[str, ...] | list[str] | None = None) -> Dataset:
    """A dataset from an npz file: x (n, f), (n, h, w), (n, c, h, w) or (n, h, w, c); y labels.

    uint8 images are scaled by 1/255; float images must already lie in [0, 1]. String labels
    are mapped to their sorted unique values; class names come from classes, else from an
    array named 'classes' in the file, else '0'..'k-1'.
    """
    if path is None:
        raise DataError(f"dataset 'npz' needs path: an .npz file holding arrays '{x_key}' and '{y_key}'")
    path = Path(path).expanduser()
    arrays = read_npz(path, (x_key, y_key))
    x, y = _images_nchw(arrays[x_key]), arrays[y_key]
    if x.ndim not in (2, 4):
        raise DataError(f"{path}: '{x_key}' has shape {x.shape}; accepted: (n, f), (n, h, w), (n, c, h, w), (n, h, w, c)")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype.kind not in "fiu":
        raise DataError(f"{path}: '{x_key}' has dtype {x.dtype}; accepted: numeric")
    x = x.astype(np.float32)
    check_finite(torch.from_numpy(x), f"{path}: '{x_key}'")
    if x.ndim == 4 and x.size and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise DataError(f"{path}: float images in '{x_key}' span [{x.min():.3g}, {x.max():.3g}]; accepted: [0, 1] or uint8")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: '{y_key}' has shape {y.shape}; expected ({len(x)},) to match '{x_key}'")
    if y.dtype.kind in "US":
        names, y = np.unique(y, return_inverse=True)
        classes = classes or tuple(str(n) for n in names)
    elif y.dtype.kind not in "iu":
        raise DataError(f"{path}: '{y_key}' has dtype {y.dtype}; accepted: integer or string labels")
    elif len(y) and not 0 <= int(y.min()) <= int(y.max()) < MAX_CLASSES:
        raise DataError(f"{path}: labels in '{y_key}' span [{int(y.min())}, {int(y.max())}]; accepted: class"
                        f" indices 0..{MAX_CLASSES - 1}")
    if classes is None:
        classes = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else \
            tuple(str(i) for i in range(int(y.max()) + 1 if len(y) else 0))
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{path}: {len(classes)} class names; accepted: at most {MAX_CLASSES}")
    return Dataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), tuple(classes), path.stem,
                   meta={"source": str(path), "path": str(path)})


def save_npz(data: Dataset, path: str | os.PathLike) -> Path:
    """Write a Dataset as a compressed npz (x float32, y int64, classes) atomically; npz() reads it back."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"save_npz path {path} should end in .npz")
    buf = io.BytesIO()
    np.savez_compressed(buf, x=data.x.numpy(), y=data.y.numpy(), classes=np.array(data.classes, dtype=str))
    atomic_write_bytes(path, buf.getvalue())
    return path
