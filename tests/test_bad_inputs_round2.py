"""The bad-input catalog, round 2 (issue 20): parser limits, non-finite and extreme numbers, declared
sizes in data files, model and manifest files from elsewhere, silently ignored settings, CLI plumbing.

Same contract as tests/test_bad_inputs.py, whose helpers this file reuses: each case builds its input
in a temporary directory and runs the real command line in-process; the user sees exit code 2 and
exactly one stderr line starting with ``poisonlab`` that names the bad value, never a traceback.
WARNINGS are settings with no effect in the chosen mode: the run goes on (exit 0) and stderr carries a
``poisonlab: warning:`` line naming the setting. docs/bad-inputs.md lists every case ("Round 2" sections).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_bad_inputs import (BASE, one_error_line, C, Case, _manifest_args, _write, checkpoint_args, cli, config_with,
                                   data_config, idx_bytes, mnist_args, npz_args, run_args, scan_model_args)

LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['x'] * 9)}]\n" for i in range(7))
"""Seven levels of nine aliases each: 9**7 = 4.8 million strings once expanded, 400 bytes on disk."""


def yaml_text(t: Path, text: str | bytes) -> list[str]:
    """`poisonlab run` on a config file of exactly this text."""
    return run_args(t, _write(t / "c.yaml", text))


def base_yaml(extra: str = "") -> str:
    """BASE as YAML text, with extra lines appended (for cases that need raw YAML syntax)."""
    import yaml

    return yaml.safe_dump(BASE, sort_keys=False) + extra


def with_set(t: Path, *items: str) -> list[str]:
    args = run_args(t, config_with(t))
    for item in items:
        args += ["--set", item]
    return args


def fed(key: str, value) -> Callable[[Path], list[str]]:
    """A case builder: BASE with federated.<key> = value."""
    return lambda t: run_args(t, config_with(t, (f"federated.{key}", value)))


def centralized(t: Path, **train) -> list[str]:
    """`poisonlab run` on BASE made centralized (no federated section), train settings given."""
    return run_args(t, config_with(t, ("train", {"epochs": 1, **train}), drop=("federated",)))


def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    """A .npy version 1.0 header declaring shape and dtype (no data follows unless added)."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def npz_with_member(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(f"{name}.npy", content)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def scan_truth_args(t: Path, content: bytes, suffix: str = ".npy") -> list[str]:
    """`poisonlab scan` of 40 digits with a --truth file of the given bytes."""
    from poisonlab.data import load
    from poisonlab.data.sources import save_npz

    save_npz(load("digits").subset(list(range(40))), t / "d.npz")
    (t / f"truth{suffix}").write_bytes(content)
    return ["scan", "--dataset", str(t / "d.npz"), "--detector", "spectral_signatures", "--truth",
            str(t / f"truth{suffix}"), "--out", str(t / "scan")]


def model_file(meta: dict[str, str] | None = None, tensors: dict | None = None) -> bytes:
    """A safetensors model file of 'logistic' for digits, with metadata keys replaced by meta."""
    from safetensors.torch import save

    from poisonlab.models import make_model

    model = make_model("logistic", (1, 8, 8), 10)
    good = {"poisonlab.model": "logistic", "poisonlab.input_shape": "[1, 8, 8]", "poisonlab.num_classes": "10",
            "poisonlab.params": "{}"}
    weights = tensors if tensors is not None else {k: v.contiguous() for k, v in model.state_dict().items()}
    return save(weights, metadata={**good, **(meta or {})})


def manifest_of(t: Path, transform: Callable[[dict], object]) -> list[str]:
    """`manifest verify` against a real manifest of the dataset, rewritten by transform."""
    args = _manifest_args(t, b"{}")
    (t / "m.json").unlink()  # manifest create never overwrites a file it did not write
    assert cli(["manifest", "create", args[2], "--manifest", str(t / "m.json")]) == 0
    good = json.loads((t / "m.json").read_text())
    (t / "m.json").write_text(json.dumps(transform(good)))
    return args


def checkpoint_history(t: Path) -> list[str]:
    from safetensors.torch import save

    body = json.dumps({"round": 0, "history": [1, 2], "aggregator": None})
    tensors = save({"global_params": torch.zeros(650)}, metadata={"round": "0", "meta": body})
    return checkpoint_args(t, tensors=tensors, meta=body)


