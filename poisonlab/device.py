"""Where poisonlab computes: one device per run, resolved once from ``auto | cpu | cuda | cuda:N | mps``.

``auto`` picks CUDA (device 0), then Apple's MPS, then the CPU. Asking for a device this machine does not
have is a one-line ConfigError naming the ones it has. Everything a run computes (data moved once, models,
training, the vectorized engine, update attacks, aggregators, detectors) lives on the resolved device; the
random draws stay on the CPU (poisonlab/rng.py says which, docs/devices.md why) and are moved there.

    dev = resolve("auto")          # torch.device('cuda', 0) on a GPU machine, torch.device('cpu') otherwise
    describe(dev)                  # 'cuda:0 (NVIDIA H100 80GB HBM3)' -- what a run prints and records
    free_bytes(dev)                # what the engine may plan for: torch.cuda.mem_get_info on CUDA
"""

from __future__ import annotations

import re

import torch

from poisonlab.errors import ConfigError

ACCEPTED = "auto, cpu, cuda, cuda:N, mps"
_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_spec(spec: str) -> str:
    """The spec itself when it is one of ``auto | cpu | cuda | cuda:N | mps`` (whether present or not), else a
    ConfigError; the config schema checks the spelling with it, ``resolve`` whether the device is here."""
    if not isinstance(spec, str) or not _PATTERN.match(spec):
        raise ConfigError(f"device={spec!r} is not a device; accepted: {ACCEPTED}")
    return spec


def available() -> list[str]:
    """The devices this machine has, as specs: 'cpu', then 'cuda:0'..'cuda:N-1', then 'mps'."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def resolve(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch.device for spec (None and 'auto': CUDA, then MPS, then CPU); a ConfigError when it is absent."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = check_spec("auto" if spec is None else spec)
    have = available()
    if spec == "auto":
        spec = next((d for d in have if d.startswith("cuda")), "mps" if "mps" in have else "cpu")
    elif spec == "cuda":
        spec = "cuda:0"
    if spec not in have:
        raise ConfigError(f"device '{spec}' is not available on this machine; available: {', '.join(have)}")
    return torch.device(spec)


def describe(device: torch.device) -> str:
    """The device as a run prints and records it: 'cpu', 'mps', or 'cuda:N (<the GPU's name>)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def free_bytes(device: torch.device) -> int | None:
    """Bytes free on a CUDA device now (torch.cuda.mem_get_info); None elsewhere (host memory is the limit)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def deterministic(on: bool = True) -> None:
    """Ask PyTorch for deterministic kernels where it has them (``torch.use_deterministic_algorithms`` with
    ``warn_only``: an op without a deterministic CUDA kernel warns instead of failing). On CUDA, cuBLAS
    needs CUBLAS_WORKSPACE_CONFIG=:4096:8 set before its first use for bit-identical matrix products;
    docs/devices.md says what repeats bit-identically where."""
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.benchmark = False


def move_dataset(data, device: torch.device):
    """The Dataset (poisonlab.data.Dataset) with x and y on device: the one copy a run makes of its data
    (a Dataset already there is returned as is; None stays None)."""
    if data is None or (data.x.device == device and data.y.device == device):
        return data
    return data.replace(x=data.x.to(device), y=data.y.to(device))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without parameters)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def host():
    """Context in which tensors created without a device go to the CPU: data preparation (loading, splitting,
    partitioning, poisoning) runs on the host whatever torch's default device is, and is moved once after."""
    return torch.device("cpu")


def as_tensor(values, dtype: torch.dtype | None = None) -> torch.Tensor:
    """values as a tensor: a tensor stays where it is; anything else (a list, a numpy array) becomes a CPU tensor
    (torch.as_tensor alone would put it on torch's default device, and move a given tensor there too)."""
    if isinstance(values, torch.Tensor):
        return values if dtype is None else values.to(dtype)
    return torch.as_tensor(values, dtype=dtype, device="cpu")
