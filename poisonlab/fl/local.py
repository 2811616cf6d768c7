"""Vectorized local training: all sampled clients' SGD at once, as stacked parameters.

Every parameter tensor gets a leading client axis (k, *shape). One forward and one backward per
local step serve all k clients; since the clients' losses are independent, the gradient of their
sum is each client's own gradient. The update is SGD with momentum and weight decay exactly as
``torch.optim.SGD`` (first step: buf = g; then buf = m*buf + g; p -= lr*buf; g includes wd*p).

Forward formulations (chosen by measurement on CPU, see docs/benchmarks.md):
- poisonlab's nn.Sequential vocabulary (Linear, Conv2d, ReLU, MaxPool2d, Flatten) is compiled to
  batched kernels: Linear as one ``baddbmm`` over clients; Conv2d as ONE grouped convolution with
  input (B, k*c, h, w), weights (k*c_out, c_in, kh, kw) and groups=k;
- ReLU -> MaxPool2d runs as MaxPool2d -> ReLU (identical values, 4x less ReLU work);
- any other buffer-free module runs through ``torch.func.functional_call`` under ``vmap``.

Backward: MLPs use the hand-written backward below (_mlp_grads); other fast Sequentials (CNNs) the one in
handgrad.py, which keeps every tensor in the layout its next kernel wants; other modules use autograd.

Clients take their own number of steps (epochs * ceil(n_i / B)); within a chunk they are ordered by
step count, so at step t only the prefix of clients still active is computed and updated (a slice,
not a copy) and finished clients' parameters stop changing. Short last batches are padded and the
padding gets zero loss weight, so each client's loss is the mean over its real samples, as in the
plain loop (reference.py). Clients are processed in chunks sized to a memory budget.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.config.local import LocalConfig  # defined once, with the YAML's federated.local
from poisonlab.errors import ConfigError, ResourceError, check_range
from poisonlab.fl.handgrad import compile_layers, grouped_images, pool_before_relu, stacked_grads


@dataclass(frozen=True)
class BatchPlan:
    """Which samples each client sees at each step.

    index: (S, k, B) int64 rows of the concatenated client data (padding points at row 0);
    weight: (S, k, B) float32 loss weights, 1/len(batch) for real samples and 0 for padding;
    steps: (k,) int64 steps each client takes (S = steps.max()).
    """

    index: torch.Tensor
    weight: torch.Tensor
    steps: torch.Tensor


def plan_batches(sizes: list[int], cfg: LocalConfig, generators: list[torch.Generator]) -> BatchPlan:
    """Per-client shuffled mini-batches for cfg.epochs epochs, one generator per client.

    Client i's rows in the concatenated data start at sum(sizes[:i]). Each epoch is one
    torch.randperm(n_i, generator=generators[i]); the last batch of an epoch may be short.
    """
    E = cfg.epochs
    slots, offset, weight, steps = _batch_layout(tuple(sizes), cfg.batch_size, E)
    index = torch.zeros(weight.numel(), dtype=torch.long)
    perms = [torch.randperm(m, generator=g) for m, g in zip(sizes, generators) for _ in range(E)]
    if perms and slots.numel():
        index[slots] = torch.cat(perms) + offset
    return BatchPlan(index.reshape(weight.shape), weight, steps)


@functools.lru_cache(maxsize=64)
def _batch_layout(sizes: tuple[int, ...], B: int, E: int) -> tuple[torch.Tensor, ...]:
    """Where each drawn element goes in the (S, k, B) plan; depends only on the sizes, so it is cached
    (a federation samples the same clients again and again; this was 11% of a small MLP round).
    The cached tensors are shared between plans: read them, never write to them.

    Returns (slots, offset, weight, steps): the flat plan position and the data-row offset of each
    element of cat(perms) (client-major, epoch-major within), the (S, k, B) loss weights, the steps.
    """
    k = len(sizes)
    n = torch.tensor(sizes, dtype=torch.long)
    per_epoch = (n + B - 1) // B
    steps = E * per_epoch
    S = int(steps.max()) if k else 0
    weight = torch.zeros(S * k * B, dtype=torch.float32)
    client = torch.repeat_interleave(torch.arange(k), E * n)  # each drawn element's client
    first = torch.cumsum(E * n, 0) - E * n
    pos = torch.arange(len(client)) - first[client]
    m = n[client]
    epoch, j = pos // m, pos % m
    step = epoch * per_epoch[client] + j // B
    slots = (step * k + client) * B + j % B
    offset = (torch.cumsum(n, 0) - n)[client]
    weight[slots] = 1.0 / torch.clamp(m - (j // B) * B, max=B).float()  # 1 / length of the element's batch
    return slots, offset, weight.reshape(S, k, B), steps


# --------------------------------------------------------------------------------------------
# Stacked forward: the Sequential vocabulary compiled to batched kernels, or torch.func.vmap.
# --------------------------------------------------------------------------------------------

_LAYERS = (nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten)


def is_fast_sequential(model: nn.Module) -> bool:
    """True if model is an nn.Sequential of Linear/Conv2d(groups=1)/ReLU/MaxPool2d/Flatten(1, -1)."""
    if not isinstance(model, nn.Sequential):
        return False
    for m in model:
        if not isinstance(m, _LAYERS):
            return False
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return False
        if isinstance(m, nn.Flatten) and (m.start_dim != 1 or m.end_dim != -1):
            return False
        if isinstance(m, nn.MaxPool2d) and m.return_indices:
            return False
    return True


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
    if is_fast_sequential(model):
        return _sequential_forward(model, params, x, shared)
    return _vmap_forward(model, params, x, shared)


def _vmap_forward(model: nn.Module, params: list[torch.Tensor], x: torch.Tensor, shared: bool) -> torch.Tensor:
    from torch.func import functional_call, vmap

    names = [n for n, _ in model.named_parameters()]

    def one(p: tuple[torch.Tensor, ...], xb: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, p)), (xb,))

    return vmap(one, in_dims=(0, None if shared else 0))(tuple(params), x)


def _sequential_forward(model: nn.Sequential, params: list[torch.Tensor], x: torch.Tensor, shared: bool) -> torch.Tensor:
    """Walk the Sequential keeping activations either as (k, B, f) ("kb") or (B, k*c, h, w) ("grouped")."""
    k = params[0].shape[0]
    it = iter(params)
    layout = "shared" if shared else "kb"  # shared: (B, *sample), the same input for every client
    if not shared and x.dim() == 5:  # images (k, B, c, h, w) -> grouped (B, k*c, h, w)
        x = grouped_images(x)
        layout = "grouped"
    for m in pool_before_relu(list(model)):
        if isinstance(m, nn.Conv2d):
            w = next(it)
            b = next(it) if m.bias is not None else None
            w_all = w.reshape(k * w.shape[1], *w.shape[2:])
            b_all = b.reshape(-1) if b is not None else None
            groups = 1 if layout == "shared" else k  # a shared input needs no groups: all filters see it
            x = F.conv2d(x, w_all, b_all, m.stride, m.padding, m.dilation, groups)
            layout = "grouped"
        elif isinstance(m, nn.Linear):
            w = next(it)
            b = next(it) if m.bias is not None else None
            if layout == "shared":  # (B, f) @ (f, k*out) -> (k, B, out)
                out = x @ w.reshape(-1, w.shape[-1]).T
                x = out.reshape(x.shape[0], k, -1).transpose(0, 1)
                x = x + b.unsqueeze(1) if b is not None else x
            elif b is not None:
                x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            else:
                x = torch.bmm(x, w.transpose(1, 2))
            layout = "kb"
        elif isinstance(m, nn.Flatten):
            if layout == "grouped":  # (B, k*c, h, w) -> (k, B, c*h*w)
                x = x.reshape(x.shape[0], k, -1).transpose(0, 1)
            elif layout == "shared":
                x = x.reshape(x.shape[0], -1)
            else:
                x = x.reshape(x.shape[0], x.shape[1], -1)
        elif isinstance(m, nn.ReLU):
            x = F.relu(x)
        elif isinstance(m, nn.MaxPool2d):
            x = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    if layout != "kb":
        raise ConfigError("model must end in nn.Linear to produce logits; accepted: poisonlab models")
    return x


# --------------------------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------------------------

def flat_params(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one flat float32 vector (named_parameters order)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float()


def unflatten(model: nn.Module, flat: torch.Tensor) -> list[torch.Tensor]:
    """Split flat (..., d) into tensors shaped like the model's parameters (with the leading dims)."""
    lead = flat.shape[:-1]
    out, start = [], 0
    for p in model.parameters():
        out.append(flat[..., start:start + p.numel()].reshape(*lead, *p.shape))
        start += p.numel()
    return out


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
            model(torch.zeros(1, *sample_shape))
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


