"""poisonlab flat vectors and nn.Module parameters <-> Flower ``ArrayRecord``, with validation.

poisonlab's federated hot path works on flat float32 vectors (the model's parameters in
``named_parameters`` order, as ``poisonlab.fl.local.flat_params``). Flower moves an
``ArrayRecord``: one named ``Array`` (numpy bytes, dtype, shape) per parameter. An
``ArraySpec`` is the expected layout (names, shapes, dtype); ``from_record`` accepts a record
only if it matches it exactly and every value is finite, otherwise it raises a DataError whose
message is the reason (missing or unexpected arrays, wrong shape or dtype, NaN/Inf, bytes that
do not decode). Decoding never unpickles (numpy ``allow_pickle=False``), and an array whose
payload is far larger than its expected size is refused before it is decoded.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from poisonlab.errors import DataError
from poisonlab.flower import require_flwr

require_flwr()
from flwr.app import Array, ArrayRecord  # noqa: E402

NUMPY_STYPE = "numpy.ndarray"
#: slack over the raw size for the .npy header when checking a payload's length before decoding
_HEADER_SLACK = 4096


@dataclass(frozen=True)
class ArraySpec:
    """The expected arrays: names and shapes in order (the flat vector's layout) and one dtype."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "float32"

    @classmethod
    def from_module(cls, model: nn.Module) -> ArraySpec:
        """The layout of model's parameters (named_parameters order), float32."""
        named = list(model.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(int(s) for s in p.shape) for _, p in named))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of entries of each array."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def dim(self) -> int:
        """d: the length of the flat vector."""
        return sum(self.sizes)


def to_record(flat: torch.Tensor, spec: ArraySpec) -> ArrayRecord:
    """The flat (d,) vector cut into spec's named arrays, as an ArrayRecord."""
    flat = torch.as_tensor(flat).detach().reshape(-1)
    if flat.numel() != spec.dim:
        raise DataError(f"flat vector has {flat.numel()} entries; expected d={spec.dim} for this model")
    values = flat.to(torch.float32).cpu().numpy().astype(spec.dtype, copy=False)
    record = ArrayRecord()
    start = 0
    for name, shape, size in zip(spec.names, spec.shapes, spec.sizes):
        record[name] = Array(np.ascontiguousarray(values[start:start + size].reshape(shape)))
        start += size
    return record


def module_to_record(model: nn.Module) -> ArrayRecord:
    """model's parameters as an ArrayRecord keyed by parameter name."""
    spec = ArraySpec.from_module(model)
    return to_record(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), spec)


def from_record(record: object, spec: ArraySpec) -> torch.Tensor:
    """The flat float32 (d,) vector of a record matching spec; DataError with the reason otherwise."""
    if not isinstance(record, ArrayRecord):
        raise DataError(f"missing arrays: expected an ArrayRecord, got {type(record).__name__}")
    keys = set(record.keys())
    missing = [n for n in spec.names if n not in keys]
    if missing:
        raise DataError(f"missing arrays {missing[:5]} (of {len(spec.names)} expected)")
    extra = sorted(keys - set(spec.names))
    if extra:
        raise DataError(f"unexpected arrays {extra[:5]}; expected exactly {list(spec.names)[:5]}...")
    parts = [_decode(name, record[name], shape, spec.dtype) for name, shape in zip(spec.names, spec.shapes)]
    flat = torch.from_numpy(np.concatenate([p.reshape(-1) for p in parts]))
    return flat


def _decode(name: str, array: Array, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """One Array checked against (shape, dtype) and finiteness, decoded without pickle."""
    if array.stype != NUMPY_STYPE:
        raise DataError(f"array '{name}' has serialization '{array.stype}'; accepted: {NUMPY_STYPE}")
    if str(array.dtype) != dtype:
        raise DataError(f"array '{name}' has dtype {array.dtype}; expected {dtype}")
    if tuple(array.shape) != tuple(shape):
        raise DataError(f"array '{name}' has shape {tuple(array.shape)}; expected {tuple(shape)}")
    expected_bytes = math.prod(shape) * np.dtype(dtype).itemsize
    if len(array.data) > expected_bytes + _HEADER_SLACK:
        raise DataError(f"array '{name}' payload is {len(array.data)} bytes; expected about {expected_bytes}")
    try:
        value = np.load(io.BytesIO(array.data), allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any decoding failure is the sender's fault
        raise DataError(f"array '{name}' cannot be decoded: {err}") from None
    if not isinstance(value, np.ndarray) or value.dtype != np.dtype(dtype) or value.shape != tuple(shape):
        got = (getattr(value, "dtype", type(value).__name__), getattr(value, "shape", None))
        raise DataError(f"array '{name}' decodes to dtype {got[0]} shape {got[1]};"
                        f" expected {dtype} {tuple(shape)} as declared")
    finite = np.isfinite(value)
    if not finite.all():
        n_nan = int(np.isnan(value).sum())
        raise DataError(f"array '{name}' has non-finite values ({n_nan} NaN, {int((~finite).sum()) - n_nan} Inf)")
    return value.astype(np.float32, copy=False)
