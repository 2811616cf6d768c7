"""poisonlab flat vectors and nn.Module parameters <-> Flower ``ArrayRecord``, with validation.

poisonlab's federated hot path works on flat float32 vectors (the model's parameters in
``named_parameters`` order, as ``poisonlab.fl.local.flat_params``). Flower moves an
``ArrayRecord``: one named ``Array`` (numpy bytes, dtype, shape) per parameter. An
``ArraySpec`` is the expected layout (names, shapes, dtype); ``from_record`` accepts a record
only if it matches it exactly and every value is finite, otherwise it raises a DataError whose
message is the reason (missing or unexpected arrays, wrong shape or dtype, NaN/Inf, bytes that
do not decode). Decoding never unpickles (numpy ``allow_pickle=False``), and an array whose
payload is far larger than its expected size is refused before it is decoded.

A model with buffers (batch norm's running statistics, num_batches_tracked, constant buffers) has them in the
spec too (``buffers``: name, shape, dtype each) and in every record beside the parameters, under their own
names: the global model sent to a client and the trained model it returns are parameters AND buffers
(``to_record(flat, spec, buffers)``, ``read_record(record, spec) -> (flat, buffers)``).
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
    """The expected arrays: the parameters' names and shapes in order (the flat vector's layout) and their one
    dtype, then the buffers as (name, shape, dtype) each (named_buffers order; empty for a buffer-free model)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "float32"
    buffers: tuple[tuple[str, tuple[int, ...], str], ...] = ()

    @classmethod
    def from_module(cls, model: nn.Module) -> ArraySpec:
        """The layout of model's parameters (named_parameters order, float32) and buffers (named_buffers order)."""
        named = list(model.named_parameters())
        buffers = tuple((n, tuple(int(s) for s in b.shape), str(b.dtype).removeprefix("torch."))
                        for n, b in model.named_buffers())
        return cls(tuple(n for n, _ in named), tuple(tuple(int(s) for s in p.shape) for _, p in named),
                   buffers=buffers)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of entries of each array."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def dim(self) -> int:
        """d: the length of the flat vector."""
        return sum(self.sizes)


def to_record(flat: torch.Tensor, spec: ArraySpec, buffers: dict[str, torch.Tensor] | None = None) -> ArrayRecord:
    """The flat (d,) vector cut into spec's named arrays, plus spec's buffers from buffers (name -> tensor), as an
    ArrayRecord."""
    missing = [n for n, _, _ in spec.buffers if n not in (buffers or {})]
    if missing:
        raise DataError(f"buffers {missing[:5]} are missing; this model has buffers {[n for n, _, _ in spec.buffers][:5]}")
    flat = torch.as_tensor(flat).detach().reshape(-1)
    if flat.numel() != spec.dim:
        raise DataError(f"flat vector has {flat.numel()} entries; expected d={spec.dim} for this model")
    values = flat.to(torch.float32).cpu().numpy().astype(spec.dtype, copy=False)
    record = ArrayRecord()
    start = 0
    for name, shape, size in zip(spec.names, spec.shapes, spec.sizes):
        record[name] = Array(np.ascontiguousarray(values[start:start + size].reshape(shape)))
        start += size
    for name, shape, dtype in spec.buffers:
        value = buffers[name].detach().cpu().numpy()
        if str(value.dtype) != dtype or tuple(value.shape) != tuple(shape):
            raise DataError(f"buffer '{name}' is {value.dtype} {tuple(value.shape)}; expected {dtype} {tuple(shape)}")
        record[name] = Array(value if value.flags.c_contiguous else value.copy())  # 0-d stays 0-d (a counter)
    return record


def module_to_record(model: nn.Module) -> ArrayRecord:
    """model's parameters and buffers as an ArrayRecord keyed by their names."""
    spec = ArraySpec.from_module(model)
    return to_record(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), spec,
                     dict(model.named_buffers()))


def from_record(record: object, spec: ArraySpec) -> torch.Tensor:
    """The flat float32 (d,) vector of a record matching spec (buffers included); DataError with the reason
    otherwise."""
    return read_record(record, spec)[0]


def read_record(record: object, spec: ArraySpec) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(flat float32 (d,) parameters, buffers name -> tensor) of a record matching spec exactly; DataError with
    the reason otherwise."""
    if not isinstance(record, ArrayRecord):
        raise DataError(f"missing arrays: expected an ArrayRecord, got {type(record).__name__}")
    expected = list(spec.names) + [n for n, _, _ in spec.buffers]
    keys = set(record.keys())
    missing = [n for n in expected if n not in keys]
    if missing:
        raise DataError(f"missing arrays {missing[:5]} (of {len(expected)} expected)")
    extra = sorted(keys - set(expected))
    if extra:
        raise DataError(f"unexpected arrays {extra[:5]}; expected exactly {expected[:5]}...")
    parts = [_decode(name, record[name], shape, spec.dtype) for name, shape in zip(spec.names, spec.shapes)]
    flat = torch.from_numpy(np.concatenate([p.reshape(-1) for p in parts]).astype(np.float32, copy=False))
    buffers = {name: torch.from_numpy(_decode(name, record[name], shape, dtype)) for name, shape, dtype in spec.buffers}
    return flat, buffers


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
    if np.issubdtype(value.dtype, np.floating):
        finite = np.isfinite(value)
        if not finite.all():
            n_nan = int(np.isnan(value).sum())
            raise DataError(f"array '{name}' has non-finite values ({n_nan} NaN, {int((~finite).sum()) - n_nan} Inf)")
    return value