def train_stacked(model: nn.Module, start: torch.Tensor, x: torch.Tensor, y: torch.Tensor, plan: BatchPlan,
                  cfg: LocalConfig) -> torch.Tensor:
    """Run the plan's SGD for its k clients from the stacked parameters start (k, d); returns the trained (k, d).

    The clients' parameters are trained in place as views into one (k, d) copy of start, so nothing is
    split into separate tensors or concatenated back.
    """
    order = torch.argsort(plan.steps, descending=True, stable=True)
    flat = start[order]  # a fresh copy: start is not modified
    params = unflatten(model, flat)  # views into flat, trained in place
    bufs = [torch.zeros_like(p) for p in params] if cfg.momentum > 0 else []
    index, weight, steps = plan.index[:, order], plan.weight[:, order], plan.steps[order]
    S = int(steps.max()) if len(steps) else 0
    active = (steps.unsqueeze(0) > torch.arange(S).unsqueeze(1)).sum(dim=1).tolist()  # a prefix per step
    if is_mlp(model):
        _train_mlp(model, params, bufs, x, y, index, weight, active, cfg)
    elif is_fast_sequential(model):
        layers = compile_layers(model)
        for t, a in enumerate(active):
            idx = index[t, :a]
            grads = stacked_grads(layers, [p[:a] for p in params], x[idx], y[idx], weight[t, :a])
            _sgd_step(params, grads, bufs, a, t == 0, cfg)
    else:
        for t, a in enumerate(active):
            idx = index[t, :a]
            leaves = [p[:a].detach().requires_grad_() for p in params]
            logits = stacked_logits(model, leaves, x[idx])  # (a, B, C) from (a, B, *sample)
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[idx].reshape(-1), reduction="none")
            loss = (losses * weight[t, :a].reshape(-1)).sum()
            grads = torch.autograd.grad(loss, leaves)
            with torch.no_grad():
                _sgd_step(params, grads, bufs, a, t == 0, cfg)
    if bool((order[1:] > order[:-1]).all()):  # already in client order (equal step counts): no copy
        return flat
    return flat[torch.argsort(order)]


