"""The bad-input catalog: every way a user (or an attacker) can hand poisonlab something wrong.

Each case builds its bad input in a temporary directory and runs the real command line
in-process (``poisonlab.cli.main``). What the user must see: exit code 2, exactly one line on
stderr starting with ``poisonlab`` and naming the bad value, and no traceback. Cases that are
not errors by design (a NaN update is dropped, a tampered dataset is reported) are in
``HANDLED`` with the documented handling checked. docs/bad-inputs.md lists every case with
the line the user sees; the case ids here are the ids there.

Cases with a `bug` note are real bugs this catalog found (a traceback where a one-line error
belongs, a NaN model accepted); all are fixed, so every case must pass.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from poisonlab.cli import main

# ---------------------------------------------------------------- the tiny experiment all config cases start from
BASE = {
    "name": "bad-input",
    "seed": 0,
    "data": {"dataset": "digits"},
    "model": {"name": "logistic"},
    "federated": {"clients": 6, "rounds": 1, "local": {"epochs": 1, "batch_size": 64, "lr": 0.05},
                  "aggregator": {"name": "mean"}},
    "output": {"report": False},
}


def config_with(tmp: Path, *changes: tuple[str, object], drop: tuple[str, ...] = ()) -> Path:
    """BASE with dotted keys set (value None deletes nothing; use drop) written as YAML; returns its path."""
    doc = json.loads(json.dumps(BASE))
    for dotted, value in changes:
        node = doc
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    for dotted in drop:
        node = doc
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node.pop(last)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_args(tmp: Path, config: Path, *extra: str) -> list[str]:
    return ["run", str(config), "--out", str(tmp / "run"), "--quiet", *extra]


def user_model_args(tmp: Path, name: str, source: str | None = None) -> list[str]:
    """`poisonlab run` on BASE with model 'module:attr'; source (if given) is written as TMP/module.py, and
    TMP is on sys.path in the catalog's test (each case names its own module, so none is cached stale)."""
    if source is not None:
        (tmp / f"{name.partition(':')[0]}.py").write_text(source)
    return run_args(tmp, config_with(tmp, ("model", {"name": name})))


def data_config(tmp: Path, dataset: str, **params) -> list[str]:
    """`poisonlab run` on BASE with another dataset (the error comes from loading it)."""
    return run_args(tmp, config_with(tmp, ("data", {"dataset": dataset, "params": params})))


# ---------------------------------------------------------------- bad files
def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An idx file's bytes: 0 0 code ndim, big-endian uint32 sizes, then the values."""
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def mnist_folder(tmp: Path, images: bytes | None = None, labels: bytes | None = None) -> Path:
    """A folder with the MNIST test-part idx files; good ones unless bad bytes are given."""
    folder = tmp / "mnist"
    folder.mkdir(exist_ok=True)
    good_x = np.zeros((4, 28, 28), dtype=np.uint8)
    good_y = np.array([0, 1, 2, 3], dtype=np.uint8)
    (folder / "t10k-images-idx3-ubyte").write_bytes(images if images is not None else idx_bytes(good_x))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(labels if labels is not None else idx_bytes(good_y))
    return folder


def mnist_args(tmp: Path, images: bytes | None = None, labels: bytes | None = None) -> list[str]:
    return data_config(tmp, "mnist", data_dir=str(mnist_folder(tmp, images, labels)), part="test")