def sweep_yaml(t: Path, grid: str) -> list[str]:
    return ["sweep", str(_write(t / "s.yaml", base_yaml(grid))), "--out", str(t / "sweep")]


def directory(t: Path) -> Path:
    (t / "adir").mkdir()
    return t / "adir"


CASES = [
    # ---- 1. YAML and config parsing limits
    C("r2-yaml-duplicate-key", "parse", lambda t: yaml_text(t, "name: a\nseed: 0\nname: b\n"),
      "duplicate key 'name'", "line 3", "first at line 1"),
    C("r2-yaml-duplicate-key-in-flow", "parse", lambda t: yaml_text(t, "federated: {rounds: 1, rounds: 2}\n"),
      "duplicate key 'rounds'", "each key once"),
    C("r2-yaml-duplicate-key-nested", "parse",
      lambda t: yaml_text(t, "federated:\n  local:\n    lr: 0.1\n    lr: 0.2\n"), "duplicate key 'lr'", "line 4"),
    C("r2-yaml-empty-file", "parse", lambda t: yaml_text(t, ""), "c.yaml", "is empty", "a mapping of keys"),
    C("r2-yaml-comments-only", "parse", lambda t: yaml_text(t, "# nothing here\n# at all\n"), "is empty"),
    C("r2-yaml-whitespace-only", "parse", lambda t: yaml_text(t, "\n   \n\t\n"), "c.yaml"),
    C("r2-yaml-null-document", "parse", lambda t: yaml_text(t, "~\n"), "is empty"),
    C("r2-yaml-top-level-number", "parse", lambda t: yaml_text(t, "42\n"), "must hold a mapping", "int"),
    C("r2-yaml-top-level-string", "parse", lambda t: yaml_text(t, "just words\n"), "must hold a mapping", "str"),
    C("r2-yaml-two-documents", "parse", lambda t: yaml_text(t, "name: a\n---\nname: b\n"),
      "not valid YAML", "another document"),
    C("r2-yaml-deep-list-nesting", "parse", lambda t: yaml_text(t, "name: " + "[" * 500 + "]" * 500 + "\n"),
      "nesting deeper than 32", "accepted"),
    C("r2-yaml-deep-mapping-nesting", "parse",
      lambda t: yaml_text(t, "".join("  " * i + f"k{i}:\n" for i in range(60)) + "  " * 60 + "x: 1\n"),
      "nesting deeper than 32"),
    C("r2-yaml-alias-explosion", "parse", lambda t: yaml_text(t, LAUGHS), "expands to more than 100000 values"),
    C("r2-yaml-alias-explosion-in-grid", "parse",
      lambda t: sweep_yaml(t, LAUGHS.replace("l6: &l6", "big: &big") + "grid: {seed: *big}\n"),
      "expands to more than 100000"),
    C("r2-yaml-recursive-alias", "parse", lambda t: yaml_text(t, "name: &a [1, *a]\n"),
      "alias refers to a mapping or list that contains it"),
    C("r2-yaml-int-5000-digits", "parse", lambda t: yaml_text(t, "seed: " + "7" * 5000 + "\n"),
      "integer of 5000 digits", "at most 30 digits"),
    C("r2-yaml-int-40-digits-rounds", "parse",
      lambda t: yaml_text(t, base_yaml().replace("rounds: 1", "rounds: " + "9" * 40)), "40 digits"),
    C("r2-yaml-rounds-a-billion", "parse", fed("rounds", 10**9), "federated.rounds=1000000000", "[1, 100000]"),
    C("r2-yaml-nul-in-name", "parse", lambda t: yaml_text(t, 'name: "run\\0x"\n'), "name", "NUL byte"),
    C("r2-yaml-nul-in-component-name", "parse",
      lambda t: yaml_text(t, 'model: {name: "cnn\\0"}\n'), "model.name", "NUL byte"),
    C("r2-yaml-name-5000-chars", "parse", lambda t: yaml_text(t, "name: " + "n" * 5000 + "\n"),
      "name", "5000 characters", "at most 4096"),
    C("r2-yaml-unknown-model-3000-chars", "parse",
      lambda t: run_args(t, config_with(t, ("model", {"name": "m" * 3000}))), "model.name", "not known"),
    C("r2-yaml-file-over-1mib", "parse", lambda t: yaml_text(t, "# " + "x" * (1 << 20) + "\n"),
      "bytes; accepted: at most 1048576"),
    C("r2-sweep-grid-too-many-cells", "parse",
      lambda t: sweep_yaml(t, "grid:\n" + "".join(f"  k{i}: [{', '.join(map(str, range(10)))}]\n" for i in range(5))),
      "grid has 100000 cells", "at most 10000"),
    C("r2-cli-set-int-5000-digits", "parse", lambda t: with_set(t, "seed=" + "1" * 5000),
      "--set 'seed'", "5000 digits"),
    C("r2-cli-set-string-5000-chars", "parse", lambda t: with_set(t, "name=" + "s" * 5000), "5000 characters"),
    C("r2-cli-set-deep-value", "parse", lambda t: with_set(t, "name=" + "[" * 100 + "]" * 100), "nesting"),
    # ---- 2. non-finite and extreme numbers
    C("r2-num-local-lr-nan", "numbers", fed("local.lr", float("nan")), "federated.local.lr=nan", "finite number"),
    C("r2-num-local-lr-inf", "numbers", fed("local.lr", float("inf")), "federated.local.lr=inf", "finite"),
    C("r2-num-local-lr-neg-inf", "numbers", fed("local.lr", float("-inf")), "federated.local.lr=-inf"),
    C("r2-num-local-weight-decay-nan", "numbers", fed("local.weight_decay", float("nan")),
      "federated.local.weight_decay=nan", "finite"),
    C("r2-num-local-weight-decay-inf", "numbers", fed("local.weight_decay", float("inf")),
      "federated.local.weight_decay=inf"),
    C("r2-num-local-momentum-nan", "numbers", fed("local.momentum", float("nan")), "federated.local.momentum=nan"),
    C("r2-num-local-epochs-huge", "numbers", fed("local.epochs", 10**7), "federated.local.epochs=10000000",
      "[1, 100000]"),
    C("r2-num-local-batch-size-zero", "numbers", fed("local.batch_size", 0), "federated.local.batch_size=0",
      "accepted: [1, inf)"),
    C("r2-num-server-lr-inf", "numbers", fed("server_lr", float("inf")), "federated.server_lr=inf", "finite"),
    C("r2-num-server-lr-zero", "numbers", fed("server_lr", 0.0), "federated.server_lr=0.0", "(0.0, inf)"),
    C("r2-num-server-lr-negative", "numbers", fed("server_lr", -1.0), "federated.server_lr=-1.0"),
    C("r2-num-sample-nan", "numbers", fed("sample", float("nan")), "federated.sample", "nan"),
    C("r2-num-sample-inf", "numbers", fed("sample", float("inf")), "federated.sample", "inf"),
    C("r2-num-clients-inf", "numbers", fed("clients", float("inf")), "federated.clients=inf"),
    C("r2-num-rounds-fraction", "numbers", fed("rounds", 1.5), "federated.rounds=1.5", "integer"),
    C("r2-num-eval-every-negative", "numbers", fed("eval_every", -3), "federated.eval_every=-3", "[1, inf)"),
    C("r2-num-checkpoint-every-negative", "numbers", fed("checkpoint_every", -1),
      "federated.checkpoint_every=-1", "[0, inf)"),
    C("r2-num-adversary-boost-inf", "numbers", fed("adversary", {"clients": 1, "boost": float("inf")}),
      "federated.adversary.boost=inf", "finite"),
    C("r2-num-adversary-fraction-nan", "numbers", fed("adversary", {"clients": float("nan")}),
      "federated.adversary.clients"),
    C("r2-num-test-fraction-nan", "numbers", lambda t: run_args(t, config_with(t, ("data.test_fraction", float("nan")))),
      "data.test_fraction=nan", "finite"),
    C("r2-num-train-lr-inf", "numbers", lambda t: centralized(t, lr=float("inf")), "train.lr=inf", "finite"),
    C("r2-num-train-momentum-neg-inf", "numbers", lambda t: centralized(t, momentum=float("-inf")),
      "train.momentum=-inf"),
    C("r2-num-injection-clean-fraction-nan", "numbers",
      lambda t: run_args(t, config_with(t, ("injection", {"mode": "fine_tune", "clean_fraction": float("nan")}))),
      "injection.clean_fraction=nan"),
    C("r2-num-injection-lr-inf", "numbers",
      lambda t: run_args(t, config_with(t, ("injection", {"mode": "fine_tune", "lr": float("inf")}))),
      "injection.lr=inf"),
    C("r2-num-server-data-size-inf", "numbers", fed("server_data", {"root_size": float("inf")}),
      "federated.server_data.root_size=inf"),
    C("r2-cli-set-lr-yaml-nan", "numbers", lambda t: with_set(t, "federated.local.lr=.nan"),
      "federated.local.lr=nan", "finite"),
    C("r2-cli-set-lr-text-nan", "numbers", lambda t: with_set(t, "federated.local.lr=nan"),
      "federated.local.lr='nan'", "finite"),
    C("r2-cli-set-lr-1e999", "numbers", lambda t: with_set(t, "federated.local.lr=1e999"),
      "federated.local.lr", "finite"),
    C("r2-cli-memory-budget-inf", "numbers", lambda t: run_args(t, config_with(t), "--memory-budget", "inf"),
      "--memory-budget=inf", "(0, 1048576]"),
    C("r2-cli-memory-budget-nan", "numbers", lambda t: run_args(t, config_with(t), "--memory-budget", "nan"),
      "--memory-budget=nan"),
    C("r2-cli-memory-budget-negative", "numbers", lambda t: run_args(t, config_with(t), "--memory-budget", "-2"),
      "--memory-budget=-2.0"),
    C("r2-cli-threads-huge", "numbers", lambda t: ["--threads", "100000", "list", "models"],
      "--threads=100000", "1 to 4096"),
    C("r2-cli-train-lr-nan", "numbers", lambda t: ["train", "--dataset", "digits", "--lr", "nan"],
      "lr=nan", "finite"),
    C("r2-cli-train-epochs-huge", "numbers", lambda t: ["train", "--dataset", "digits", "--epochs", "10000000"],
      "epochs=10000000", "[1, 100000]"),
    C("r2-cli-train-test-fraction-nan", "numbers",
      lambda t: ["train", "--dataset", "digits", "--test-fraction", "nan"], "test_fraction=nan"),
    C("r2-cli-params-json-nan", "numbers",
      lambda t: ["poison", "--dataset", "digits", "--attack", "label_flip", "--params",
                 '{"source": 1, "target": 2, "fraction": NaN}', "--out", str(t / "p.npz")], "fraction=nan"),
    C("r2-cli-params-json-infinity", "numbers",
      lambda t: ["poison", "--dataset", "digits", "--attack", "label_flip", "--params",
                 '{"source": 1, "target": 2, "fraction": Infinity}', "--out", str(t / "p.npz")], "fraction=inf"),
    C("r2-run-diverges-federated", "numbers", fed("local.lr", 1e30),
      "diverged in round 1", "federated.local.lr=1e+30"),
    C("r2-run-diverges-centralized", "numbers",
      lambda t: run_args(t, config_with(t, ("model", {"name": "mlp"}), ("train", {"epochs": 2, "lr": 1e10}),
                                        drop=("federated",))),
      "diverged in epoch 1 of 2", "lr=10000000000.0"),
    C("r2-train-diverges", "numbers",
      lambda t: ["train", "--dataset", "digits", "--model", "mlp", "--lr", "1e10", "--epochs", "2"],
      "diverged in epoch 1", "smaller lr"),
    # ---- 3. data with non-finite values or extreme declared sizes
    C("r2-data-npz-nan-features", "data",
      lambda t: npz_args(t, lambda p: np.savez(p, x=np.array([[0.1, np.nan], [0.2, 0.3]], np.float32),
                                               y=np.array([0, 1]))),
      "'x' has 1 NaN/Inf values", "sample 0"),
    C("r2-data-npz-inf-images", "data",
      lambda t: npz_args(t, lambda p: np.savez(p, x=np.where(np.arange(32).reshape(2, 1, 4, 4) == 20, np.inf,
                                                             0.5).astype(np.float32), y=np.array([0, 1]))),
      "NaN/Inf", "sample 1"),
    C("r2-data-npz-huge-declared-shape", "data",
      lambda t: npz_args(t, lambda p: npz_with_member(p, {"x": npy_header((10**12, 10)), "y": npy_bytes(np.zeros(2))})),
      "declares shape (1000000000000, 10)", "at most"),
    C("r2-data-npz-shape-beyond-stored-bytes", "data",
      lambda t: npz_args(t, lambda p: npz_with_member(p, {"x": npy_header((1000, 1000)) + bytes(64),
                                                          "y": npy_bytes(np.zeros(2))})),
      "declares shape (1000, 1000)", "truncated or crafted"),
    C("r2-data-npz-billions-of-classes", "data",
      lambda t: npz_args(t, lambda p: np.savez(p, x=np.zeros((2, 3), np.float32), y=np.array([0, 2_000_000_000]))),
      "[0, 2000000000]", "0..99999"),
    C("r2-data-npz-negative-labels", "data",
      lambda t: npz_args(t, lambda p: np.savez(p, x=np.zeros((2, 3), np.float32), y=np.array([0, -4]))),
      "[-4, 0]"),
    C("r2-data-npz-zero-samples", "data",
      lambda t: npz_args(t, lambda p: np.savez(p, x=np.zeros((0, 3), np.float32), y=np.zeros(0, np.int64))),
      "0 samples"),
    C("r2-data-npz-object-labels", "data",
      lambda t: npz_args(t, lambda p: npz_with_member(p, {"x": npy_bytes(np.zeros((2, 3), np.float32)),
                                                          "y": npy_bytes(np.array([0, "a"], dtype=object))})),
      "pickled object array", "array 'y'"),
    C("r2-data-npz-float-labels", "data",
      lambda t: npz_args(t, lambda p: np.savez(p, x=np.zeros((2, 3), np.float32), y=np.array([0.5, 1.0]))),
      "dtype float64", "integer or string labels"),
    C("r2-data-idx-huge-declared-shape", "data",
      lambda t: mnist_args(t, images=bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 65535, 65535)),
      "declares shape (60000, 65535, 65535)", "byte limit"),
    C("r2-data-truth-half-values", "data", lambda t: scan_truth_args(t, npy_bytes(np.full(40, 0.5))),
      "--truth", "0.5", "0/1 or bool"),
    C("r2-data-truth-nan-values", "data", lambda t: scan_truth_args(t, npy_bytes(np.full(40, np.nan))),
      "--truth", "nan"),
    C("r2-data-truth-string-dtype", "data", lambda t: scan_truth_args(t, npy_bytes(np.array(["yes"] * 40))),
      "dtype <U3", "bool"),
    C("r2-data-truth-wrong-shape", "data", lambda t: scan_truth_args(t, npy_bytes(np.zeros((40, 2), bool))),
      "(40, 2)", "expected (40,)"),
    C("r2-data-truth-object-array", "data",
      lambda t: scan_truth_args(t, npy_bytes(np.array([None] * 40, dtype=object))), "pickled object array"),
    C("r2-data-truth-huge-header", "data", lambda t: scan_truth_args(t, npy_header((10**11,), "|b1")),
      "declares shape (100000000000,)"),
    # ---- 5. model and manifest files from elsewhere
    C("r2-model-meta-shape-not-json", "files",
      lambda t: scan_model_args(t, model_file({"poisonlab.input_shape": "one by eight"})),
      "poisonlab.input_shape='one by eight'", "JSON list"),
    C("r2-model-meta-shape-huge", "files",
      lambda t: scan_model_args(t, model_file({"poisonlab.input_shape": "[3, 100000000, 100000000]"})),
      "poisonlab.input_shape", "1..65536"),
    C("r2-model-meta-shape-wrong-type", "files",
      lambda t: scan_model_args(t, model_file({"poisonlab.input_shape": '{"a": 1}'})), "poisonlab.input_shape"),
    C("r2-model-meta-classes-not-int", "files",
      lambda t: scan_model_args(t, model_file({"poisonlab.num_classes": "ten"})),
      "poisonlab.num_classes='ten'", "2..100000"),
    C("r2-model-meta-classes-huge", "files",
      lambda t: scan_model_args(t, model_file({"poisonlab.num_classes": "9" * 30})), "poisonlab.num_classes"),
    C("r2-model-meta-params-a-list", "files",
      lambda t: scan_model_args(t, model_file({"poisonlab.params": "[1, 2]"})), "poisonlab.params", "JSON object"),
    C("r2-model-meta-huge-hidden-layer", "files",
      lambda t: scan_model_args(t, model_file({"poisonlab.model": "mlp",
                                               "poisonlab.params": '{"hidden": [1000000000]}'})),
      "weights do not fit model 'mlp'"),
    C("r2-model-meta-unknown-model", "files",
      lambda t: scan_model_args(t, model_file({"poisonlab.model": "skynet"})), "cannot be built", "'skynet'"),
    C("r2-model-weights-wrong-shape", "files",
      lambda t: scan_model_args(t, model_file(tensors={"1.weight": torch.zeros(3, 3), "1.bias": torch.zeros(3)})),
      "weights do not fit model 'logistic'"),
    C("r2-manifest-a-json-list", "files", lambda t: _manifest_args(t, b"[1, 2, 3]"), "holds a JSON list"),
    C("r2-manifest-samples-not-a-list", "files", lambda t: manifest_of(t, lambda m: {**m, "samples": "all"}),
      "'samples' is str"),
    C("r2-manifest-sample-without-hash", "files",
      lambda t: manifest_of(t, lambda m: {**m, "samples": [{"id": 0, "sha256": [1]}] + m["samples"][1:]}),
      "samples[0]", "string 'sha256'"),
    C("r2-manifest-signature-not-an-object", "files", lambda t: manifest_of(t, lambda m: {**m, "signature": 7}),
      "'signature' is not an object"),
    C("r2-manifest-deeply-nested", "files", lambda t: _manifest_args(t, b"[" * 100000 + b"]" * 100000),
      "not readable JSON"),
    C("r2-checkpoint-history-entries-not-objects", "files", checkpoint_history, "no history"),
    # ---- 6. combinations silently ignored (errors)
    C("r2-resume-centralized", "ignored",
      lambda t: run_args(t, config_with(t, ("train", {"epochs": 1}), drop=("federated",)), "--resume"),
      "--resume", "centralized"),
    # ---- 7. CLI plumbing
    C("r2-cli-config-is-a-directory", "cli", lambda t: run_args(t, directory(t)), "adir", "is a directory"),
    C("r2-cli-config-is-a-device", "cli", lambda t: run_args(t, Path("/dev/null")), "/dev/null",
      "not a regular file"),
    C("r2-cli-manifest-is-a-directory", "cli",
      lambda t: _manifest_args(t, b"{}")[:3] + ["--manifest", str(directory(t))], "adir", "is a directory"),
    C("r2-cli-truth-is-a-directory", "cli",
      lambda t: scan_truth_args(t, b"")[:6] + [str(directory(t)) + ".npy"], "adir.npy"),
]


