"""Local training of k clients at once: the entry point of vectorized local training.

``local_train`` trains all sampled clients' SGD from the global model as stacked parameters (every
parameter tensor gets a leading client axis (k, *shape)) and returns their updates (k, d) and their buffers
(name -> (k, *shape): batch norm's running statistics, each client's own); ``local_updates`` is its updates
alone; ``stacked_logits`` evaluates k parameter sets at once. Both run the model's program, compiled once
(fl/program.py): poisonlab's nn.Sequential vocabulary (fl/layers.py: Linear, Conv2d, ReLU, Tanh, MaxPool2d,
Flatten) as batched kernels with a hand-written backward, any other module (batch norm, group norm, layer
norm, dropout, constant buffers) through ``torch.func.functional_call`` under ``vmap`` with autograd. The
pieces: the mini-batch plan (fl/batching.py), the SGD loop over steps (fl/stacked.py), buffers
(fl/buffers.py), dropout masks (fl/dropout.py). Clients are processed in chunks sized to a memory budget.

A module vmap cannot run (e.g. batch norm with momentum=None reads its counter with .item()) is found by a
probe step before anything is drawn; such a model trains with the per-client reference loop (fl/reference.py,
the same batches and masks) after a one-line notice, once per model.
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch import nn

from poisonlab.config.federation import ENGINE_MEMORY_BUDGET
from poisonlab.device import free_bytes, model_device
from poisonlab.config.local import LocalConfig  # defined once, with the YAML's federated.local
from poisonlab.errors import ConfigError, PoisonlabError, ResourceError
from poisonlab.fl.batching import plan_batches
from poisonlab.fl.buffers import Buffers, model_buffers, stack
from poisonlab.fl.dropout import HIDDEN_RANDOM, DropoutMasks, evaluating
from poisonlab.fl.program import LayerProgram, Program, autograd_program, compile_layers, compile_model
from poisonlab.precision import autocast
from poisonlab.fl.stacked import train_stacked, views
from poisonlab.fl.trainable import ClientStarts, LocalResult, check_trainable, flat_params

__all__ = ["LocalConfig", "LocalResult", "bytes_per_client", "check_trainable", "chunk_size", "flat_params",
           "is_fast_sequential", "local_train", "local_updates", "plan_batches", "stacked_logits", "unflatten"]


def is_fast_sequential(model: nn.Module) -> bool:
    """True if every module of the model has a layer op (an nn.Sequential of Linear/Conv2d(groups=1)/ReLU/Tanh/
    MaxPool2d/Flatten(1, -1)): it trains with the hand-written backward."""
    return compile_layers(model) is not None


def stacked_logits(model: nn.Module, params: list[torch.Tensor], x: torch.Tensor, shared: bool = False,
                   buffers: Buffers | None = None) -> torch.Tensor:
    """Logits (k, B, C) of k stacked parameter sets (each (k, *shape), in named_parameters order), in eval mode.

    x is (k, B, *sample) (each client its own batch) or, with shared=True, (B, *sample) for all; buffers: the
    model's buffers (name -> tensor) shared by the k sets, e.g. the global model's (None: the model's own).
    """
    return compile_model(model).logits(params, x, shared, buffers)


def unflatten(model: nn.Module, flat: torch.Tensor) -> list[torch.Tensor]:
    """Split flat (..., d) into tensors shaped like the model's parameters (with the leading dims)."""
    return views(flat, [p.shape for p in model.parameters()])


def bytes_per_client(model: nn.Module, sample_shape: tuple[int, ...], batch_size: int) -> int:
    """Estimated bytes one client needs at once: 4 parameter-sized tensors plus 3 x activations of a batch."""
    numel = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            numel[0] += out[0].numel()  # one sample's

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), evaluating(model):  # eval: no running-statistic update, no dropout draw
            # 2 samples: batch norm without running statistics needs more than one
            model(torch.zeros(2, *sample_shape, device=model_device(model)))
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
                  buffers: Buffers | None = None, precision: str = "fp32") -> torch.Tensor:
    """The updates (k, d) of local_train (its buffers dropped)."""
    return local_train(model, global_params, datasets, cfg, generators, memory_budget, buffers,
                       precision=precision).updates


