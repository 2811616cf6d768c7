"""The run directory: atomic writes and a manifest of content hashes of everything in it.

A killed run never leaves a half-written file: every file is written to a temporary name in
the same directory and renamed into place (os.replace is atomic on POSIX). Each file is also fsynced
before the rename (durable across a power loss), except inside ``unsynced()``: the run directory's result
files use it (a fsync costs 5-15 ms of the user's wait each, for files a rerun regenerates), and their
manifest, written last and fsynced, lists each file's SHA-256, so a file torn by a power loss is detected.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from poisonlab.hashing import sha256_file

_FSYNC = contextvars.ContextVar("poisonlab_fsync", default=True)


@contextlib.contextmanager
def unsynced():
    """Within this block atomic writes rename without fsync: still whole against a killed process, not durable
    across a power loss (for regenerable files that a fsynced manifest covers; see the module docstring)."""
    token = _FSYNC.set(False)
    try:
        yield
    finally:
        _FSYNC.reset(token)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    """Write data to path atomically (temp file in the same directory, fsync unless unsynced(), rename); mode
    0o600 for secrets."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if _FSYNC.get():
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; results are meant to be read and shared (keys are not)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text to path atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Tensors, numpy values, dataclasses and NaN made JSON-safe (NaN/Inf -> null)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, value: Any) -> Path:
    """Atomically write value as indented JSON (NaN/Inf become null)."""
    return atomic_write_text(path, json.dumps(to_jsonable(value), indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    """Atomically write a list of flat dicts as CSV (columns: union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def _cell(value: Any) -> Any:
    value = to_jsonable(value)
    return json.dumps(value) if isinstance(value, (list, dict)) else ("" if value is None else value)


def write_manifest(run_dir: str | Path, name: str = "manifest.json") -> Path:
    """Record the SHA-256 of every file in the run directory (except the manifest itself)."""
    run_dir = Path(run_dir)
    files = {str(p.relative_to(run_dir)): sha256_file(p) for p in sorted(run_dir.rglob("*"))
             if p.is_file() and p.name != name and not p.name.startswith(".")}
    return write_json(run_dir / name, {"algorithm": "sha256", "files": files})