class RunsCode:
    """A pickle payload that, if unpickled unsafely, creates the marker file (os.system would be worse)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def marker(tmp: Path) -> Path:
    return tmp / "PWNED"


def evil_pickle(tmp: Path, wrap: Callable[[object], object] = lambda p: p) -> bytes:
    return pickle.dumps(wrap(RunsCode(marker(tmp))), protocol=4)


def cifar_args(tmp: Path, batch: bytes) -> list[str]:
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(batch)
    return data_config(tmp, "cifar10", data_dir=str(folder), part="test")


def npz_args(tmp: Path, write: Callable[[Path], None]) -> list[str]:
    path = tmp / "data.npz"
    write(path)
    return data_config(tmp, "npz", path=str(path))


def image_folder_args(tmp: Path, name: str, content: bytes) -> list[str]:
    folder = tmp / "photos" / "cat"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(content)
    return data_config(tmp, "image_folder", path=str(tmp / "photos"), shape=[1, 8, 8])


def png_bytes(size=(8, 8), mode="L") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- checkpoints (run --resume)
def checkpoint_args(tmp: Path, tensors: bytes | None = None, meta: str | None = None) -> list[str]:
    """`run --resume` on a run directory whose checkpoint files hold the given bytes."""
    from poisonlab.fl.checkpoint import save_checkpoint

    config = config_with(tmp, ("federated.checkpoint_every", 1), ("federated.rounds", 2))
    ckpt = tmp / "run" / "checkpoints"
    save_checkpoint(ckpt, 0, {"global_params": torch.zeros(650)}, {"history": [], "aggregator": None})
    if tensors is not None:
        (ckpt / "checkpoint.safetensors").write_bytes(tensors)
    if meta is not None:
        (ckpt / "checkpoint.json").write_text(meta)
    return run_args(tmp, config, "--resume")


def resumed_with_another_config(tmp: Path) -> list[str]:
    """A 2-round run checkpointed every round, then `run --resume` on its directory with rounds: 3."""
    first = config_with(tmp, ("federated.checkpoint_every", 1), ("federated.rounds", 2))
    assert cli(run_args(tmp, first)) == 0
    return run_args(tmp, config_with(tmp, ("federated.checkpoint_every", 1), ("federated.rounds", 3)), "--resume")


def safetensors_with_round(round: int) -> bytes:
    from safetensors.torch import save

    return save({"global_params": torch.zeros(650)}, metadata={"round": str(round)})


def scan_model_args(tmp: Path, content: bytes) -> list[str]:
    """`poisonlab scan` with a --model file that is not safetensors."""
    from poisonlab.data import load
    from poisonlab.data.sources import save_npz

    data = load("digits")
    save_npz(data.subset(list(range(40))), tmp / "d.npz")
    model = tmp / "model.safetensors"
    model.write_bytes(content)
    return ["scan", "--dataset", str(tmp / "d.npz"), "--detector", "spectral_signatures", "--model", str(model),
            "--out", str(tmp / "scan")]


# ---------------------------------------------------------------- the catalog of CLI errors
@dataclass
class Case:
    """One bad input: how to build the argv in tmp, and the words the one-line error must contain."""

    id: str
    area: str
    build: Callable[[Path], list[str]]
    says: tuple[str, ...]
    bug: str | None = None  # a bug this case found (now fixed)
    no_side_effect: bool = False  # a pickle payload: the marker file must not exist afterwards
    marks: list = field(default_factory=list)


def C(id, area, build, *says, bug=None, no_side_effect=False) -> Case:
    return Case(id, area, build, tuple(says), bug, no_side_effect)


CASES = [
    # ---- CLI flags
    C("cli-unknown-command", "cli", lambda t: ["frobnicate"], "invalid choice", "'frobnicate'"),
    C("cli-unknown-flag", "cli", lambda t: ["run", str(config_with(t)), "--frobnicate"],
      "unrecognized arguments", "--frobnicate"),
    C("cli-missing-argument", "cli", lambda t: ["run"], "the following arguments are required", "config"),
    C("cli-not-an-int", "cli", lambda t: ["train", "--dataset", "digits", "--epochs", "many"],
      "--epochs", "'many'"),
    C("cli-bad-choice", "cli", lambda t: ["list", "frobs"], "invalid choice", "'frobs'"),
    C("cli-config-missing", "cli", lambda t: ["run", str(t / "nope.yaml")], "nope.yaml", "does not exist"),
    C("cli-set-without-equals", "cli", lambda t: run_args(t, config_with(t), "--set", "federated.rounds"),
      "federated.rounds", "key.path=value"),
    C("cli-set-bad-yaml", "cli", lambda t: run_args(t, config_with(t), "--set", "federated.rounds=[1"),
      "federated.rounds", "[1", "not valid YAML"),
    C("cli-set-into-a-value", "cli", lambda t: run_args(t, config_with(t), "--set", "seed.x=1"),
      "seed.x", "'seed' is a value"),
    C("cli-set-wrong-type", "cli", lambda t: run_args(t, config_with(t), "--set", "federated.rounds=lots"),
      "federated.rounds='lots'", "integer"),
    C("cli-poison-params-not-json", "cli", lambda t: ["poison", "--dataset", "digits", "--attack", "label_flip",
                                                      "--params", "{source: 7", "--out", str(t / "p.npz")],
      "--params", "JSON"),
    C("cli-train-unknown-dataset", "cli", lambda t: ["train", "--dataset", "mnsit"], "mnsit", "did you mean 'mnist'"),
    # ---- YAML configs
    C("yaml-not-yaml", "config", lambda t: run_args(t, _write(t / "c.yaml", "name: [unclosed\nseed: 0\n")),
      "c.yaml", "not valid YAML", "line"),
    C("yaml-not-a-mapping", "config", lambda t: run_args(t, _write(t / "c.yaml", "- a\n- b\n")),
      "must hold a mapping", "list"),
    C("yaml-binary-file", "config", lambda t: run_args(t, _write(t / "c.yaml", b"\xff\xfe\x00garbage")),
      "c.yaml", "not valid YAML"),
    C("yaml-unknown-key", "config", lambda t: run_args(t, config_with(t, ("federated.rouns", 5))),
      "federated.rouns", "unknown key", "did you mean 'rounds'"),
    C("yaml-unknown-top-key", "config", lambda t: run_args(t, config_with(t, ("federaetd", {}))),
      "federaetd", "unknown key", "did you mean 'federated'"),
    C("yaml-wrong-type", "config", lambda t: run_args(t, config_with(t, ("federated.clients", "twenty"))),
      "federated.clients='twenty'", "integer"),
    C("yaml-zero-rounds", "config", lambda t: run_args(t, config_with(t, ("federated.rounds", 0))),
      "federated.rounds=0", "greater than or equal to 1"),
    C("yaml-negative-lr", "config", lambda t: run_args(t, config_with(t, ("federated.local.lr", -0.01))),
      "federated.local.lr=-0.01", "greater than 0"),
    C("yaml-test-fraction-above-1", "config", lambda t: run_args(t, config_with(t, ("data.test_fraction", 1.5))),
      "data.test_fraction=1.5", "less than 1"),
    C("yaml-momentum-1", "config", lambda t: run_args(t, config_with(t, ("federated.local.momentum", 1.0))),
      "federated.local.momentum=1.0", "less than 1"),
    C("yaml-sample-fraction-above-1", "config", lambda t: run_args(t, config_with(t, ("federated.sample", 1.5))),
      "sample", "1.5", "accepted"),
    C("yaml-sample-zero", "config", lambda t: run_args(t, config_with(t, ("federated.sample", 0))),
      "sample", "0", "accepted"),
    C("yaml-adversary-fraction-1.5", "config",
      lambda t: run_args(t, config_with(t, ("federated.adversary", {"clients": 1.5}))),
      "federated.adversary.clients=1.5", "fraction"),
    C("yaml-adversary-more-than-clients", "config",
      lambda t: run_args(t, config_with(t, ("federated.adversary", {"clients": 10}))),
      "10", "6"),
    C("yaml-unknown-aggregator", "config",
      lambda t: run_args(t, config_with(t, ("federated.aggregator", {"name": "krumm"}))),
      "federated.aggregator.name", "'krumm'", "did you mean 'krum'"),
    C("yaml-unknown-aggregator-param", "config",
      lambda t: run_args(t, config_with(t, ("federated.aggregator", {"name": "krum", "params": {"ff": 1}}))),
      "federated.aggregator.name", "'ff'", "did you mean 'f'"),
    C("yaml-trimmed-mean-beta-0.5", "config",
      lambda t: run_args(t, config_with(t, ("federated.aggregator", {"name": "trimmed_mean",
                                                                      "params": {"beta": 0.5}}))),
      "beta=0.5", "0 <= beta < 0.5"),
    C("yaml-krum-f-too-large", "config",
      lambda t: run_args(t, config_with(t, ("federated.aggregator", {"name": "krum", "params": {"f": 3}}))),
      "federated.aggregator: krum needs n > 2f + 2", "n=6", "f=3"),
    C("yaml-krum-f-negative", "config",
      lambda t: run_args(t, config_with(t, ("federated.aggregator", {"name": "krum", "params": {"f": -1}}))),
      "f=-1", "integer >= 0"),
    C("yaml-nonfinite-policy-unknown", "config",
      lambda t: run_args(t, config_with(t, ("federated.aggregator", {"name": "mean",
                                                                      "params": {"nonfinite": "ignore"}}))),
      "nonfinite='ignore'", "drop, zero, error"),
    C("yaml-negative-poison-rate", "config",
      lambda t: run_args(t, config_with(t, ("federated.adversary", _backdoor(rate=-0.1)))),
      "rate=-0.1", "[0, 1]"),
    C("yaml-target-class-missing", "config",
      lambda t: run_args(t, config_with(t, ("federated.adversary", _backdoor(target=10)))),
      "class 10", "0..9"),
    C("yaml-label-flip-source-missing", "config",
      lambda t: run_args(t, config_with(t, ("federated.adversary",
                                            {"clients": 1, "poison": {"name": "label_flip",
                                                                      "params": {"source": 12, "target": 1}}}))),
      "12", "0..9"),
    C("yaml-unknown-dataset", "config", lambda t: run_args(t, config_with(t, ("data.dataset", "cifar100"))),
      "data.dataset", "'cifar100'", "known"),
    C("yaml-unknown-model-param", "config",
      lambda t: run_args(t, config_with(t, ("model", {"name": "mlp", "params": {"hiden": [8]}}))),
      "model.name", "'hiden'", "did you mean 'hidden'"),
    C("yaml-model-param-wrong-type", "config",
      lambda t: run_args(t, config_with(t, ("model", {"name": "mlp", "params": {"hidden": "big"}}))),
      "hidden", "'big'", bug="models.mlp does int('b') on each character: ValueError traceback"),
    C("yaml-user-model-module-missing", "config", lambda t: user_model_args(t, "no_such_module_bi:factory"),
      "model.name", "'no_such_module_bi'", "cannot be imported"),
    C("yaml-user-model-attribute-missing", "config", lambda t: user_model_args(t, "usermod_bi1:factory", ""),
      "model.name", "usermod_bi1", "no attribute 'factory'"),
    C("yaml-user-model-not-callable", "config", lambda t: user_model_args(t, "usermod_bi2:factory", "factory = 3\n"),
      "model.name", "usermod_bi2.factory", "not callable"),
    C("yaml-user-model-not-a-module", "config",
      lambda t: user_model_args(t, "usermod_bi3:factory", "def factory(input_shape, num_classes):\n    return [1]\n"),
      "model.name", "usermod_bi3:factory", "not an nn.Module"),
    C("yaml-user-model-wrong-output", "config",
      lambda t: user_model_args(t, "usermod_bi4:factory", "from torch import nn\n\n\n"
                                "def factory(input_shape, num_classes):\n"
                                "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))\n"),
      "model.name", "usermod_bi4:factory", "outputs (2, 3)"),
    C("yaml-poison-missing-required", "config",
      lambda t: run_args(t, config_with(t, ("federated.adversary",
                                            {"clients": 1, "poison": {"name": "backdoor",
                                                                      "params": {"target": 0, "rate": 0.1}}}))),
      "backdoor", "trigger", bug="registry.check_params ignores missing required parameters: TypeError traceback"),
    C("yaml-grid-not-a-list", "config", lambda t: run_args(t, config_with(t, ("grid", {"seed": 3}))),
      "grid.seed=3", "list"),
    C("yaml-server-data-too-large", "config",
      lambda t: run_args(t, config_with(t, ("federated.server_data", {"root_size": 5000}),
                                        ("federated.aggregator", {"name": "fltrust"}))),
      "federated.server_data", "5000"),
    # ---- data files
    C("idx-wrong-magic", "data", lambda t: mnist_args(t, images=b"\x50\x4b\x03\x04" + bytes(100)),
      "t10k-images-idx3-ubyte", "not an idx file", "504b0304"),
    C("idx-truncated-pixels", "data",
      lambda t: mnist_args(t, images=idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-100]),
      "t10k-images-idx3-ubyte", "expected 3136 bytes", "found 3036"),
    C("idx-truncated-header", "data", lambda t: mnist_args(t, images=bytes([0, 0, 8, 3, 0, 0])),
      "truncated idx header"),
    C("idx-unknown-dtype", "data",
      lambda t: mnist_args(t, images=idx_bytes(np.zeros((4, 28, 28), np.uint8), code=0x42)),
      "dtype code 0x42", "accepted"),
    C("idx-corrupt-gzip", "data",
      lambda t: mnist_args(t, images=gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8)))[:40]),
      "t10k-images-idx3-ubyte", "corrupt or truncated gzip"),
    C("idx-label-count-mismatch", "data",
      lambda t: mnist_args(t, labels=idx_bytes(np.zeros(3, np.uint8))),
      "expected 4 labels", "(3,)"),
    C("idx-label-out-of-range", "data",
      lambda t: mnist_args(t, labels=idx_bytes(np.array([0, 1, 2, 200], np.uint8))),
      "labels must be 0..9", "200"),
    C("cifar-pickle-runs-code", "data", lambda t: cifar_args(t, evil_pickle(t)),
      "refusing to unpickle", "pathlib", no_side_effect=True),
    C("cifar-pickle-nested-payload", "data",
      lambda t: cifar_args(t, evil_pickle(t, lambda p: {"data": p, "labels": [0]})),
      "refusing to unpickle", no_side_effect=True),
    C("cifar-not-a-dict", "data", lambda t: cifar_args(t, pickle.dumps([1, 2, 3])),
      "expected a dict batch", "list"),
    C("cifar-wrong-shape", "data",
      lambda t: cifar_args(t, pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})),
      "(n, 3072)", "(2, 100)"),
    C("cifar-garbage", "data", lambda t: cifar_args(t, b"this is not a pickle"),
      "not a readable pickle"),
    C("npz-pickled-object-array", "data",
      lambda t: npz_args(t, lambda p: np.savez(p, x=np.array([RunsCode(marker(t))], dtype=object),
                                               y=np.zeros(1, np.int64))),
      "pickled object array", "refusing", no_side_effect=True),
    C("npz-not-a-zip", "data", lambda t: npz_args(t, lambda p: p.write_bytes(b"x,y\n1,2\n")),
      "not a readable npz", "not a zip"),
    C("npz-missing-array", "data", lambda t: npz_args(t, lambda p: np.savez(p, x=np.zeros((2, 3)))),
      "no array named 'y'", "found 'x'"),
    C("npz-float-images-out-of-range", "data",
      lambda t: npz_args(t, lambda p: np.savez(p, x=np.full((2, 1, 4, 4), 255.0, np.float32), y=np.zeros(2, int))),
      "span [255, 255]", "[0, 1]"),
    C("npz-labels-wrong-length", "data",
      lambda t: npz_args(t, lambda p: np.savez(p, x=np.zeros((4, 3), np.float32), y=np.zeros(3, int))),
      "'y' has shape (3,)", "(4,)"),
    # ---- images
    C("image-text-file", "image", lambda t: image_folder_args(t, "photo.png", b"just text, not an image"),
      "photo.png", "not an image PIL can read"),
    C("image-truncated-png", "image", lambda t: image_folder_args(t, "photo.png", png_bytes((64, 64), "RGB")[:60]),
      "photo.png", "cannot be decoded"),
    C("image-decompression-bomb", "image",
      lambda t: image_folder_args(t, "bomb.png", png_bytes((9000, 9000), "1")),
      "bomb.png", "9000x9000", "decompression bomb"),
    C("image-folder-empty", "image", lambda t: image_folder_args(t, "notes.txt", b"hello"),
      "no image files"),
    # ---- checkpoints (run --resume)
    C("checkpoint-pickle-payload", "checkpoint", lambda t: checkpoint_args(t, tensors=evil_pickle(t)),
      "run/checkpoints", no_side_effect=True,
      bug="fl/checkpoint.load_checkpoint lets safetensors' SafetensorError out: traceback (no code runs)"),
    C("checkpoint-torch-save-file", "checkpoint",
      lambda t: checkpoint_args(t, tensors=_torch_save_bytes({"global_params": torch.zeros(650)})),
      "run/checkpoints",
      bug="fl/checkpoint.load_checkpoint lets safetensors' SafetensorError out: traceback"),
    C("checkpoint-json-corrupt", "checkpoint",
      lambda t: checkpoint_args(t, tensors=safetensors_with_round(0), meta='{"round": 0, "hist'),
      "run/checkpoints", bug="fl/checkpoint.load_checkpoint lets json.JSONDecodeError out: traceback"),
    C("checkpoint-other-config", "checkpoint", resumed_with_another_config,
      "holds a run of another config", "federated.rounds", "--out DIR", "--force to replace it",
      bug="run --resume spliced the checkpoint of one config into a run of another, silently"),
    C("checkpoint-round-mismatch", "checkpoint", lambda t: checkpoint_args(t, tensors=safetensors_with_round(5)),
      "inconsistent", "round 5", "round 0"),
    C("checkpoint-wrong-size", "checkpoint",
      lambda t: checkpoint_args(t, tensors=_safetensors({"global_params": torch.zeros(7)})),
      "global_params", "7", "650",
      bug="Federation._restore does not check the shape of global_params: RuntimeError traceback in round 1"),
    C("checkpoint-nan-params", "checkpoint",
      lambda t: checkpoint_args(t, tensors=_safetensors({"global_params": torch.full((650,), float("nan"))})),
      "global_params", "NaN",
      bug="Federation._restore accepts a NaN global model: a NaN model is trained and evaluated"),
    C("model-file-is-a-pickle", "checkpoint", lambda t: scan_model_args(t, evil_pickle(t)),
      "model.safetensors", no_side_effect=True),
    # ---- manifests
    C("manifest-not-json", "manifest", lambda t: _manifest_args(t, b"{not json"),
      "not valid JSON"),
]


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _backdoor(**params) -> dict:
    p = {"trigger": {"name": "patch", "params": {"size": 2}}, "target": 0, "rate": 0.1, **params}
    return {"clients": 1, "poison": {"name": "backdoor", "params": p}}


def _torch_save_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _safetensors(tensors: dict, round: int = 0) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"round": str(round)})


def _manifest_args(tmp: Path, content: bytes) -> list[str]:
    from poisonlab.data import load
    from poisonlab.data.sources import save_npz

    save_npz(load("digits").subset(list(range(20))), tmp / "d.npz")
    (tmp / "m.json").write_bytes(content)
    return ["manifest", "verify", str(tmp / "d.npz"), "--manifest", str(tmp / "m.json")]


def cli(argv: list[str]) -> int:
    """poisonlab's main in-process; argparse's SystemExit becomes the exit code."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def _param(case: Case):
    marks = []  # case.bug records a bug this catalog found; all are fixed, so every case must pass
    return pytest.param(case, id=case.id, marks=marks)


