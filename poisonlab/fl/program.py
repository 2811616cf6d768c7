"""The layer program: a model compiled ONCE into a list of layer ops (fl/layers.py) that both training and
evaluation execute, for k stacked parameter sets (each parameter (k, *shape), in named_parameters order).

- Evaluation: ``logits(params, x, shared)`` runs the ops without a tape (Federation.accuracies evaluates
  many candidate models on the same data with shared=True).
- Training: ``grads(params, batch)`` runs the same ops with a tape, the gradient of the weighted
  cross-entropy sum_i w_i CE(z_i, y_i) -> dz = w * (softmax(z) - onehot(y)), then each op's backward over the
  tape in reverse. ``batches`` gives each step's batch in the program's training layout.

The compiler decides once what does not change from step to step: the ops (an nn.Sequential whose every module
has an op; anything else gets the AutogradProgram: torch.func.functional_call under vmap, and autograd),
ReLU -> MaxPool2d reordered to MaxPool2d -> ReLU (equal outputs, as max commutes with the monotone ReLU, and the
ReLU and its backward then touch a quarter of the activations), which ops need their input gradient (none before
the first op with parameters), and the training layout: an MLP (an optional Flatten, then ops that run in
COLUMNS, ending in a Linear) keeps activations transposed, (a, f, B), with the whole run's batches and loss
targets gathered up front when they fit, so a step is only its matrix products; any other program keeps them as
(a, B, f) features or grouped (B, a*c, h, w) images.
"""

from __future__ import annotations

import abc
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.data.augment import Draws
from poisonlab.data.augment import apply as augment_apply
from poisonlab.errors import ConfigError
from poisonlab.fl.dropout import MaskHooks, dropout_modules, evaluating, training
from poisonlab.fl.layers import COLUMNS, GROUPED, ROWS, SHARED, Flatten, LayerOp, Linear, MaxPool2d, Pass, ReLU, \
    grouped_images, op_for

GATHER_LIMIT_BYTES = 1 << 26
"""The MLP layout gathers every step's batch up front when that takes at most this many bytes (64 MiB)."""