@dataclass
class Warned:
    """A setting with no effect: the run still succeeds (exit 0) and stderr names it in a warning line."""

    id: str
    area: str
    build: Callable[[Path], list[str]]
    says: tuple[str, ...]


def W(id, build, *says) -> Warned:
    return Warned(id, "ignored", build, says)


WARNINGS = [
    W("r2-warn-schedule-starts-after-last-round", fed("adversary", {"clients": 1, "schedule": {"start": 5}}),
      "federated.adversary.schedule never fires", "start=5"),
    W("r2-warn-schedule-rounds-outside-run", fed("adversary", {"clients": 1, "schedule": {"rounds": [3, 9]}}),
      "never fires within the 1 configured rounds", "rounds=[3, 9]"),
    W("r2-warn-schedule-empty-window", fed("adversary", {"clients": 1, "schedule": {"start": 0, "end": 0}}),
      "never fires"),
    W("r2-warn-train-section-in-federated", lambda t: run_args(t, config_with(t, ("train", {"lr": 0.5}))),
      "train: a federated run does not read it"),
    W("r2-warn-poison-section-in-federated",
      lambda t: run_args(t, config_with(t, ("poison", [{"name": "label_flip",
                                                        "params": {"source": 1, "target": 2}}]))),
      "poison: a federated run does not read it"),
    W("r2-warn-detect-in-federated",
      lambda t: run_args(t, config_with(t, ("detect", [{"name": "spectral_signatures"}]))), "detect:"),
    W("r2-warn-server-data-unused", fed("server_data", {"validation_size": 10}),
      "federated.server_data.validation_size: no aggregator of this run reads it"),
    W("r2-warn-sample-more-than-clients", fed("sample", 50), "federated.sample=50", "6 clients"),
    W("r2-warn-grid-in-run", lambda t: run_args(t, config_with(t, ("grid", {"seed": [1, 2]}))), "grid:",
      "poisonlab sweep"),
    W("r2-warn-resume-without-checkpoints", lambda t: run_args(t, config_with(t), "--resume"),
      "--resume", "checkpoint_every is 0"),
    W("r2-warn-fine-tune-settings-with-concat",
      lambda t: run_args(t, config_with(t, ("train", {"epochs": 1}), ("injection", {"mode": "concat", "epochs": 9}),
                                        drop=("federated",))), "injection.epochs", "mode is concat"),
]


