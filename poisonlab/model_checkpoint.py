"""The model checkpoint format: a poisonlab model's weights as one safetensors file whose metadata
names the model, so ``load_checkpoint`` rebuilds it with ``make_model`` and loads the weights;
nothing is unpickled.

Metadata keys: poisonlab.model (registry name), poisonlab.input_shape and poisonlab.params (JSON),
poisonlab.num_classes. (The federated round checkpoints are another format: fl/checkpoint.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from poisonlab.errors import ConfigError, DataError
from poisonlab.models import make_model
from poisonlab.rundir import atomic_write_bytes

META_KEYS = ("poisonlab.model", "poisonlab.input_shape", "poisonlab.num_classes", "poisonlab.params")


def save_checkpoint(model: torch.nn.Module, path, name: str, input_shape, num_classes: int,
                    params: dict | None = None) -> Path:
    """Write model weights as safetensors with the metadata make_model needs to rebuild it (atomic)."""
    from safetensors.torch import save

    meta = dict(zip(META_KEYS, (name, json.dumps(list(input_shape)), str(int(num_classes)), json.dumps(params or {}))))
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return atomic_write_bytes(Path(path), save(tensors, metadata=meta))


def load_checkpoint(path) -> torch.nn.Sequential:
    """Rebuild a poisonlab model from a safetensors checkpoint written by save_checkpoint."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"model checkpoint {path} must be a .safetensors file; pickled checkpoints are refused")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise DataError(f"{path} is not a readable safetensors file: {err}") from None
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise DataError(f"{path} lacks metadata {', '.join(missing)}; write checkpoints with save_checkpoint")
    if ":" in meta["poisonlab.model"]:
        raise DataError(f"{path} holds a model built by the factory '{meta['poisonlab.model']}'; a checkpoint never"
                        " imports code; accepted: checkpoints of registered models (in Python: build_model(factory,"
                        " ...) then model.load_state_dict(safetensors.torch.load_file(path)))")
    model = make_model(meta["poisonlab.model"], tuple(json.loads(meta["poisonlab.input_shape"])),
                       int(meta["poisonlab.num_classes"]), **json.loads(meta["poisonlab.params"]))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise DataError(f"{path}: weights do not fit model '{meta['poisonlab.model']}': {str(err).splitlines()[0]}") from None
    return model.eval()