class RowsLayout:
    """Training batches as gathered: x (a, B, *sample), labels y (a, B), loss weights w (a, B); images enter as
    grouped (B, a*c, h, w) in channels_last, features as ROWS (a, B, f)."""

    gathers_whole = False

    def inputs(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, classes: int) -> tuple:
        return x, y, w

    def enter(self, x: torch.Tensor, run: Pass) -> torch.Tensor:
        if x.dim() == 5:
            run.layout = GROUPED
            return grouped_images(x)
        run.layout = ROWS
        return x

    def loss_grad(self, z: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """dL/dz (a, B, C) = w * (softmax(z) - onehot(y)); softmax written out: faster than torch.softmax over
        ~10 classes on CPU."""
        g = torch.exp(z - z.amax(dim=2, keepdim=True))
        g *= w.unsqueeze(2) / g.sum(dim=2, keepdim=True)
        g.scatter_add_(2, y.unsqueeze(2), -w.unsqueeze(2))
        return g


class ColumnsLayout:
    """The MLP's layout: activations transposed, features before the batch (a, f, B). A batch is flattened
    inputs (a, B, f), targets w * onehot(y) as (a, C, B) and loss weights (a, 1, B); any leading shape works,
    so the whole run's batches can be gathered at once."""

    gathers_whole = True

    def inputs(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, classes: int) -> tuple:
        return x.flatten(y.dim()), _weighted_onehot_t(y, w, classes), w.unsqueeze(-2)

    def enter(self, x: torch.Tensor, run: Pass) -> torch.Tensor:
        run.layout = COLUMNS
        return x.transpose(1, 2)

    def loss_grad(self, z: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """dL/dz^T (a, C, B) = w * softmax - target; softmax written out: 3-4x faster than torch.softmax over
        ~10 classes on CPU (54 vs 192 us)."""
        grad = (z - z.amax(dim=1, keepdim=True)).exp_()
        grad *= w / grad.sum(dim=1, keepdim=True)
        grad -= target
        return grad


ROWS_LAYOUT, COLUMNS_LAYOUT = RowsLayout(), ColumnsLayout()


def _weighted_onehot_t(y: torch.Tensor, w: torch.Tensor, classes: int) -> torch.Tensor:
    """(w * onehot(y)) with classes before the batch, (..., C, B): the target term of the weighted
    cross-entropy gradient w * (softmax - onehot), in the transposed layout."""
    out = torch.zeros(*y.shape[:-1], classes, y.shape[-1], device=y.device)
    return out.scatter_(-2, y.unsqueeze(-2), w.unsqueeze(-2))


class Program(abc.ABC):
    """What training and evaluation run: ``shapes`` (the parameters' shapes), ``logits``, ``batches``, ``grads``."""

    shapes: tuple[torch.Size, ...]
    layout: RowsLayout | ColumnsLayout
    classes: int

    @abc.abstractmethod
    def logits(self, params: list[torch.Tensor], x: torch.Tensor, shared: bool = False,
               buffers: dict | None = None) -> torch.Tensor:
        """Logits (k, B, C) of k stacked parameter sets; x is (k, B, *sample), or (B, *sample) for all with shared;
        buffers: the model's buffers (name -> tensor), shared by the k sets (None: the model's own)."""

    @abc.abstractmethod
    def grads(self, params: list[torch.Tensor], batch: tuple, buffers: dict | None = None,
              masks: tuple | None = None) -> list[torch.Tensor]:
        """Gradients (each (a, *shape), params order) of sum over clients and samples of w * CE(logits, y).

        buffers: name -> (a, *shape) per-client buffers, updated in place; masks: per dropout module (a, B, ...).
        """

    def batches(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, weight: torch.Tensor,
                active: list[int], augment: Draws | None = None) -> Iterator[tuple[int, tuple]]:
        """(a, batch) per step t: the a active clients' rows index[t, :a] of x, y and their loss weights, in the
        layout's form; gathered for all steps at once when the layout wants it and it fits GATHER_LIMIT_BYTES.
        augment: the plan's (S, k, B) crop-and-flip draws (data/augment.py), applied to the gathered images."""
        lay = self.layout
        if lay.gathers_whole and index.numel() * (x[:1].numel() + self.classes) * 4 <= GATHER_LIMIT_BYTES:
            xs = x[index] if augment is None else augment_apply(x[index], augment)
            whole = lay.inputs(xs, y[index], weight, self.classes)
            for t, a in enumerate(active):
                yield a, tuple(v[t, :a] for v in whole)
        else:
            for t, a in enumerate(active):
                idx = index[t, :a]
                xs = x[idx] if augment is None else augment_apply(x[idx], augment[t, :a])
                yield a, lay.inputs(xs, y[idx], weight[t, :a], self.classes)


@dataclass(frozen=True, eq=False)
class LayerProgram(Program):
    """A Sequential compiled to layer ops: ``steps`` holds each op with its parameters' span in params."""

    steps: tuple[tuple[LayerOp, int, int], ...]
    shapes: tuple[torch.Size, ...]
    layout: RowsLayout | ColumnsLayout
    classes: int

    @property
    def ops(self) -> tuple[LayerOp, ...]:
        return tuple(op for op, _, _ in self.steps)

    def logits(self, params, x, shared=False, buffers=None):  # buffer-free: buffers has nothing it reads
        k = params[0].shape[0]
        if shared:
            return self._forward(params, x, Pass(k, SHARED))
        if x.dim() == 5:  # images (k, B, c, h, w) -> grouped (B, k*c, h, w)
            return self._forward(params, grouped_images(x), Pass(k, GROUPED))
        return self._forward(params, x, Pass(k, ROWS))

    def grads(self, params, batch, buffers=None, masks=None):  # a LayerProgram has no buffers nor dropout
        x, target, w = batch
        run = Pass(params[0].shape[0], ROWS, tape=[])
        z = self._forward(params, self.layout.enter(x, run), run)
        return _backward(run.tape, self.layout.loss_grad(z, target, w))

    def _forward(self, params: list[torch.Tensor], h: torch.Tensor, run: Pass) -> torch.Tensor:
        for op, lo, hi in self.steps:
            h = op.forward(h, params[lo:hi], run)
        if run.layout not in (ROWS, COLUMNS):
            raise ConfigError("model must end in nn.Linear to produce logits; accepted: poisonlab models")
        return h


def _backward(tape: list[tuple], g: torch.Tensor) -> list[torch.Tensor]:
    """Walk the tape backwards from dL/dlogits; returns the parameter gradients in forward order."""
    collected = []
    for op, saved in reversed(tape):
        g, grads = op.backward(g, saved)
        if grads:
            collected.append(grads)
        if g is None:  # the first op with parameters: nothing before it to differentiate
            break
    return [t for grads in reversed(collected) for t in grads]


@dataclass(frozen=True, eq=False)
class AutogradProgram(Program):
    """Any other module: forward through torch.func.functional_call under vmap, backward by autograd.

    Buffers (batch norm's running statistics, constant buffers) are passed per client, stacked (a, *shape), so
    batch norm's in-place running-statistic updates land in each client's own rows. Batch statistics are per
    client and never include padding: the active clients of a step are grouped by their real batch length
    (padding sits at the end of a batch) and each group runs as one vmap call on x[:, :L] (all full batches:
    one call); a model without batch statistics runs every step as one call, padding rows weighted 0. Dropout modules run in eval mode and a forward hook applies the client's pre-drawn mask
    (fl/dropout.py). Training runs the model in train mode, evaluation (``logits``) in eval mode.
    """

    model: nn.Module
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    layout: RowsLayout = ROWS_LAYOUT
    classes: int = 0
    dropout_names: tuple[str, ...] = ()
    batch_stats: bool = False

    def logits(self, params, x, shared=False, buffers=None):
        """Eval-mode logits (k, B, C); buffers: name -> tensor shared by the k parameter sets (None: the model's)."""
        with evaluating(self.model):
            return self._vmapped(params, buffers, x, None, x_dim=None if shared else 0, buffers_dim=None)

    def _vmapped(self, params, buffers, x, masks, x_dim, buffers_dim) -> torch.Tensor:
        """functional_call of the model under vmap over the parameter sets (and buffers/x/masks where batched)."""
        from torch.func import functional_call, vmap

        names = self.names + tuple(buffers or ())
        hooks = MaskHooks(self.model, self.dropout_names) if masks is not None else None

        def one(p, b, xb, m):
            if hooks is not None:
                hooks.masks = m
            return functional_call(self.model, dict(zip(names, p + b)), (xb,))

        try:
            b = tuple((buffers or {}).values())
            dims = (0, buffers_dim, x_dim, None if masks is None else 0)
            return vmap(one, in_dims=dims)(tuple(params), b, x, masks)
        finally:
            if hooks is not None:
                hooks.remove()

    def grads(self, params, batch, buffers=None, masks=None):
        """Gradients as Program.grads; buffers: name -> (a, *shape), updated in place (train mode); masks: each
        dropout module's (a, B, *mask shape) masks, in module order."""
        x, y, w = batch
        buffers = buffers if buffers is not None else {}
        if not self.batch_stats:  # padding rows have zero loss weight and touch no statistic: one call as is
            return self._grads(params, batch, buffers, masks)
        lengths = (w > 0).sum(dim=1)
        distinct = torch.unique(lengths).tolist()
        if len(distinct) == 1:  # one vmap call: views, so buffer updates land in place
            L = distinct[0]
            sub = tuple(m[:, :L] for m in masks) if masks is not None else None
            return self._grads(params, (x[:, :L], y[:, :L], w[:, :L]), buffers, sub)
        out = [torch.zeros_like(p) for p in params]
        for L in distinct:  # clients grouped by real batch length: batch statistics without padding rows
            sel = torch.nonzero(lengths == L).flatten()
            if L == 0:
                continue
            sub_buffers = {n: b[sel] for n, b in buffers.items()}
            sub_masks = tuple(m[sel, :L] for m in masks) if masks is not None else None
            grads = self._grads([p[sel] for p in params], (x[sel, :L], y[sel, :L], w[sel, :L]), sub_buffers, sub_masks)
            for o, g in zip(out, grads):
                o[sel] = g
            for n, b in buffers.items():
                b[sel] = sub_buffers[n]
        return out

    def _grads(self, params, batch, buffers, masks):
        x, y, w = batch
        with torch.enable_grad(), training(self.model):
            leaves = [p.detach().requires_grad_() for p in params]
            logits = self._vmapped(leaves, buffers, x, masks, x_dim=0, buffers_dim=0)  # (a, L, C)
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
            loss = (losses * w.reshape(-1)).sum()
            return list(torch.autograd.grad(loss, leaves))


def compile_model(model: nn.Module) -> Program:
    """The model's program: its layer program when every module has an op, else the AutogradProgram."""
    program = compile_layers(model)
    if program is not None:
        return program
    return autograd_program(model)


def autograd_program(model: nn.Module) -> AutogradProgram:
    """The model's AutogradProgram (torch.func under vmap), also for a model the layer program could run: the path
    on which autocast applies (precision bf16). Its dropout modules get the pre-drawn masks; batch_stats says
    whether a module normalises with batch statistics (batch / instance norm), which padding rows must not enter."""
    named = list(model.named_parameters())
    batch_stats = any(isinstance(m, nn.modules.batchnorm._NormBase) for m in model.modules())
    return AutogradProgram(model, tuple(n for n, _ in named), tuple(p.shape for _, p in named),
                           dropout_names=tuple(n for n, _ in dropout_modules(model)), batch_stats=batch_stats)


_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> (its layers when compiled, its LayerProgram): a model is compiled once, not at every call (a round
evaluates in slices of 512 samples; compiling a cnn costs ~100 us, finding it here ~1 us)."""


def compile_layers(model: nn.Module) -> LayerProgram | None:
    """The layer program of an nn.Sequential whose every module has an op (fl/layers.py), else None.

    Compiled once per model; replacing one of its layers compiles it again (changing a layer's settings in
    place afterwards is not noticed).
    """
    if not isinstance(model, nn.Sequential):
        return None
    layers = tuple(model)
    hit = _PROGRAMS.get(model)
    if hit is not None and hit[0] == layers:
        return hit[1]
    program = _compile(model, layers)
    if program is not None:
        _PROGRAMS[model] = (layers, program)
    return program


def _compile(model: nn.Sequential, layers: tuple[nn.Module, ...]) -> LayerProgram | None:
    ops = [op_for(m) for m in layers]
    if any(op is None for op in ops):
        return None
    ops = _pool_before_relu(ops)
    first = next((i for i, op in enumerate(ops) if op.n_params), len(ops))
    ops = [op if i > first else replace(op, needs_dx=False) for i, op in enumerate(ops)]
    steps, lo = [], 0
    for op in ops:
        steps.append((op, lo, lo + op.n_params))
        lo += op.n_params
    body = ops[1:] if ops and isinstance(ops[0], Flatten) else ops
    columns = bool(body) and all(op.columns for op in body) and isinstance(body[-1], Linear)
    classes = next((op.out_features for op in reversed(ops) if isinstance(op, Linear)), 0)
    return LayerProgram(tuple(steps), tuple(p.shape for p in model.parameters()),
                        COLUMNS_LAYOUT if columns else ROWS_LAYOUT, classes)


def _pool_before_relu(ops: list[LayerOp]) -> list[LayerOp]:
    """Swap ReLU -> MaxPool2d into MaxPool2d -> ReLU: equal outputs, and the ReLU and its backward then touch a
    quarter of the activations."""
    out = list(ops)
    for i in range(len(out) - 1):
        if isinstance(out[i], ReLU) and isinstance(out[i + 1], MaxPool2d):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out
