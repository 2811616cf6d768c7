"""Atomic federation checkpoints: tensors in safetensors, everything else in JSON.

Two files in a directory: ``checkpoint.safetensors`` (global params, aggregator tensors) and
``checkpoint.json`` (round, history, aggregator non-tensor state, config fingerprint). Each is
written to a temp file and moved into place with os.replace; the JSON is written last and names
the round stored in the tensors' metadata, so a crash between the two writes is detected.
The engine derives every random stream from (seed, purpose, round, client), so no generator state
has to be carried between rounds; a stateful aggregator's state (Aggregate.state) is stored as
"aggregator.<key>" tensors and meta["aggregator"] (its other values).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from poisonlab.errors import DataError

TENSORS, META = "checkpoint.safetensors", "checkpoint.json"


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(directory: str | os.PathLike, round: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write tensors and JSON-able meta for the state after round (0-based) atomically."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    body = json.dumps({"round": round, **meta}, allow_nan=False)
    # the state travels inside the tensors file, so one os.replace publishes a consistent checkpoint;
    # checkpoint.json is a readable copy written after it
    _atomic(d / TENSORS, lambda p: save_file(tensors, p, metadata={"round": str(round), "meta": body}))
    _atomic(d / META, lambda p: Path(p).write_text(body))


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, meta) of the checkpoint in directory, None if there is none; DataError if inconsistent."""
    d = Path(directory)
    if not (d / META).exists() and not (d / TENSORS).exists():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(d / TENSORS), framework="pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header["meta"] if "meta" in header else (d / META).read_text())
        tensors = load_file(str(d / TENSORS))
    except (OSError, ValueError, SafetensorError) as err:
        raise DataError(f"checkpoint in {d} is unreadable ({type(err).__name__}: {err});"
                        " delete it to start over") from None
    stored = header.get("round")
    if not isinstance(meta, dict) or not isinstance(meta.get("history"), list) or \
            not all(isinstance(h, dict) for h in meta["history"]):
        raise DataError(f"checkpoint in {d} is unreadable (no history); delete it to start over")
    if stored != str(meta.get("round")):
        raise DataError(f"checkpoint in {d} is inconsistent: tensors are from round {stored},"
                        f" state from round {meta.get('round')}; delete it to start over")
    return tensors, meta