GATHER_LIMIT_BYTES = 1 << 26
"""The MLP path gathers every step's batch up front when that takes at most this many bytes."""


@torch.no_grad()
def _train_mlp(model: nn.Sequential, params, bufs, x, y, index, weight, active: list[int], cfg: LocalConfig) -> None:
    """The MLP steps with the hand-written backward; all steps' batches and loss targets are gathered up
    front (one index op each) when they fit in 64 MiB, so a step is only its matrix products."""
    layers = [("linear", m.bias is not None) if isinstance(m, nn.Linear) else ("relu", False)
              for m in model if not isinstance(m, nn.Flatten)]
    classes = next(m.out_features for m in reversed(model) if isinstance(m, nn.Linear))
    whole = index.numel() * (x[:1].numel() + classes) * 4 <= GATHER_LIMIT_BYTES
    gathered = _mlp_inputs(x, y, index, weight, classes) if whole else None
    for t, a in enumerate(active):
        if gathered is not None:
            xb, target, w = (v[t, :a] for v in gathered)
        else:
            xb, target, w = _mlp_inputs(x, y, index[t, :a], weight[t, :a], classes)
        grads = _mlp_grads(layers, [p[:a] for p in params], xb, target, w)
        _sgd_step(params, grads, bufs, a, t == 0, cfg)


