"""Exact file formats: idx (real MNIST and written files), CIFAR batches via the safe unpickler,
npz without pickle, and checksum-verified atomic downloads (through file:// URLs, offline)."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from poisonlab.data import download as dl
from poisonlab.data.formats import read_cifar_batch, read_cifar_meta, read_idx, read_npz, safe_unpickle
from poisonlab.errors import ConfigError, DataError
from poisonlab.rng import numpy_rng
from tests.support import write_cifar_batch, write_idx

# ---------------------------------------------------------------- idx


def test_real_mnist_idx_matches_published_digest(mnist_dir, tmp_path):
    images_gz = mnist_dir / "t10k-images-idx3-ubyte.gz"
    images = read_idx(images_gz)
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # the uncompressed file's MD5 is published in ../shared/data/README.md
    assert hashlib.md5(gzip.decompress(images_gz.read_bytes())).hexdigest() == "2646ac647ad5339dbf082846283269ea"
    # our writer reproduces that file byte for byte
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    assert dl.file_md5(tmp_path / "t10k-images-idx3-ubyte") == "2646ac647ad5339dbf082846283269ea"


def test_idx_header_layout(tmp_path):
    write_idx(tmp_path / "a.idx", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    raw = (tmp_path / "a.idx").read_bytes()
    assert raw == bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 3) + bytes([1, 2, 3, 4, 5, 6])
    write_idx(tmp_path / "b.idx", np.array([1.5, -2.0], dtype=np.float32))
    assert (tmp_path / "b.idx").read_bytes() == bytes([0, 0, 0x0D, 1]) + struct.pack(">I2f", 2, 1.5, -2.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["data.idx", "data.idx.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    arr = (numpy_rng(1, "idx").normal(size=(3, 4, 5)) * 50).astype(dtype)
    write_idx(tmp_path / name, arr)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)
    assert ((tmp_path / name).read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_gzip_is_detected_from_content_not_name(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "x.gz", arr)
    os.rename(tmp_path / "x.gz", tmp_path / "x-idx3-ubyte")
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte"), arr)


def test_truncated_idx_names_file_and_byte_counts(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((10000, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:16 + 1000])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: expected 7840000 bytes of pixel data"
                                        r" for shape \(10000, 28, 28\), found 1000"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "labels.gz"
    write_idx(path, numpy_rng(0, "labels").integers(0, 10, 5000).astype(np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="labels.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_wrong_magic_number_and_dtype_code(tmp_path):
    path = tmp_path / "weird.idx"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(DataError, match="weird.idx is not an idx file: magic number 12340801"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(DataError, match="weird.idx: unknown idx dtype code 0x07"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 2))
    with pytest.raises(DataError, match="weird.idx: truncated idx header"):
        read_idx(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"weird.idx is not an idx file: magic number \(empty\)"):
        read_idx(path)


def test_trailing_bytes_and_missing_file(tmp_path):
    path = tmp_path / "long.idx"
    write_idx(path, np.zeros(4, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="long.idx: expected 4 bytes of data .* found more"):
        read_idx(path)
    with pytest.raises(DataError, match="nothere.idx does not exist"):
        read_idx(tmp_path / "nothere.idx")
    with pytest.raises(DataError, match="cannot write dtype complex"):
        write_idx(tmp_path / "c.idx", np.zeros(2, dtype=np.complex64))


# ---------------------------------------------------------------- CIFAR batches


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as python 2 'str' (BINSTRING), as the real CIFAR-10 batches (cPickle) do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _py2_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    import io

    buf = io.BytesIO()
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    _Py2Pickler(buf, protocol=2).dump(batch)
    path.write_bytes(buf.getvalue())


def test_python2_style_cifar_batch_reads(tmp_path):
    data = numpy_rng(0, "cifar").integers(0, 256, (3, 3072), dtype=np.uint8)
    _py2_batch(tmp_path / "data_batch_1", data, [3, 0, 9])
    raw = (tmp_path / "data_batch_1").read_bytes()
    assert b"_codecs" not in raw and b"numpy" in raw  # a genuine protocol-2 str pickle with numpy globals
    x, y = read_cifar_batch(tmp_path / "data_batch_1")
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [3, 0, 9]
    # CIFAR layout: 1024 red, then 1024 green, then 1024 blue values, row-major
    assert x[1, 2, 5, 7] == data[1, 2 * 1024 + 5 * 32 + 7]


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_python3_cifar_batch_round_trip(tmp_path, protocol):
    x = numpy_rng(2, "cifar").integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    y = np.array([1, 2, 3, 4])
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({"data": x.reshape(4, -1), "labels": y.tolist()}, protocol=protocol))
    xb, yb = read_cifar_batch(path)
    assert np.array_equal(xb, x) and np.array_equal(yb, y)
    write_cifar_batch(path, x, y)
    xb, yb = read_cifar_batch(path)
    assert np.array_equal(xb, x) and np.array_equal(yb, y)


class _RunsCode:
    """A pickle payload that would run a shell command when unpickled by a plain unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_malicious_cifar_batch_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "data_batch_1"
    evil = {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "batch_label": _RunsCode(marker)}
    path.write_bytes(pickle.dumps(evil, protocol=4))
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|nt|os)\.system from .*data_batch_1"):
        read_cifar_batch(path)
    assert not marker.exists()
    # sanity: the payload is real; a plain unpickler would have run it
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_other_globals_are_refused(tmp_path):
    path = tmp_path / "batches.meta"
    path.write_bytes(pickle.dumps({"label_names": [_CallsEval()]}))
    with pytest.raises(DataError, match=r"refusing to unpickle builtins\.eval from .*batches.meta"):
        read_cifar_meta(path)
    # a numpy object array smuggling a callable is refused at the callable, not the array
    path.write_bytes(pickle.dumps({"data": np.array([_CallsEval()], dtype=object), "labels": [0]}))
    with pytest.raises(DataError, match=r"refusing to unpickle builtins\.eval"):
        read_cifar_batch(path)
    # py3 protocol 2 encodes bytes through _codecs.encode, which is not on the allow list
    path.write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to unpickle _codecs\.encode"):
        read_cifar_batch(path)


