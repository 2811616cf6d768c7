"""Local training of k clients at once: the entry point of vectorized local training.

``local_updates`` trains all sampled clients' SGD from the global parameters as stacked parameters (every
parameter tensor gets a leading client axis (k, *shape)) and returns their updates; ``stacked_logits``
evaluates k parameter sets at once. Both run the model's program, compiled once (fl/program.py): poisonlab's
nn.Sequential vocabulary (fl/layers.py: Linear, Conv2d, ReLU, Tanh, MaxPool2d, Flatten) as batched kernels
with a hand-written backward, any other buffer-free module through ``torch.func.functional_call`` under
``vmap`` with autograd. The pieces: the mini-batch plan (fl/batching.py), the SGD loop over steps
(fl/stacked.py). Clients are processed in chunks sized to a memory budget.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.config.federation import ENGINE_MEMORY_BUDGET
from poisonlab.device import free_bytes, model_device
from poisonlab.config.local import LocalConfig  # defined once, with the YAML's federated.local
from poisonlab.errors import ConfigError, ResourceError
from poisonlab.fl.batching import plan_batches
from poisonlab.fl.program import AutogradProgram, LayerProgram, compile_layers, compile_model
from poisonlab.precision import autocast
from poisonlab.fl.stacked import train_stacked, views


def is_fast_sequential(model: nn.Module) -> bool:
    """True if every module of the model has a layer op (an nn.Sequential of Linear/Conv2d(groups=1)/ReLU/Tanh/
    MaxPool2d/Flatten(1, -1)): it trains with the hand-written backward."""
    return compile_layers(model) is not None


def autograd_program(model: nn.Module) -> AutogradProgram:
    """The model's autograd program (torch.func under vmap), also for a model the layer program could run: the
    path on which autocast applies (precision bf16)."""
    named = list(model.named_parameters())
    return AutogradProgram(model, tuple(n for n, _ in named), tuple(p.shape for _, p in named))


def check_trainable(model: nn.Module) -> None:
    """Vectorized training needs every piece of state to be a parameter: refuse modules with buffers."""
    buffers = [n for n, _ in model.named_buffers()]
    if buffers:
        raise ConfigError(f"model has buffers {buffers[:3]} (e.g. batch norm); accepted: buffer-free models"
                          " such as poisonlab.models")


def stacked_logits(model: nn.Module, params: list[torch.Tensor], x: torch.Tensor, shared: bool = False) -> torch.Tensor:
    """Logits (k, B, C) of k stacked parameter sets (each (k, *shape), in named_parameters order).

    x is (k, B, *sample) (each client its own batch) or, with shared=True, (B, *sample) for all.
    """
    return compile_model(model).logits(params, x, shared)


def flat_params(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one flat float32 vector (named_parameters order)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float()


def unflatten(model: nn.Module, flat: torch.Tensor) -> list[torch.Tensor]:
    """Split flat (..., d) into tensors shaped like the model's parameters (with the leading dims)."""
    return views(flat, [p.shape for p in model.parameters()])


def bytes_per_client(model: nn.Module, sample_shape: tuple[int, ...], batch_size: int) -> int:
    """Estimated bytes one client needs at once: 4 parameter-sized tensors plus 3 x activations of a batch."""
    numel = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            numel[0] += out.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *sample_shape, device=model_device(model)))
    finally:
        for h in handles:
            h.remove()
    d = sum(p.numel() for p in model.parameters())
    return 4 * (4 * d + 3 * numel[0] * batch_size)


def chunk_size(model: nn.Module, sample_shape: tuple[int, ...], batch_size: int, memory_budget: int) -> int:
    """How many clients fit in memory_budget bytes at once (at least one, or a ResourceError)."""
    per = bytes_per_client(model, sample_shape, batch_size)
    if per > memory_budget:
        raise ResourceError(f"memory_budget={memory_budget} bytes is below the {per} one client needs;"
                            f" accepted: at least {per}")
    return max(1, memory_budget // per)


_CHUNKS: dict[tuple, int] = {}

CONV_CHUNK = 4
"""At most this many clients per chunk for models with Conv2d ON THE CPU: a grouped convolution and max-pool over
a few clients stay in cache and run faster per client than over 100 (measured, docs/benchmarks.md). A GPU has
no such cache effect: there every client that fits the device budget runs in one stacked step."""

CUDA_BUDGET_FRACTION = 0.5
"""On CUDA the engine plans a chunk of clients within this fraction of the device memory free when the run
starts (torch.cuda.mem_get_info); the rest is left to the evaluation, the aggregator and the allocator."""


def engine_budget(device: torch.device, memory_budget: int | None = None) -> int:
    """Bytes one chunk of clients may use: memory_budget when given; else, on CUDA, CUDA_BUDGET_FRACTION of the
    device's free memory, and elsewhere ENGINE_MEMORY_BUDGET (host memory, checked by resources.py)."""
    if memory_budget is not None:
        return memory_budget
    free = free_bytes(device)
    return int(free * CUDA_BUDGET_FRACTION) if free is not None else ENGINE_MEMORY_BUDGET


def local_updates(model: nn.Module, global_params: torch.Tensor, datasets: list, cfg: LocalConfig,
                  generators: list[torch.Generator], memory_budget: int | None = None,
                  precision: str = "fp32") -> torch.Tensor:
    """Updates (k, d) = local params - global params of k clients trained from global_params.

    datasets: the k clients' Datasets (their local, possibly poisoned, data); generators: one per
    client for its batch order; memory_budget: bytes for one chunk of clients trained together (None: from
    the device, engine_budget). Everything runs on global_params' device, where the model and the data must
    be; the plan is drawn on the CPU (bit-identical on every device) and moved there once. precision 'bf16':
    the forward passes under bf16 autocast, through the model's autograd program (the layer program's
    hand-written backward is float32 only; poisonlab/precision.py).
    """
    check_trainable(model)
    device = global_params.device
    sizes = [len(ds) for ds in datasets]
    plan = plan_batches(sizes, cfg, generators).to(device)
    x = torch.cat([ds.x for ds in datasets])
    y = torch.cat([ds.y for ds in datasets])
    k, d = len(datasets), global_params.numel()
    program = compile_model(model) if precision == "fp32" else autograd_program(model)  # once: every chunk runs it
    key = (id(model), tuple(x.shape[1:]), cfg.batch_size, memory_budget, str(device), precision)
    if key not in _CHUNKS:  # the estimate runs a forward pass: once per model, shape and device
        per = chunk_size(model, key[1], cfg.batch_size, engine_budget(device, memory_budget))
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        cpu_conv = device.type == "cpu" and has_conv and isinstance(program, LayerProgram)
        _CHUNKS[key] = min(per, CONV_CHUNK) if cpu_conv else per
    per_chunk = _CHUNKS[key]
    updates = torch.empty(k, d, dtype=torch.float32, device=device)  # every row is written below
    for lo in range(0, k, per_chunk):  # chunks of clients, each trained all at once
        hi = min(k, lo + per_chunk)
        with autocast(device, precision):
            trained = train_stacked(program, global_params.expand(hi - lo, d), x, y, plan.clients(lo, hi), cfg)
        torch.sub(trained, global_params, out=updates[lo:hi])
    return updates