def _mlp_inputs(x, y, index, weight, classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For rows index (any leading shape L + (B,)): inputs L + (B, f), targets w * onehot(y) as L + (C, B),
    and loss weights as L + (1, B), in _mlp_grads's layout."""
    return x[index].flatten(index.dim()), _weighted_onehot_t(y[index], weight, classes), weight.unsqueeze(-2)


def _weighted_onehot_t(y: torch.Tensor, w: torch.Tensor, classes: int) -> torch.Tensor:
    """(w * onehot(y)) with classes before the batch, (..., C, B): the target term of the weighted
    cross-entropy gradient w * (softmax - onehot), in _mlp_grads's transposed layout."""
    out = torch.zeros(*y.shape[:-1], classes, y.shape[-1])
    return out.scatter_(-2, y.unsqueeze(-2), w.unsqueeze(-2))


def is_mlp(model: nn.Module) -> bool:
    """True for an nn.Sequential of Linear and ReLU layers, optionally starting with Flatten(1, -1)."""
    if not is_fast_sequential(model):
        return False
    body = list(model)[1:] if isinstance(model[0], nn.Flatten) else list(model)
    return all(isinstance(m, (nn.Linear, nn.ReLU)) for m in body) and isinstance(body[-1], nn.Linear)


def _mlp_grads(layers: list[tuple[str, bool]], params: list[torch.Tensor], x: torch.Tensor, target: torch.Tensor,
               w: torch.Tensor) -> list[torch.Tensor]:
    """Hand-written backward of sum_i w_i * CE_i for stacked MLPs (no autograd graph: less overhead).

    layers: ("linear", has_bias) or ("relu", False) in order; x (a, B, f); target = w * onehot(y) as
    (a, C, B); w (a, 1, B). Activations are kept transposed, features before the batch (a, f, B):
    z^T = W h^T + b (baddbmm), which runs 2.3x faster than h W^T for the narrow last layer on CPU
    (measured: 17 vs 39 us for 20 clients, B=32, 64->10). dL/dz^T = w * softmax - target; then per
    Linear dW = dz^T h, db = sum_b dz, dh^T = W^T dz^T; per ReLU dz = dh * (z > 0).
    """
    h = x.transpose(1, 2)
    it = iter(params)
    saved = []  # (kind, activation (a, f, B), weight, has_bias)
    for kind, has_bias in layers:
        if kind == "linear":
            W = next(it)
            b = next(it) if has_bias else None
            saved.append((kind, h, W, has_bias))
            h = torch.baddbmm(b.unsqueeze(2), W, h) if b is not None else torch.bmm(W, h)
        else:
            after_linear = bool(saved) and saved[-1][0] == "linear"
            h = torch.relu_(h) if after_linear else torch.relu(h)  # in place on a fresh pre-activation only
            saved.append((kind, h, None, False))
    grad = (h - h.amax(dim=1, keepdim=True)).exp_()  # softmax over the classes, written out: 3-4x faster
    grad *= w / grad.sum(dim=1, keepdim=True)  # than torch.softmax over ~10 classes on CPU (54 vs 192 us)
    grad -= target
    grads: list[torch.Tensor] = []
    for i, (kind, t, W, has_bias) in enumerate(reversed(saved)):
        if kind == "relu":
            grad = torch.ops.aten.threshold_backward(grad, t, 0)  # dz = dh where the output was > 0
            continue
        if has_bias:
            grads.append(grad.sum(dim=2))
        grads.append(torch.bmm(grad, t.transpose(1, 2)))
        if i < len(saved) - 1:
            grad = torch.bmm(W.transpose(1, 2), grad)
    return grads[::-1]


def _sgd_step(params, grads, bufs, a: int, first: bool, cfg: LocalConfig) -> None:
    """torch.optim.SGD's update (dampening 0, no nesterov) on the first a stacked clients, in place."""
    pa = [p[:a] for p in params]
    grads = list(grads)
    if cfg.weight_decay:
        grads = torch._foreach_add(grads, pa, alpha=cfg.weight_decay)
    if cfg.momentum > 0:
        ba = [b[:a] for b in bufs]
        if first:
            torch._foreach_copy_(ba, grads)
        else:
            torch._foreach_mul_(ba, cfg.momentum)
            torch._foreach_add_(ba, grads)
        grads = ba
    torch._foreach_add_(pa, grads, alpha=-cfg.lr)


_CHUNKS: dict[tuple, int] = {}

CONV_CHUNK = 4
"""At most this many clients per chunk for models with Conv2d: a grouped convolution and max-pool over
a few clients stay in cache and run faster per client than over 100 (measured, docs/benchmarks.md)."""


def local_updates(model: nn.Module, global_params: torch.Tensor, datasets: list, cfg: LocalConfig,
                  generators: list[torch.Generator], memory_budget: int = 1 << 30) -> torch.Tensor:
    """Updates (k, d) = local params - global params of k clients trained from global_params.

    datasets: the k clients' Datasets (their local, possibly poisoned, data); generators: one per
    client for its batch order; memory_budget: bytes for one chunk of clients trained together.
    """
    check_trainable(model)
    sizes = [len(ds) for ds in datasets]
    plan = plan_batches(sizes, cfg, generators)
    x = torch.cat([ds.x for ds in datasets])
    y = torch.cat([ds.y for ds in datasets])
    k, d = len(datasets), global_params.numel()
    key = (id(model), tuple(x.shape[1:]), cfg.batch_size, memory_budget)
    if key not in _CHUNKS:  # the estimate runs a forward pass: once per model and shape
        per = chunk_size(model, key[1], cfg.batch_size, memory_budget)
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        _CHUNKS[key] = min(per, CONV_CHUNK) if has_conv and is_fast_sequential(model) else per
    per_chunk = _CHUNKS[key]
    updates = torch.empty(k, d, dtype=torch.float32)  # every row is written below
    for lo in range(0, k, per_chunk):  # chunks of clients, each trained all at once
        hi = min(k, lo + per_chunk)
        sub = BatchPlan(plan.index[:, lo:hi], plan.weight[:, lo:hi], plan.steps[lo:hi])
        trained = train_stacked(model, global_params.expand(hi - lo, d), x, y, sub, cfg)
        torch.sub(trained, global_params, out=updates[lo:hi])
    return updates