def test_round2_catalog_is_large_and_unique():
    from tests.test_bad_inputs import CASES as ROUND1, HANDLED

    ids = [c.id for c in CASES] + [w.id for w in WARNINGS]
    assert len(ids) >= 70
    assert len(set(ids)) == len(ids)
    assert not set(ids) & ({c.id for c in ROUND1} | {h.id for h in HANDLED})


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_round2_bad_input_is_one_line(case: Case, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(case.build(tmp_path), capsys)
    for word in case.says:
        assert word in line, f"{word!r} missing from: {line[:500]}"


@pytest.mark.parametrize("warned", [pytest.param(w, id=w.id) for w in WARNINGS])
def test_round2_ignored_setting_is_a_warning_line(warned: Warned, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = warned.build(tmp_path)
    capsys.readouterr()
    code = cli(argv)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("poisonlab: warning: ")]
    assert code == 0, err
    assert "Traceback" not in err
    assert len(warnings) == 1, err
    for word in warned.says:
        assert word in warnings[0], f"{word!r} missing from: {warnings[0]}"


def test_config_file_that_cannot_be_read_is_one_line(tmp_path: Path, capsys, monkeypatch):
    """An unreadable config (permission denied; simulated: the tests run as root, which reads anything)."""
    config = config_with(tmp_path)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    line = one_error_line(run_args(tmp_path, config), capsys)
    assert "config.yaml' cannot be read (Permission denied)" in line


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path):
    """`poisonlab list all | head -1`: the reader closes early; no BrokenPipeError traceback, no message."""
    proc = subprocess.Popen([sys.executable, "-m", "poisonlab", "list", "all"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away with most of the output unread
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == "", err
    assert proc.returncode in (0, 1)


def test_a_message_with_line_breaks_is_printed_on_one_line(capsys):
    from poisonlab.cli import MAX_MESSAGE, one_line

    assert one_line("a\nb\r\nc") == "a\\nb\\r\\nc"
    assert len(one_line("x" * 10_000)) == MAX_MESSAGE


def test_merge_keys_are_not_duplicates(tmp_path: Path):
    """YAML merges (<<: *base) may override merged keys: that is not a duplicate key."""
    from poisonlab.config.load import read_yaml

    path = _write(tmp_path / "m.yaml", "base: &b {lr: 0.1, epochs: 2}\nlocal:\n  <<: *b\n  lr: 0.2\n")
    assert read_yaml(path)["local"] == {"lr": 0.2, "epochs": 2}


def test_never_firing_adversaries_is_the_function_a_report_calls():
    from poisonlab.config.ignored import never_firing_adversaries
    from poisonlab.config.load import parse

    doc = json.loads(json.dumps(BASE))
    doc["federated"]["rounds"] = 4
    doc["federated"]["adversary"] = [{"clients": 1, "schedule": {"start": 3}},
                                     {"clients": 1, "schedule": {"start": 4}},
                                     {"clients": 1, "schedule": {"rounds": [-1, 7]}},
                                     {"clients": 0, "schedule": {"start": 9}}]
    lines = never_firing_adversaries(parse(doc))
    assert [line.split(".schedule")[0] for line in lines] == ["federated.adversary.1", "federated.adversary.2"]


def test_idx_and_mnist_helpers_still_build_good_files(tmp_path: Path):
    """The helpers reused from round 1 build valid files: the refusals above come from the bad parts."""
    args = data_config(tmp_path, "mnist")
    assert args[0] == "run"
    assert idx_bytes(np.zeros((2, 3), np.uint8))[:4] == bytes([0, 0, 8, 2])