def local_train(model: nn.Module, global_params: torch.Tensor, datasets: list, cfg: LocalConfig,
                generators: list[torch.Generator], memory_budget: int | None = None,
                buffers: Buffers | None = None, starts: ClientStarts | None = None,
                precision: str = "fp32") -> LocalResult:
    """k clients trained from the global model (global_params and buffers; None: the model's own buffers).

    datasets: the k clients' Datasets (their local, possibly poisoned, data); generators: one per client for
    its batch order and then its dropout masks; memory_budget: bytes for one chunk of clients trained together
    (None: from the device, engine_budget); starts: each client's own starting params and buffers instead of the
    global model's (updates are then trained - starts.params). Everything runs on global_params' device, where
    the model and the data must be; the plan is drawn on the CPU (bit-identical on every device) and moved there
    once. precision 'bf16': the forward passes under bf16 autocast, through the model's autograd program (the
    layer program's hand-written backward is float32 only; poisonlab/precision.py).
    """
    check_trainable(model)
    device = global_params.device
    buffers = model_buffers(model) if buffers is None else buffers
    program = compile_model(model) if precision == "fp32" else autograd_program(model)  # once: every chunk runs it
    sample_shape = tuple(datasets[0].x.shape[1:]) if datasets else ()
    dropout = _dropout_masks(model, sample_shape) if datasets and not isinstance(program, LayerProgram) else None
    if datasets and not _vectorizable(model, program, global_params, buffers, dropout, sample_shape):
        from poisonlab.fl.reference import reference_train

        if precision != "fp32":
            raise ConfigError(f"precision {precision}: {type(model).__name__} trains with the per-client reference"
                              " loop, which runs float32 only; accepted: precision fp32 for this model")
        return reference_train(model, global_params, datasets, cfg, generators, buffers, starts)
    sizes = [len(ds) for ds in datasets]
    plan = plan_batches(sizes, cfg, generators).to(device)
    x = torch.cat([ds.x for ds in datasets])
    y = torch.cat([ds.y for ds in datasets])
    k, d = len(datasets), global_params.numel()
    key = (id(model), tuple(x.shape[1:]), cfg.batch_size, memory_budget, str(device), precision)
    if key not in _CHUNKS:  # the estimate runs a forward pass: once per model, shape and device
        per = chunk_size(model, key[1], cfg.batch_size, engine_budget(device, memory_budget))
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        cpu_conv = device.type == "cpu" and has_conv and isinstance(program, LayerProgram)
        _CHUNKS[key] = min(per, CONV_CHUNK) if cpu_conv else per
    per_chunk = _CHUNKS[key]
    updates = torch.empty(k, d, dtype=torch.float32, device=device)  # every row is written below
    rows = global_params.expand(k, d) if starts is None else starts.params
    # each client's own buffers, trained in place chunk by chunk
    state = stack(buffers, k) if starts is None else {n: b.clone() for n, b in starts.buffers.items()}
    for lo in range(0, k, per_chunk):  # chunks of clients, each trained all at once
        hi = min(k, lo + per_chunk)
        part = {n: b[lo:hi] for n, b in state.items()}  # views into state
        try:
            with autocast(device, precision):
                trained = train_stacked(program, rows[lo:hi], x, y, plan.clients(lo, hi), cfg, part, dropout,
                                        generators[lo:hi])
        except RuntimeError as err:
            if _random_in_vmap(err):
                raise ConfigError(HIDDEN_RANDOM) from None
            raise
        torch.sub(trained, rows[lo:hi], out=updates[lo:hi])
    return LocalResult(updates, state)


_DROPOUT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> (sample shape, its DropoutMasks): the shape probe runs once per model and input shape."""

_VECTORIZABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> whether its probe step ran under vmap (the fallback notice is printed once, when it did not)."""


def _dropout_masks(model: nn.Module, sample_shape: tuple[int, ...]) -> DropoutMasks:
    hit = _DROPOUT.get(model)
    if hit is None or hit[0] != sample_shape:
        hit = (sample_shape, DropoutMasks.of(model, sample_shape))
        _DROPOUT[model] = hit
    return hit[1]


def _random_in_vmap(err: BaseException) -> bool:
    return "vmap" in str(err) and "random" in str(err)


def _vectorizable(model: nn.Module, program: Program, global_params: torch.Tensor, buffers: Buffers,
                  dropout: DropoutMasks | None, sample_shape: tuple[int, ...]) -> bool:
    """Whether the vectorized engine can train model: one probe step of 2 clients x 2 zero samples on copies
    (nothing is drawn, nothing of the model changes). When it raises, a one-line notice says the model trains
    with the per-client reference loop (once per model); a random op inside the forward is a ConfigError."""
    if isinstance(program, LayerProgram):
        return True
    hit = _VECTORIZABLE.get(model)
    if hit is not None:
        return hit
    params = [p.detach().unsqueeze(0).repeat(2, *([1] * p.dim())) for p in unflatten(model, global_params)]
    x = global_params.new_zeros(2, 2, *sample_shape)
    y = torch.zeros(2, 2, dtype=torch.long, device=x.device)
    masks = tuple(x.new_ones(2, 2, *s) for s in dropout.shapes) if dropout else None
    try:
        program.grads(params, (x, y, x.new_full((2, 2), 0.5)), stack(buffers, 2), masks)
        ok = True
    except PoisonlabError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure under vmap: the reference loop trains it correctly
        if _random_in_vmap(err):
            raise ConfigError(HIDDEN_RANDOM) from None
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        warnings.warn(f"poisonlab: {type(model).__name__} cannot run in the vectorized engine ({reason});"
                      " training it with the per-client reference loop", RuntimeWarning, stacklevel=3)
        ok = False
    _VECTORIZABLE[model] = ok
    return ok
