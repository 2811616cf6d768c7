"""Which path trains a model's clients: the vectorized engine or the plain per-client loop in its best layout.

Three paths compute the same local SGD (same batches, same optimizer; only float rounding differs):

- ``vectorized``: all clients in one stacked step (fl/local.py);
- ``reference``: the plain per-client loop, NCHW (fl/reference.py);
- ``reference_channels_last``: the same loop with the model and batches in ``torch.channels_last``, the layout a
  CPU-savvy user writes for a convolutional model (offered for image inputs to a model with a Conv2d only).

``engine: auto`` picks the fastest of them per *model shape* (architecture, input shape, clients per round, batch
size, device, torch threads and version, precision): the first time a shape trains, one probe times a short round
of every candidate (each client's first PROBE_STEPS batches, one warm-up call, then the best of PROBE_REPEATS
calls, candidates interleaved), and the choice is cached in memory and on disk (JSON under the user's cache
directory, a schema with a format number; never pickle). A loop is chosen only when it is at least MARGIN faster
than the vectorized engine, so timing noise keeps the default path.

Why the cache on disk: the paths differ by float rounding, so a choice that flipped between runs would break "same
seed, same numbers". Read from disk, the same config picks the same path on the same machine every time; each
run records the path it used (FederationResult.engine) and the choice is printed once per process. On another
machine (or another thread count) the choice, and so the last bits of the results, may differ: ``auto`` is
therefore opt-in and ``vectorized`` stays the default (docs/benchmarks.md, "Engine vs the best plain loop").
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from poisonlab.config.local import LocalConfig
from poisonlab.errors import ConfigError
from poisonlab.fl.buffers import Buffers
from poisonlab.fl.local import local_train
from poisonlab.fl.reference import reference_train
from poisonlab.fl.trainable import ClientStarts, LocalResult
from poisonlab.rng import generator

ENGINES = ("vectorized", "reference", "reference_channels_last")
"""The paths a federation can train with; ``auto`` chooses among them."""

LOOPS = ENGINES[1:]
PROBE_STEPS = 1
"""Batches per client in the probe round: one local step of every client (the loop's per-client model copy and
optimizer are counted once per step, which favours the vectorized engine, the default)."""
PROBE_REPEATS = 2
"""Timed probe calls per candidate after one warm-up; the best counts."""
MARGIN = 0.05
"""A loop is chosen only when its probe time is below (1 - MARGIN) x the vectorized engine's."""
FORMAT = 1
"""Bumped when the cache file's layout changes (an older file is then ignored)."""


@dataclass(frozen=True)
class Choice:
    """The path chosen for a model shape, the probe's best seconds per candidate and where the choice came from
    ("probe", or "disk" when read from the cache file)."""

    engine: str
    seconds: dict[str, float] = field(default_factory=dict)
    source: str = "probe"


_MEMORY: dict[str, Choice] = {}
"""shape key -> choice, for this process."""
_LOCK = threading.Lock()
"""Held while a choice is looked up or probed: a sweep's cells (threads) of one shape probe once, not at once."""


def train_with(engine: str, model: nn.Module, global_params: torch.Tensor, datasets: list, cfg: LocalConfig,
               generators: list[torch.Generator], memory_budget: int | None = None, buffers: Buffers | None = None,
               starts: ClientStarts | None = None, precision: str = "fp32") -> LocalResult:
    """Local training of the clients with one named path (one of ENGINES)."""
    if engine == "vectorized":
        return local_train(model, global_params, datasets, cfg, generators, memory_budget, buffers, starts,
                           precision=precision)
    if engine not in LOOPS:
        raise ConfigError(f"engine {engine!r} is not a training path; accepted: {', '.join(ENGINES)}")
    if precision != "fp32":
        raise ConfigError(f"engine {engine!r} is the fp32 per-client loop; precision={precision!r} is not;"
                          " accepted: precision fp32 with the loop engines")
    return reference_train(model, global_params, datasets, cfg, generators, buffers, starts,
                           channels_last=engine == "reference_channels_last")


def candidates(model: nn.Module, sample_shape: tuple[int, ...], precision: str = "fp32") -> tuple[str, ...]:
    """The paths worth timing: the loops only in fp32; channels_last only for images into a model with a Conv2d."""
    if precision != "fp32":
        return ("vectorized",)
    conv = len(sample_shape) == 3 and any(isinstance(m, nn.Conv2d) for m in model.modules())
    return ENGINES if conv else ENGINES[:2]


