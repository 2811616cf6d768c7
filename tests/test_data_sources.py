"""Dataset sources: the real MNIST test set and photos, and small files written in each exact format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from poisonlab.data import load
from tests.support import write_cifar_batch, write_idx
from poisonlab.data.sources import CIFAR10_CLASSES, FASHION_CLASSES, save_npz
from poisonlab.errors import ConfigError, DataError
from poisonlab.rng import numpy_rng

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------- real data


def test_real_mnist_test_set(mnist_dir):
    data = load("mnist", data_dir=str(mnist_dir), part="test")
    assert data.x.shape == (10000, 1, 28, 28) and data.x.dtype == torch.float32
    assert data.class_counts().tolist() == MNIST_TEST_COUNTS
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
    assert data.classes == tuple(str(i) for i in range(10))


def test_real_mnist_missing_train_part_says_what_to_do(mnist_dir):
    with pytest.raises(DataError, match=r"no train-images-idx3-ubyte.gz or train-images-idx3-ubyte in .*mnist"
                                        r" for part 'train'; found: t10k-images.*use part='test', --part test"):
        load("mnist", data_dir=str(mnist_dir))


def test_real_photos_load_as_image_folder():
    root = shared_path("poison-images")
    grey = load("image_folder", path=str(root), shape=(1, 28, 28))
    colour = load("image_folder", path=str(root), shape=(3, 32, 32))
    assert grey.classes == colour.classes == ("embraer-190", "rutan-boomerang", "test-aircraft")
    assert grey.class_counts().tolist() == colour.class_counts().tolist() == [11, 27, 5]
    assert grey.x.shape == (43, 1, 28, 28) and colour.x.shape == (43, 3, 32, 32)
    assert any(f.endswith("rb-14.webp") for f in colour.meta["files"])
    # the classic external-poison set: the Boomerang photos all labelled 'bird' among CIFAR-10's classes
    birds = load("image_folder", path=str(root / "rutan-boomerang"), shape=(3, 32, 32),
                 label="bird", classes=CIFAR10_CLASSES)
    assert len(birds) == 27 and birds.y.unique().tolist() == [2] and birds.classes == CIFAR10_CLASSES


# ---------------------------------------------------------------- idx sources on written files


def _write_idx_part(folder: Path, prefix: str, n: int, seed: int, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = numpy_rng(seed, "idx", prefix)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_sources_parts(tmp_path, name):
    train = _write_idx_part(tmp_path, "train", 7, 0, gz=True)
    test = _write_idx_part(tmp_path, "t10k", 4, 1, gz=False)  # raw files work too
    for part, parts in (("train", [train]), ("test", [test]), ("all", [train, test])):
        data = load(name, data_dir=str(tmp_path), part=part)
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        assert torch.equal(data.x, torch.from_numpy(images).float().div(255).unsqueeze(1))
        assert data.y.tolist() == labels.tolist() and data.name == name
    assert load(name, data_dir=str(tmp_path), part="test").classes == \
        (FASHION_CLASSES if name == "fashion_mnist" else tuple("0123456789"))


def test_idx_source_errors(tmp_path):
    with pytest.raises(DataError, match=r"dataset 'mnist': data directory .*nowhere does not exist; expected it to hold"
                                        r" t10k-images-idx3-ubyte\[.gz\], t10k-labels-idx1-ubyte\[.gz\]"):
        load("mnist", data_dir=str(tmp_path / "nowhere"), part="test")
    with pytest.raises(DataError, match=r"dataset 'fashion_mnist' needs data_dir \(--data-dir DIR\)"):
        load("fashion_mnist")
    with pytest.raises(ConfigError, match="part='valid' is not known; accepted: train, test, all"):
        load("mnist", data_dir=str(tmp_path), part="valid")
    with pytest.raises(ConfigError, match="does not take parameter 'data_dri'; did you mean 'data_dir'"):
        load("mnist", data_dri=str(tmp_path))
    # labels that do not match the images
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: expected 5 labels to match t10k-images"):
        load("mnist", data_dir=str(tmp_path), part="test")
    # a truncated images file surfaces the reader's message, naming the file
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: expected 3920 bytes of pixel data .* found 84"):
        load("mnist", data_dir=str(tmp_path), part="test")


# ---------------------------------------------------------------- CIFAR-10 on written batches


def _write_cifar(root: Path, n_per_batch: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-10-batches-py"
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        rng = numpy_rng(i, "cifar")
        x = rng.integers(0, 256, (n_per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n_per_batch)
        write_cifar_batch(folder / name, x, y)
        written[name] = (x, y)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES)}))
    return written


def test_cifar10_source(tmp_path):
    written = _write_cifar(tmp_path)
    train = load("cifar10", data_dir=str(tmp_path), part="train")  # the parent folder is accepted
    assert train.x.shape == (10, 3, 32, 32) and train.classes == CIFAR10_CLASSES
    expect = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)])
    assert torch.equal(train.x, torch.from_numpy(expect).float().div(255))
    test = load("cifar10", data_dir=str(tmp_path / "cifar-10-batches-py"), part="test")
    assert test.y.tolist() == written["test_batch"][1].tolist()
    assert len(load("cifar10", data_dir=str(tmp_path), part="all")) == 12


def test_cifar10_missing_and_malicious_batches(tmp_path):
    _write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"dataset 'cifar10': data_batch_3 not found in .*cifar-10-batches-py;"
                                        r" expected data_batch_1, .*data_batch_5"):
        load("cifar10", data_dir=str(tmp_path))
    marker = tmp_path / "RAN"

    class Payload:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    (folder / "test_batch").write_bytes(pickle.dumps({"labels": Payload(), "data": b""}, protocol=4))
    with pytest.raises(DataError, match=r"refusing to unpickle \w+\.system from .*test_batch"):
        load("cifar10", data_dir=str(tmp_path), part="test")
    assert not marker.exists()


# ---------------------------------------------------------------- image folders on written files


def _png(path: Path, value: int, size=(6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)


def test_image_folder_subfolders_and_class_order(tmp_path):
    _png(tmp_path / "cat" / "a.png", 255)
    _png(tmp_path / "cat" / "b.jpg", 255)
    _png(tmp_path / "dog" / "c.png", 0)
    (tmp_path / "dog" / "notes.txt").write_text("not an image, skipped")
    data = load("image_folder", path=str(tmp_path), shape=(1, 4, 4))
    assert data.classes == ("cat", "dog") and data.y.tolist() == [0, 0, 1]
    # classes fix the order and may include classes with no folder
    data = load("image_folder", path=str(tmp_path), shape=(1, 4, 4), classes=["bird", "dog", "cat"])
    assert data.y.tolist() == [2, 2, 1] and data.class_counts().tolist() == [0, 1, 2]
    with pytest.raises(DataError, match=r"sub-folder .*cat is not one of the classes; accepted: dog, bird"):
        load("image_folder", path=str(tmp_path), classes=["dog", "bird"])


def test_image_folder_flat_with_label(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", 128)
    data = load("image_folder", path=str(tmp_path), shape=(3, 8, 8), label=1, classes=["a", "b"])
    assert data.y.tolist() == [1, 1, 1] and data.x.shape == (3, 3, 8, 8)
    assert load("image_folder", path=str(tmp_path), label="bird").classes == ("bird",)
    with pytest.raises(ConfigError, match=r"label=5 is not one of the classes; accepted: a, b or an index 0..1"):
        load("image_folder", path=str(tmp_path), label=5, classes=["a", "b"])
    with pytest.raises(ConfigError, match=r"label='brid' is not one of the classes; did you mean 'bird'"):
        load("image_folder", path=str(tmp_path), label="brid", classes=["bird", "cat"])
    with pytest.raises(ConfigError, match=r"label=1 is an index, so classes=\[...\] is needed"):
        load("image_folder", path=str(tmp_path), label=1)
    with pytest.raises(DataError, match=r"has no class sub-folders; for a flat folder of one class pass label="):
        load("image_folder", path=str(tmp_path))


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r"folder .*absent does not exist; expected class sub-folders"):
        load("image_folder", path=str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no image files in .*empty"):
        load("image_folder", path=str(tmp_path / "empty"), label="x")
    _png(tmp_path / "photos" / "ok.png", 10)
    (tmp_path / "photos" / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(DataError, match=r"broken.jpeg.*(cannot be decoded|not an image)"):
        load("image_folder", path=str(tmp_path / "photos"), label="x")


# ---------------------------------------------------------------- npz


def test_npz_round_trip_through_save_npz(tmp_path, digits):
    path = save_npz(digits, tmp_path / "digits.npz")
    back = load("npz", path=str(path))
    assert torch.equal(back.x, digits.x) and torch.equal(back.y, digits.y) and back.classes == digits.classes
    assert back.meta["path"] == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.npz"]  # atomic: no temp left


def test_npz_layouts_and_labels(tmp_path):
    nhwc = numpy_rng(0, "npz").integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", images=nhwc, labels=np.array(["cat", "dog", "cat", "ant", "dog"]))
    data = load("npz", path=str(tmp_path / "imgs.npz"), x_key="images", y_key="labels")
    assert data.x.shape == (5, 3, 6, 6)
    assert torch.equal(data.x, torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 255)
    assert data.classes == ("ant", "cat", "dog") and data.y.tolist() == [1, 2, 1, 0, 2]
    np.savez(tmp_path / "tab.npz", x=np.ones((4, 3)) * 7.5, y=np.array([0, 2, 1, 0]))
    tab = load("npz", path=str(tmp_path / "tab.npz"), classes=["a", "b", "c"])
    assert tab.x.shape == (4, 3) and tab.classes == ("a", "b", "c")


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.full((2, 1, 4, 4), 3.0), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"bad.npz: float images in 'x' span \[3, 3\]; accepted: \[0, 1\] or uint8"):
        load("npz", path=str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 3)), y=np.array([0, 1, 1]))
    with pytest.raises(DataError, match=r"'y' has shape \(3,\); expected \(2,\)"):
        load("npz", path=str(tmp_path / "bad.npz"))
    with pytest.raises(DataError, match=r"npz file .*gone.npz does not exist"):
        load("npz", path=str(tmp_path / "gone.npz"))
    with pytest.raises(DataError, match="'x' has dtype"):
        np.savez(tmp_path / "bad.npz", x=np.array([["a"], ["b"]]), y=np.array([0, 1]))
        load("npz", path=str(tmp_path / "bad.npz"))


def test_embedded_sources_still_load():
    assert load("digits").x.shape == (1797, 1, 8, 8)
    assert load("breast_cancer").input_shape == (30,) and load("wine").num_classes == 3
