"""Crash safety: a run killed with SIGKILL mid-way resumes to exactly the uninterrupted result.

``poisonlab run CONFIG`` (a small federated digits experiment checkpointing every round, with
a stateful aggregator, FoolsGold, and client sampling so that resumed state matters) is started
in a subprocess, killed with SIGKILL once a checkpoint is on disk, and rerun with ``--resume``.
Its metrics.json must equal an uninterrupted run's (timing fields excluded) and its model must
be bit-identical. While both processes run, a watcher thread lists the run directory over and
over: every file it can see under a final name must be complete (JSON parses, safetensors loads,
YAML parses); temp files must be hidden (dot-prefixed) or named ``*.tmp``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

CONFIG = {
    "name": "crash-safety",
    "seed": 7,
    "data": {"dataset": "digits"},
    "model": {"name": "mlp", "params": {"hidden": [16]}},
    "federated": {
        "clients": 8, "rounds": 30, "sample": 0.5, "checkpoint_every": 1,
        "local": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        "adversary": {"clients": 1, "attack": {"name": "scale", "params": {"gamma": 5}}},
        "aggregator": {"name": "foolsgold", "params": {}},
    },
    "output": {"report": False},
}
TIMING_KEYS = {"wall_time", "seconds"}


def without_timing(value):
    """The metrics document with wall-clock fields (wall_time, per-round seconds) removed."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def is_temp(path: Path) -> bool:
    """A writer's temp file: dot-prefixed (rundir, data) or '*.tmp' (fl/checkpoint)."""
    return path.name.startswith(".") or path.name.endswith(".tmp")


def check_complete(path: Path) -> None:
    """Raise if the file under its final name is not a complete file of its kind."""
    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".safetensors":
        load_file(str(path))
    elif path.suffix == ".yaml":
        yaml.safe_load(path.read_text())
    elif path.suffix == ".csv":
        assert path.read_text().endswith("\n")


class Watcher(threading.Thread):
    """Lists the run directory until stopped; records every incomplete visible file and every temp name."""

    def __init__(self, run_dir: Path):
        super().__init__(daemon=True)
        self.run_dir, self.stop, self.problems, self.temps, self.looks = run_dir, threading.Event(), [], set(), 0

    def run(self) -> None:
        while not self.stop.is_set():
            for path in list(self.run_dir.rglob("*")) if self.run_dir.exists() else []:
                if not path.is_file():
                    continue
                if is_temp(path):
                    self.temps.add(path.name)
                    continue
                try:
                    check_complete(path)
                except FileNotFoundError:
                    self.problems.append(f"{path} vanished under its final name")
                except Exception as err:  # noqa: BLE001 - any parse error is the finding
                    self.problems.append(f"{path}: {type(err).__name__}: {err}")
            self.looks += 1
            time.sleep(0.005)


def poisonlab(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "poisonlab", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def checkpoint_round(run_dir: Path) -> int | None:
    meta = run_dir / "checkpoints" / "checkpoint.json"
    try:
        return json.loads(meta.read_text())["round"]
    except FileNotFoundError:
        return None


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path):
    config = tmp_path / "crash.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    reference = poisonlab("run", str(config), "--out", str(ref_dir), "--quiet", cwd=tmp_path)
    watcher = Watcher(run_dir)
    watcher.start()
    victim = poisonlab("run", str(config), "--out", str(run_dir), "--quiet", cwd=tmp_path)
    deadline = time.monotonic() + 240
    while (checkpoint_round(run_dir) or -1) < 1 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = checkpoint_round(run_dir)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    assert killed_at is not None and killed_at < CONFIG["federated"]["rounds"] - 1
    assert not (run_dir / "metrics.json").exists()

    resumed = poisonlab("run", str(config), "--out", str(run_dir), "--quiet", "--resume", cwd=tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    watcher.stop.set()
    watcher.join()

    got = json.loads((run_dir / "metrics.json").read_text())
    want = json.loads((ref_dir / "metrics.json").read_text())
    assert len(got["history"]) == CONFIG["federated"]["rounds"]
    assert without_timing(got) == without_timing(want)
    # the checkpoint really carried aggregator state: FoolsGold's histories are in it
    assert any(k.startswith("aggregator.") for k in load_file(str(run_dir / "checkpoints" / "checkpoint.safetensors")))
    a, b = load_file(str(run_dir / "model.safetensors")), load_file(str(ref_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert watcher.looks > 10 and watcher.problems == []
    leftovers = [p.name for p in run_dir.rglob("*") if p.is_file() and is_temp(p)]
    assert leftovers == [] or all(name.startswith(".") for name in leftovers), leftovers
    manifest = json.loads((run_dir / "manifest.json").read_text())["files"]
    from poisonlab.hashing import sha256_file

    assert manifest and all(sha256_file(run_dir / name) == digest for name, digest in manifest.items())


# ---------------------------------------------------------------- the two writes of a checkpoint
def test_kill_during_checkpoint_write_leaves_no_visible_partial_file(tmp_path: Path):
    script = f"""
import os, signal, torch
import poisonlab.fl.checkpoint as ckpt
def dies_mid_write(tensors, path, metadata=None):
    with open(path, "wb") as handle:
        handle.write(b"half a safetens")
        handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)
ckpt.save_file = dies_mid_write
ckpt.save_checkpoint({str(tmp_path / 'ckpt')!r}, 0, {{"global_params": torch.zeros(3)}}, {{"history": []}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    visible = [p.name for p in (tmp_path / "ckpt").iterdir() if not p.name.startswith(".")]
    assert visible == [], f"partial files visible after the kill: {visible}"


def test_kill_between_checkpoint_files_still_resumes(tmp_path: Path):
    """Round 4 is saved; saving round 5 is killed (SIGKILL) at its second os.replace. The checkpoint must
    still load as a consistent state (round 4 or round 5, with that round's parameters)."""
    directory = tmp_path / "ckpt"
    script = f"""
import os, signal, torch
import poisonlab.fl.checkpoint as ckpt
ckpt.save_checkpoint({str(directory)!r}, 4, {{"global_params": torch.full((3,), 4.0)}}, {{"history": []}})
real_replace, calls = os.replace, []
def replace_then_die(src, dst):
    calls.append(dst)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
os.replace = replace_then_die
ckpt.save_checkpoint({str(directory)!r}, 5, {{"global_params": torch.full((3,), 5.0)}}, {{"history": []}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    from poisonlab.fl.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(directory)
    assert meta["round"] in (4, 5)
    assert torch.equal(tensors["global_params"], torch.full((3,), float(meta["round"])))


def test_checkpoint_files_are_complete_after_every_save(tmp_path: Path):
    """save_checkpoint then load_checkpoint round-trips tensors and meta (the files the resume reads)."""
    from poisonlab.fl.checkpoint import load_checkpoint, save_checkpoint

    params = torch.linspace(-1, 1, 11)
    for r in range(3):
        save_checkpoint(tmp_path, r, {"global_params": params * r}, {"history": [{"round": i} for i in range(r + 1)]})
        tensors, meta = load_checkpoint(tmp_path)
        assert meta["round"] == r and len(meta["history"]) == r + 1
        assert torch.equal(tensors["global_params"], params * r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]
    assert os.path.getsize(tmp_path / "checkpoint.json") > 0