def test_catalog_is_large_and_unique():
    ids = [c.id for c in CASES] + [h.id for h in HANDLED]
    assert len(ids) >= 40
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_is_one_line(case: Case, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the user-model cases import a module written there
    line = one_error_line(case.build(tmp_path), capsys)
    for word in case.says:
        assert word in line, f"{word!r} missing from: {line[:500]}"
    if case.no_side_effect:
        assert not marker(tmp_path).exists(), "the pickle payload ran"


def one_error_line(argv: list[str], capsys) -> str:
    """Run the CLI; assert exit 2, exactly one stderr line starting with 'poisonlab' (at most ~2000 characters),
    no traceback; return that line. Every catalog file's error cases go through it."""
    capsys.readouterr()
    code = cli(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}; stderr: {err[-2000:]}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert lines[0].startswith("poisonlab") and len(lines[0]) <= 2100, lines[0][:300]
    return lines[0]


# ---------------------------------------------------------------- through a real process: no traceback at all
@pytest.mark.parametrize("case_id", ["yaml-unknown-key", "cifar-pickle-runs-code"])
def test_bad_input_in_a_subprocess(case_id: str, tmp_path: Path):
    case = next(c for c in CASES if c.id == case_id)
    argv = case.build(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "poisonlab", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and all(word in lines[0] for word in case.says), proc.stderr
    assert not marker(tmp_path).exists()


# ---------------------------------------------------------------- documented handling (not an error by design)
@dataclass
class Handled:
    id: str
    area: str
    check: Callable[[Path], None]
    bug: str | None = None


def _rule(name: str = "mean", **params):
    """The rule as a config builds it (after the non-finite guard, params['nonfinite'] its policy)."""
    from poisonlab.fl.aggregators import build_rule

    return build_rule(name, params)


def _ctx(k: int):
    from poisonlab.fl.types import RoundContext

    return RoundContext(round=0, num_clients=k, sampled=torch.arange(k))


def _updates_with(value: float, row: int = 1, k: int = 5, d: int = 4) -> torch.Tensor:
    x = torch.ones(k, d)
    x[row, 2] = value
    return x


def check_nan_row_dropped(tmp: Path) -> None:
    agg = _rule("mean")(_updates_with(float("nan")), torch.ones(5), _ctx(5))
    assert torch.equal(agg.update, torch.ones(4))
    assert agg.selected.tolist() == [True, False, True, True, True]
    assert agg.info["nonfinite_clients"] == [1]


def check_inf_row_dropped(tmp: Path) -> None:
    agg = _rule("median")(_updates_with(float("-inf"), row=3), torch.ones(5), _ctx(5))
    assert torch.equal(agg.update, torch.ones(4)) and not agg.selected[3]


def check_overflowing_row_dropped(tmp: Path) -> None:
    x = torch.ones(5, 4)
    x[0] = 3e38  # every entry finite, the row sum overflows to inf
    agg = _rule("mean")(x, torch.ones(5), _ctx(5))
    assert bool(agg.selected[0])  # a finite row is kept: the sum overflow is re-checked per entry
    assert torch.isfinite(agg.update).all()


def check_nan_policy_error(tmp: Path) -> None:
    from poisonlab.errors import DataError

    with pytest.raises(DataError, match=r"updates of clients \[2\] contain NaN or Inf"):
        _rule("mean", nonfinite="error")(_updates_with(float("nan"), row=2), torch.ones(5), _ctx(5))


def check_all_rows_nan(tmp: Path) -> None:
    agg = _rule("krum", f=1)(torch.full((5, 4), float("nan")), torch.ones(5), _ctx(5))
    assert torch.equal(agg.update, torch.zeros(4)) and not agg.selected.any() and agg.info["empty"]


def check_negative_weight(tmp: Path) -> None:
    from poisonlab.errors import DataError

    with pytest.raises(DataError, match=r"weights must be finite and >= 0.*-1\.0"):
        _rule("mean")(torch.ones(3, 4), torch.tensor([1.0, -1.0, 1.0]), _ctx(3))


def check_nan_weight(tmp: Path) -> None:
    from poisonlab.errors import DataError

    with pytest.raises(DataError, match=r"weights must be finite.*nan"):
        _rule("median")(torch.ones(3, 4), torch.tensor([1.0, float("nan"), 1.0]), _ctx(3))


def check_wrong_shape_updates(tmp: Path) -> None:
    with pytest.raises(ValueError, match=r"updates must be \(k, d\) and weights \(k,\); got \(3, 4\) and \(2,\)"):
        _rule("mean")(torch.ones(3, 4), torch.ones(2), _ctx(3))


def check_flat_update_not_a_matrix(tmp: Path) -> None:
    with pytest.raises(ValueError, match=r"updates must be \(k, d\).*got \(4,\)"):
        _rule("trimmed_mean", beta=0.1)(torch.ones(4), torch.ones(4), _ctx(4))


def check_nan_update_in_a_run(tmp: Path) -> None:
    """A NaN-producing attacker in a real federation: its rows are dropped, the global model stays finite."""
    from poisonlab.config.load import parse
    from poisonlab.experiment import run_experiment

    doc = json.loads(json.dumps(BASE))
    doc["federated"].update(rounds=2, adversary={"clients": 1, "attack": {"name": "scale",
                                                                         "params": {"gamma": float("inf")}}})
    metrics = run_experiment(parse(doc), None, quiet=True)
    assert all(r["applied"] for r in metrics["history"])
    assert np.isfinite(metrics["final"]["loss"])


def _flower_spec():
    pytest.importorskip("flwr")
    from torch import nn

    from poisonlab.flower.arrays import ArraySpec

    return ArraySpec.from_module(nn.Linear(3, 2))


def check_flower_update_wrong_shape(tmp: Path) -> None:
    from flwr.common import Array, ArrayRecord

    from poisonlab.errors import DataError
    from poisonlab.flower.arrays import from_record

    spec = _flower_spec()
    record = ArrayRecord({n: Array(np.zeros((5, 5), np.float32)) for n in spec.names})
    with pytest.raises(DataError, match=r"has shape \(5, 5\); expected"):
        from_record(record, spec)


def check_flower_update_nan(tmp: Path) -> None:
    from flwr.common import Array, ArrayRecord

    from poisonlab.errors import DataError
    from poisonlab.flower.arrays import from_record

    spec = _flower_spec()
    arrays = {n: np.zeros(s, np.float32) for n, s in zip(spec.names, spec.shapes)}
    arrays[spec.names[0]][0, 0] = np.nan
    with pytest.raises(DataError, match=r"non-finite values \(1 NaN, 0 Inf\)"):
        from_record(ArrayRecord({n: Array(a) for n, a in arrays.items()}), spec)


def check_resume_without_checkpoint(tmp: Path) -> None:
    """--resume on an empty run directory: one warning line saying so, then a run from round 0 (exit 0)."""
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli(run_args(tmp, config_with(tmp, ("federated.checkpoint_every", 1)), "--resume"))
    assert code == 0 and json.loads((tmp / "run" / "metrics.json").read_text())["history"][0]["round"] == 0
    warnings = [line for line in err.getvalue().splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--resume: no checkpoint in" in warnings[0], err.getvalue()
    assert "starting from round 0" in warnings[0]


def check_tampered_dataset_reported(tmp: Path) -> None:
    """manifest verify on a changed dataset: exit 1 and the changed sample listed (a finding, not an error)."""
    from poisonlab.data import load
    from poisonlab.data.sources import save_npz

    data = load("digits").subset(list(range(20)))
    save_npz(data, tmp / "d.npz")
    assert cli(["manifest", "create", str(tmp / "d.npz"), "--manifest", str(tmp / "m.json")]) == 0
    data.x[3] = 1.0 - data.x[3]
    save_npz(data, tmp / "d.npz")
    assert cli(["manifest", "verify", str(tmp / "d.npz"), "--manifest", str(tmp / "m.json")]) == 1


HANDLED = [
    Handled("update-nan-row", "update", check_nan_row_dropped),
    Handled("update-inf-row", "update", check_inf_row_dropped),
    Handled("update-huge-finite-row", "update", check_overflowing_row_dropped),
    Handled("update-nan-policy-error", "update", check_nan_policy_error),
    Handled("update-all-rows-nan", "update", check_all_rows_nan),
    Handled("update-negative-weight", "update", check_negative_weight),
    Handled("update-nan-weight", "update", check_nan_weight),
    Handled("update-wrong-shape", "update", check_wrong_shape_updates),
    Handled("update-not-a-matrix", "update", check_flat_update_not_a_matrix),
    Handled("update-inf-attack-in-a-run", "update", check_nan_update_in_a_run),
    Handled("flower-update-wrong-shape", "update", check_flower_update_wrong_shape),
    Handled("flower-update-nan", "update", check_flower_update_nan),
    Handled("resume-without-checkpoint", "checkpoint", check_resume_without_checkpoint),
    Handled("manifest-tampered-dataset", "manifest", check_tampered_dataset_reported),
]


@pytest.mark.parametrize("handled", [pytest.param(h, id=h.id) for h in HANDLED])
def test_documented_handling(handled: Handled, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    handled.check(tmp_path)


def test_docs_page_lists_every_case():
    """docs/bad-inputs.md has a row for every case id here (the catalog and the page stay in step)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md").read_text()
    from tests.test_bad_inputs_round2 import CASES as ROUND2, WARNINGS  # round 2 (issue 20), same page

    missing = [c.id for c in CASES if f"| `{c.id}` |" not in page] + \
        [h.id for h in HANDLED if f"| `{h.id}` |" not in page] + \
        [c.id for c in [*ROUND2, *WARNINGS] if f"| `{c.id}` |" not in page]
    assert missing == []
