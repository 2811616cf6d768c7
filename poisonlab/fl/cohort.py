"""A cohort: several federations (sweep cells) whose local training runs as ONE stacked engine call per round.

A sweep's cells with the same model shape and local-training settings differ only in what the server does with
the updates (attacks, rules). Each cell runs its own experiment in its own thread (poisonlab/sweep_exec.py); when
its Federation trains its clients (Federation.train_clients) it hands the request to the cohort of its thread
(``current()``) and waits. When every live member of the cohort is waiting, the last one to arrive trains all
requests at once: the clients of every cell are rows of one stacked parameter matrix (cells x clients rows) and
one ``train_stacked`` call (fl/stacked.py) per chunk trains them, each row from its own cell's global model. The
clients' data is concatenated once per distinct Dataset object (cells share their clean clients, sweep_exec's
shared builds) and kept while the same datasets come back round after round.

Rows are independent in the engine (each client its own matrices, batch-reduced per row), so each cell's updates
are those it gets training alone: the same plan (per-client generators), the same ops per row (tests compare them).
Only the layer-program path is stacked (buffer-free nn.Sequential models, fp32, no per-client starts); any other
request trains alone through fl/local.py, without waiting.
"""

from __future__ import annotations

import contextvars
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from poisonlab.config.local import LocalConfig
from poisonlab.fl.batching import plan_batches
from poisonlab.fl.local import chunk_size, engine_budget, local_train
from poisonlab.fl.program import LayerProgram, compile_model
from poisonlab.fl.stacked import train_stacked
from poisonlab.fl.trainable import LocalResult

_CURRENT: contextvars.ContextVar[Cohort | None] = contextvars.ContextVar("poisonlab_cohort", default=None)


def current() -> Cohort | None:
    """The cohort this thread's federation trains with, or None (train alone)."""
    return _CURRENT.get()


@dataclass
class _Request:
    """One federation's local training for one round, and (once trained) its result or error."""

    model: nn.Module
    global_params: torch.Tensor
    datasets: list
    cfg: LocalConfig
    generators: list[torch.Generator]
    memory_budget: int | None
    result: LocalResult | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class Cohort:
    """The members (threads) that train together; members join with ``member()`` and train with ``train``."""

    def __init__(self):
        self._cond = threading.Condition()
        self._live = 0
        self._pending: list[_Request] = []
        self._busy = False
        self._data_key: tuple = ()
        self._data: tuple = ()
        self.batches = 0  # stacked calls made (for tests and logs)

    @contextmanager
    def member(self):
        """This thread is a member while inside: its federations' training waits for the other members."""
        with self._cond:
            self._live += 1
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)
            with self._cond:
                self._live -= 1
                self._cond.notify_all()  # the waiting members may now be all that is left

    def train(self, model: nn.Module, global_params: torch.Tensor, datasets: list, cfg: LocalConfig,
              generators: list[torch.Generator], memory_budget: int | None, buffers: dict) -> LocalResult:
        """local_train's result for this member's clients, trained together with the other members' requests."""
        if not stackable(model, global_params, buffers, datasets):
            return local_train(model, global_params, datasets, cfg, generators, memory_budget, buffers)
        request = _Request(model, global_params, datasets, cfg, generators, memory_budget)
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()
            while not request.done:
                if not self._busy and self._pending and len(self._pending) >= self._live:
                    batch, self._pending, self._busy = self._pending, [], True
                    self._cond.release()
                    try:
                        self._run(batch)
                    finally:
                        self._cond.acquire()
                        self._busy = False
                        self._cond.notify_all()
                else:
                    self._cond.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _run(self, batch: list[_Request]) -> None:
        """Train the batch's requests: together where they share model shape and settings, else each alone."""
        groups: dict[tuple, list[_Request]] = {}
        for r in batch:
            key = (tuple(p.shape for p in r.model.parameters()), repr(r.cfg), r.memory_budget,
                   str(r.global_params.device), tuple(r.datasets[0].x.shape[1:]))
            groups.setdefault(key, []).append(r)
        for group in groups.values():
            try:
                results = self._train_together(group)
                for r, res in zip(group, results):
                    r.result = res
            except BaseException as err:  # noqa: BLE001 - each member re-raises it in its own thread
                for r in group:
                    r.error = err
            for r in group:
                r.done = True

    def _train_together(self, group: list[_Request]) -> list[LocalResult]:
        """One plan over every request's clients, trained in chunks of the engine's size (fl/local.py)."""
        self.batches += 1
        first = group[0]
        program = compile_model(first.model)
        device = first.global_params.device
        datasets = [ds for r in group for ds in r.datasets]
        generators = [g for r in group for g in r.generators]
        x, y, base = self._concatenated(datasets)
        plan = plan_batches([len(ds) for ds in datasets], first.cfg, generators)
        index = _remap(plan.index, [len(ds) for ds in datasets], base, plan.weight)
        plan = type(plan)(index, plan.weight, plan.steps, plan.augment).to(device)
        starts = torch.cat([r.global_params.expand(len(r.datasets), -1) for r in group])
        budget = engine_budget(device, first.memory_budget)
        per_chunk = chunk_size(first.model, tuple(x.shape[1:]), first.cfg.batch_size, budget)
        updates = torch.empty_like(starts)
        for lo in range(0, len(datasets), per_chunk):
            hi = min(len(datasets), lo + per_chunk)
            trained = train_stacked(program, starts[lo:hi], x, y, plan.clients(lo, hi), first.cfg, {}, None,
                                    generators[lo:hi])
            torch.sub(trained, starts[lo:hi], out=updates[lo:hi])
        out, lo = [], 0
        for r in group:
            out.append(LocalResult(updates[lo:lo + len(r.datasets)], {}))
            lo += len(r.datasets)
        return out

    def _concatenated(self, datasets: list) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """x, y of each distinct Dataset once (kept while the same ones come back) and each dataset's first row."""
        distinct = list({id(ds): ds for ds in datasets}.values())
        key = tuple(id(ds) for ds in distinct)
        if key != self._data_key:  # the datasets are held in self._data, so their ids stay theirs
            starts, n = {}, 0
            for ds in distinct:
                starts[id(ds)] = n
                n += len(ds)
            self._data_key = key
            self._data = (distinct, torch.cat([ds.x for ds in distinct]), torch.cat([ds.y for ds in distinct]), starts)
        _, x, y, starts = self._data
        return x, y, [starts[id(ds)] for ds in datasets]


def stackable(model: nn.Module, global_params: torch.Tensor, buffers: dict, datasets: list) -> bool:
    """Whether a request can join a stacked call: a buffer-free layer-program model with data to train."""
    return bool(datasets) and not buffers and isinstance(compile_model(model), LayerProgram)


def _remap(index: torch.Tensor, sizes: list[int], base: list[int], weight: torch.Tensor) -> torch.Tensor:
    """The plan's rows of the per-client concatenation (client i from sum(sizes[:i])) moved to the rows of the
    distinct datasets' concatenation (client i from base[i]); padding slots (weight 0) point at row 0."""
    n = torch.tensor(sizes, dtype=torch.long)
    shift = torch.tensor(base, dtype=torch.long) - (torch.cumsum(n, 0) - n)
    moved = index + shift.view(1, -1, 1)
    return torch.where(weight > 0, moved, torch.zeros_like(moved))