def test_malformed_cifar_batches(tmp_path):
    path = tmp_path / "data_batch_2"
    path.write_bytes(b"\x80\x04garbage that is not a pickle")
    with pytest.raises(DataError, match="data_batch_2 is not a readable pickle"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({"labels": [1]}))
    with pytest.raises(DataError, match="data_batch_2: batch lacks 'data' or 'labels'"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.float32), "labels": [1, 2]}))
    with pytest.raises(DataError, match=r"'data' should be a uint8 array of shape \(n, 3072\)"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1]}))
    with pytest.raises(DataError, match="2 images but labels of shape"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="expected a dict batch, found list"):
        read_cifar_batch(path)


def test_cifar_meta_names(tmp_path):
    path = tmp_path / "batches.meta"
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump({b"label_names": [b"airplane", b"bird"], b"num_vis": 3072})
    assert read_cifar_meta(path) == ["airplane", "bird"]
    assert safe_unpickle(path)["num_vis"] == 3072


# ---------------------------------------------------------------- npz


def test_npz_refuses_pickled_arrays(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(DataError, match="obj.npz: holds a pickled object array; refusing"):
        read_npz(path, ("x", "y"))
    np.savez(path, x=np.zeros((2, 3)), labels=np.zeros(2))
    with pytest.raises(DataError, match="obj.npz: no array named 'y'; found 'x', 'labels'"):
        read_npz(path, ("x", "y"))
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="obj.npz is not a readable npz"):
        read_npz(path, ("x", "y"))


# ---------------------------------------------------------------- downloads (offline: file:// URLs)


def _served(tmp_path: Path, name: str, content: bytes) -> tuple[str, str]:
    """Put content in a 'server' folder; return (file:// base URL, md5)."""
    server = tmp_path / "server"
    server.mkdir(exist_ok=True)
    (server / name).write_bytes(content)
    return server.as_uri() + "/", hashlib.md5(content).hexdigest()


def test_fetch_verifies_checksum_then_renames(tmp_path):
    base, md5 = _served(tmp_path, "t10k-labels-idx1-ubyte.gz", b"label bytes")
    dest = tmp_path / "data" / "t10k-labels-idx1-ubyte.gz"
    dl.fetch(base + "t10k-labels-idx1-ubyte.gz", dest, md5)
    assert dest.read_bytes() == b"label bytes"
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temp file left


