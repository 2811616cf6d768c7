"""The run directory's fsyncs: result files are renamed into place whole without a fsync each; the manifest,
written last, is the one file fsynced (rundir.unsynced, outputs.write_run_dir). Other atomic writes stay durable."""

from __future__ import annotations

import json
import os

import torch

from poisonlab.config.load import parse
from poisonlab.outputs import base_metrics, write_run_dir
from poisonlab.rundir import atomic_write_text, unsynced
from poisonlab.hashing import sha256_file


def _count_fsyncs(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def test_atomic_writes_fsync_outside_unsynced_only(tmp_path, monkeypatch):
    calls = _count_fsyncs(monkeypatch)
    atomic_write_text(tmp_path / "a.txt", "durable")
    assert len(calls) == 1
    with unsynced():
        atomic_write_text(tmp_path / "b.txt", "renamed whole")
    assert len(calls) == 1
    atomic_write_text(tmp_path / "c.txt", "durable again")  # the block's setting does not leak
    assert len(calls) == 2
    assert (tmp_path / "b.txt").read_text() == "renamed whole"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_run_dir_fsyncs_only_its_manifest(tmp_path, monkeypatch):
    config = parse({"name": "sync", "data": {"dataset": "digits"}, "model": {"name": "mlp"}})
    metrics = base_metrics(config)
    metrics["final"] = {"clean_accuracy": 0.5}
    metrics["history"] = [{"round": 0, "clean_accuracy": 0.5}]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    calls = _count_fsyncs(monkeypatch)
    write_run_dir(tmp_path, config, metrics, model, report=False, input_shape=(4,), num_classes=2)
    assert len(calls) == 1
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["config.yaml", "history.csv", "metrics.json", "model.safetensors"]
    for name, digest in manifest["files"].items():
        assert sha256_file(tmp_path / name) == digest
