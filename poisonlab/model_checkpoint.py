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
    name, input_shape, num_classes, params = parse_meta(meta, path)
    if ":" in name:
        raise DataError(f"{path} holds a model built by the factory '{name}'; a checkpoint never"
                        " imports code; accepted: checkpoints of registered models (in Python: build_model(factory,"
                        " ...) then model.load_state_dict(safetensors.torch.load_file(path)))")
    check_shapes_before_building(path, name, input_shape, num_classes, params, tensors)
    model = make_model(name, input_shape, num_classes, **params)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise DataError(f"{path}: weights do not fit model '{meta['poisonlab.model']}': {str(err).splitlines()[0]}") from None
    return model.eval()


MAX_INPUT_SIDE = 1 << 16
"""Largest size of one input dimension read from a checkpoint's metadata."""


def parse_meta(meta: dict, path) -> tuple[str, tuple[int, ...], int, dict]:
    """(model name, input shape, num_classes, params) from a file's metadata, each of its expected type
    and range; a one-line DataError naming the key otherwise (the metadata is untrusted text)."""
    def bad(key: str, accepted: str):
        value = str(meta.get(key))
        shown = value if len(value) <= 60 else value[:57] + "..."
        return DataError(f"{path}: metadata {key}={shown!r} is not valid; accepted: {accepted}")

    try:
        input_shape = json.loads(meta["poisonlab.input_shape"])
    except ValueError:
        raise bad("poisonlab.input_shape", "a JSON list of 1 to 3 sizes") from None
    if not (isinstance(input_shape, list) and 1 <= len(input_shape) <= 3 and all(
            isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_INPUT_SIDE for s in input_shape)):
        raise bad("poisonlab.input_shape", f"a JSON list of 1 to 3 sizes in 1..{MAX_INPUT_SIDE}")
    text = meta["poisonlab.num_classes"]
    if not (text.isdigit() and len(text) <= 7 and 2 <= int(text) <= 100_000):
        raise bad("poisonlab.num_classes", "an integer in 2..100000")
    try:
        params = json.loads(meta["poisonlab.params"])
    except ValueError:
        params = None
    if not isinstance(params, dict):
        raise bad("poisonlab.params", "a JSON object of the model's parameters")
    return meta["poisonlab.model"], tuple(input_shape), int(text), params


def check_shapes_before_building(path, name: str, input_shape, num_classes: int, params: dict,
                                 tensors: dict[str, torch.Tensor]) -> None:
    """Build the model on the meta device (no memory) and compare its tensors' names and shapes with the
    file's, so metadata declaring a huge model (input_shape [65536, 65536], hidden [10**9]) is refused
    before make_model allocates it. The file's own tensors were bounded by its size."""
    from poisonlab.errors import ConfigError
    from poisonlab.models import MODELS

    try:
        with torch.device("meta"):
            meta_model = MODELS.get(name, input_shape=input_shape, num_classes=num_classes, **params)
    except ConfigError as err:
        raise DataError(f"{path}: metadata names a model that cannot be built: {err}") from None
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(f"{path}: metadata names a model that cannot be built ({type(err).__name__}:"
                        f" {str(err).splitlines()[0][:200]})") from None
    expected = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:2]
        raise DataError(f"{path}: weights do not fit model '{name}' of the metadata (first differences:"
                        f" {diff}); accepted: a checkpoint written by save_checkpoint")