def test_checksum_mismatch_keeps_old_file_and_leaves_no_temp(tmp_path):
    base, _ = _served(tmp_path, "f.gz", b"tampered content")
    dest = tmp_path / "data" / "f.gz"
    dest.parent.mkdir()
    dest.write_bytes(b"previous good file")
    with pytest.raises(DataError, match=r"checksum mismatch for f.gz from file://.*expected md5 0{32}, got "
                                        + hashlib.md5(b"tampered content").hexdigest()):
        dl.fetch(base + "f.gz", dest, "0" * 32)
    assert dest.read_bytes() == b"previous good file"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.gz"]


def test_download_table_and_mirror_fallback(tmp_path, monkeypatch):
    from poisonlab.data import load

    images = numpy_rng(3, "imgs").integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5], dtype=np.uint8)
    src = tmp_path / "src"
    write_idx(src / "t10k-images-idx3-ubyte.gz", images)
    write_idx(src / "t10k-labels-idx1-ubyte.gz", labels)
    dead = (tmp_path / "no-such-server").as_uri() + "/"
    table = tuple(dl.Resource(p.name, dl.file_md5(p), (dead, src.as_uri() + "/"), "test")
                  for p in sorted(src.iterdir()))
    monkeypatch.setitem(dl.RESOURCES, "mnist", table)
    data = load("mnist", data_dir=str(tmp_path / "mnist"), part="test", download=True)
    assert np.array_equal((data.x[:, 0] * 255).round().numpy().astype(np.uint8), images)
    assert data.y.tolist() == labels.tolist()
    # every mirror down: one DataError listing what was tried
    monkeypatch.setitem(dl.RESOURCES, "mnist", tuple(dl.Resource(r.filename, r.md5, (dead,), "test") for r in table))
    with pytest.raises(DataError, match="could not download t10k-images-idx3-ubyte.gz .offline.*no-such-server"):
        dl.download("mnist", tmp_path / "other", part="test")
    with pytest.raises(ConfigError, match="downloadable dataset 'mnsit' is not known; did you mean 'mnist'"):
        dl.download("mnsit", tmp_path)


def test_published_checksums_table():
    # the digests published by each dataset's distributor (as listed by torchvision and others)
    md5 = {(k, r.filename): r.md5 for k, rs in dl.RESOURCES.items() for r in rs}
    assert md5[("mnist", "t10k-images-idx3-ubyte.gz")] == "9fb629c4189551a2d022fa330f9573f3"
    assert md5[("fashion_mnist", "train-images-idx3-ubyte.gz")] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert md5[("cifar10", "cifar-10-python.tar.gz")] == "c58f30108f718f92721af3b95e74349a"
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in md5.values())


def test_tar_extraction_refuses_escaping_paths(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload.txt"
    payload.write_text("x")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload, arcname="../escaped.txt")
    with pytest.raises(DataError, match="cannot extract .*evil.tar.gz"):
        dl.extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_download_keeps_verified_files_and_replaces_bad_ones(tmp_path, monkeypatch):
    base, md5 = _served(tmp_path, "t10k-labels-idx1-ubyte.gz", b"good labels")
    monkeypatch.setitem(dl.RESOURCES, "mnist", (dl.Resource("t10k-labels-idx1-ubyte.gz", md5, (base,), "test"),))
    target = tmp_path / "data" / "t10k-labels-idx1-ubyte.gz"
    target.parent.mkdir()
    target.write_bytes(b"corrupted local copy")
    calls = []
    real_fetch = dl.fetch
    monkeypatch.setattr(dl, "fetch", lambda *a, **k: calls.append(a[0]) or real_fetch(*a, **k))
    dl.download("mnist", target.parent, part="test")
    assert target.read_bytes() == b"good labels" and len(calls) == 1
    dl.download("mnist", target.parent, part="test")  # already verified: not fetched again
    assert len(calls) == 1
    assert dl.download("mnist", target.parent, part="train") == []  # no train files in this table


def test_idx_header_claiming_huge_shape_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.idx"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 2 ** 31, 2 ** 31, 2 ** 31) + b"\x00" * 10)
    with pytest.raises(DataError, match="huge.idx: idx header declares shape .* over the .* byte limit"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 2 ** 30) + b"\x00" * 10)
    with pytest.raises(DataError, match="huge.idx: expected 1073741824 bytes of data .*found 10"):
        read_idx(path)