def shape_key(model: nn.Module, sample_shape: tuple[int, ...], clients: int, cfg: LocalConfig,
              device: torch.device, precision: str = "fp32") -> str:
    """A hash of everything the paths' speeds depend on: the model's architecture (its repr and parameter shapes),
    input shape, clients per round, batch size, device (its name), torch's thread count and version, precision."""
    parts = [repr(model), [tuple(p.shape) for p in model.parameters()], tuple(sample_shape), clients,
             cfg.batch_size, cfg.momentum > 0, cfg.augment is not None, device_name(device),
             torch.get_num_threads(), torch.__version__, precision]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def device_name(device: torch.device) -> str:
    """The device as a timing depends on it: the GPU's name on CUDA, else the processor and core count."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return f"{device.type} {platform.machine()} {platform.processor()} {os.cpu_count()} cores"


def choose(model: nn.Module, global_params: torch.Tensor, datasets: list, cfg: LocalConfig,
           memory_budget: int | None = None, buffers: Buffers | None = None, precision: str = "fp32",
           disk: bool = True, quiet: bool = False) -> Choice:
    """The path for this model shape: from this process's cache, else the cache file (disk=True), else a probe
    (written to both). Prints one line when the choice is made in this process (unless quiet)."""
    with _LOCK:
        return _choose(model, global_params, datasets, cfg, memory_budget, buffers, precision, disk, quiet)


def _choose(model, global_params, datasets, cfg, memory_budget, buffers, precision, disk, quiet) -> Choice:
    """choose's work, under the lock."""
    sample_shape = tuple(datasets[0].x.shape[1:])
    names = candidates(model, sample_shape, precision)
    key = shape_key(model, sample_shape, len(datasets), cfg, global_params.device, precision)
    hit = _MEMORY.get(key)
    if hit is not None:
        return hit
    choice = _read(key, names) if disk else None
    if choice is None:
        choice = probe(model, global_params, datasets, cfg, names, memory_budget, buffers, precision)
        if disk:
            _write(key, choice, f"{type(model).__name__} {sample_shape} x {len(datasets)} clients,"
                                f" batch {cfg.batch_size}, {device_name(global_params.device)}")
    _MEMORY[key] = choice
    if not quiet:
        print(f"poisonlab: engine auto -> {choice.engine} for {type(model).__name__} {sample_shape},"
              f" {len(datasets)} clients, batch {cfg.batch_size} ({describe(choice)})", file=sys.stderr)
    return choice


def describe(choice: Choice) -> str:
    """The choice's origin and probe times in words."""
    times = ", ".join(f"{n} {s * 1e3:.1f} ms" for n, s in choice.seconds.items())
    where = "measured now" if choice.source == "probe" else "cached on this machine"
    return f"{where}; probe round: {times}" if times else where


def probe(model: nn.Module, global_params: torch.Tensor, datasets: list, cfg: LocalConfig, names: tuple[str, ...],
          memory_budget: int | None = None, buffers: Buffers | None = None, precision: str = "fp32") -> Choice:
    """Time a short round (each client's first PROBE_STEPS batches, one epoch, its own probe generator: nothing of
    the run's streams is drawn) with every candidate; the fastest, a loop only if MARGIN below the vectorized."""
    if len(names) == 1:
        return Choice(names[0], {}, "probe")
    n = PROBE_STEPS * cfg.batch_size
    short = [ds.subset(torch.arange(min(len(ds), n), device=ds.x.device)) for ds in datasets]
    one = cfg.model_copy(update={"epochs": 1})
    device = global_params.device

    def run(name: str) -> float:
        gens = [generator(0, "engine-probe", i) for i in range(len(short))]
        _sync(device)
        start = time.perf_counter()
        train_with(name, model, global_params, short, one, gens, memory_budget, buffers, precision=precision)
        _sync(device)
        return time.perf_counter() - start

    for name in names:  # warm-up calls (first-use costs: allocations, compiled programs), not counted
        run(name)
    best = {name: float("inf") for name in names}
    for _ in range(PROBE_REPEATS):  # candidates interleaved: a load change hits all of them
        for name in names:
            best[name] = min(best[name], run(name))
    return Choice(pick(best), best, "probe")


def pick(seconds: dict[str, float]) -> str:
    """The fastest path of the probe's times (name -> seconds); a loop only if MARGIN below the vectorized engine."""
    loops = [n for n in LOOPS if n in seconds]
    if not loops:
        return "vectorized"
    fastest = min(loops, key=lambda n: seconds[n])
    return fastest if seconds[fastest] < (1.0 - MARGIN) * seconds["vectorized"] else "vectorized"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cache_path() -> Path:
    """The cache file: engine-choice.json in poisonlab's cache directory (catalog_cache.cache_dir)."""
    from poisonlab.catalog_cache import cache_dir

    return cache_dir() / "engine-choice.json"


def _load() -> dict:
    """The cache file's choices (key -> entry), or {} when absent, unreadable, damaged or of another format."""
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("choices"), dict):
            return data["choices"]
    except (OSError, ValueError):
        pass
    return {}


def _read(key: str, names: tuple[str, ...]) -> Choice | None:
    """The cached choice for key if it names one of the candidates, else None (probe again)."""
    entry = _load().get(key)
    if not isinstance(entry, dict) or entry.get("engine") not in names:
        return None
    seconds = entry.get("seconds")
    seconds = {str(k): float(v) for k, v in seconds.items()} if isinstance(seconds, dict) else {}
    return Choice(str(entry["engine"]), seconds, "disk")


def _write(key: str, choice: Choice, what: str) -> None:
    """Add the choice to the cache file (atomically: a temporary file renamed); a cache that cannot be written is
    skipped silently (the choice stays in memory for this process)."""
    path, tmp = cache_path(), None
    choices = _load()
    choices[key] = {"engine": choice.engine, "seconds": choice.seconds, "what": what}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".engine-choice-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "choices": choices}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
