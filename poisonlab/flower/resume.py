"""Server-side checkpoints of a Flower run, and resuming from them (the built-in engine's files: fl/checkpoint.py).

After every ``every``-th round (and the last) the ServerApp stores the global model (``global_params``), its
buffers (``buffer.<name>``), the rule's state (``aggregator.<key>`` tensors, its other values in
meta["aggregator"]) and the strategy's history, as the built-in engine's Federation._save does. A resumed run
loads them and starts at the next round. Nothing else has to be carried: every random stream (sampling, local
training, attacks) is derived from (seed, purpose, round, client), so the resumed rounds are those of an
uninterrupted run. Which node holds which client is rediscovered (nodes may have changed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from poisonlab.errors import DataError
from poisonlab.fl.checkpoint import load_checkpoint, save_checkpoint
from poisonlab.flower.arrays import ArraySpec


@dataclass
class Resumed:
    """What a checkpoint restores: the global model after round ``next_round - 1`` (1-based Flower rounds)."""

    params: torch.Tensor
    buffers: dict[str, torch.Tensor]
    state: dict | None
    history: list[dict]
    next_round: int


def save(directory: str, server_round: int, params: torch.Tensor, buffers: dict, state: dict | None,
         history: list[dict]) -> None:
    """Checkpoint the state after Flower round server_round (1-based; stored as the engine's 0-based round)."""
    tensors = {"global_params": params.detach().cpu(), **{f"buffer.{n}": b.cpu() for n, b in buffers.items()}}
    meta: dict = {"history": history, "aggregator": None, "engine": "flower"}
    if state is not None:
        tensors.update({f"aggregator.{k}": v.cpu() for k, v in state.items() if isinstance(v, torch.Tensor)})
        meta["aggregator"] = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    save_checkpoint(directory, server_round - 1, tensors, meta)


def load(directory: str, spec: ArraySpec) -> Resumed | None:
    """The checkpoint in directory checked against the model's layout (None if there is none; DataError with
    the reason if it does not fit)."""
    loaded = load_checkpoint(directory)
    if loaded is None:
        return None
    tensors, meta = loaded
    if meta.get("engine") != "flower":
        raise DataError(f"checkpoint in {directory} was written by the built-in engine; accepted: resume it with"
                        " --engine builtin, or delete it to start over")
    params = tensors.get("global_params")
    if params is None or params.shape != (spec.dim,) or not bool(torch.isfinite(params).all()):
        raise DataError(f"checkpoint in {directory}: global_params does not hold {spec.dim} finite values for this"
                        " model; delete it to start over")
    buffers = {k.removeprefix("buffer."): v for k, v in tensors.items() if k.startswith("buffer.")}
    expected = {name: (tuple(shape), dtype) for name, shape, dtype in spec.buffers}
    found = {name: (tuple(b.shape), str(b.dtype).removeprefix("torch.")) for name, b in buffers.items()}
    if found != expected:
        raise DataError(f"checkpoint in {directory}: its buffers {sorted(found)[:5]} do not match this model's"
                        f" {sorted(expected)[:5]}; delete it to start over")
    state = None
    if meta.get("aggregator") is not None:
        state = {**meta["aggregator"], **{k.removeprefix("aggregator."): v for k, v in tensors.items()
                                          if k.startswith("aggregator.")}}
    return Resumed(params.float(), buffers, state, list(meta["history"]), int(meta["round"]) + 2)
