"""Memory estimate of an experiment and a budget check, so a run too big for the machine is refused
up front with the estimate instead of dying of an out-of-memory kill hours in.

The estimate adds the tensors the engine holds at its peak (float32 = 4 bytes, float64 = 8):

- training: local clients are trained in chunks (fl/local.py); one client needs
  ``fl.local.bytes_per_client`` = 4 x (4d + 3 x activations x batch) bytes (parameters, gradients,
  momentum and a temporary; forward and backward activations of a batch), and a chunk holds
  min(k, memory_budget // that) clients (at most fl.local.CONV_CHUNK for its fast conv path), so this
  term is bounded by the chunk, not by all clients;
- updates: the (k, d) update matrix of the k clients of a round, plus the new matrix an update
  attack returns in rounds with attackers (attacks never modify their input): 2 x 4kd;
- aggregator: a (k, d) working copy (nonfinite guard, clipping, attacks) plus what the rule reports
  (its memory_parts): Krum / Multi-Krum / Bulyan a (k, k) float64 Gram and distance matrix
  (2 x 8k^2); median and trimmed mean sort column chunks (at most 256 MiB, base.CHUNK_BYTES);
  FoolsGold a (K, d) history of every client (capped by its max_history_bytes); FLAME a (k, k)
  cosine matrix;
- models: global parameters, the engine's evaluation copy and the final model (3 x 4d);
- data: the dataset, the clients' partitioned copies and the concatenated batch of a round's
  clients (3 x n x sample size x 4 bytes).

Centralized runs hold a clean and a poisoned model with their optimiser state (Adam: 2 moments),
a batch of activations, and the dataset plus its poisoned copy.

``check_budget(config, budget)`` raises ResourceError, in one line, with the estimate, its largest
parts and the budget; ``default_budget()`` is 75% of the machine's physical memory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

from poisonlab.config.federation import ENGINE_MEMORY_BUDGET  # FederationConfig.memory_budget's default
from poisonlab.config.schema import ExperimentConfig
from poisonlab.errors import ResourceError

GIB = 2**30

#: (sample shape, classes, samples) of the built-in datasets, per part, so no data is loaded to estimate.
KNOWN_DATA = {
    "digits": ((1, 8, 8), 10, {"all": 1797}),
    "breast_cancer": ((30,), 2, {"all": 569}),
    "wine": ((13,), 3, {"all": 178}),
    "mnist": ((1, 28, 28), 10, {"train": 60000, "test": 10000, "all": 70000}),
    "fashion_mnist": ((1, 28, 28), 10, {"train": 60000, "test": 10000, "all": 70000}),
    "cifar10": ((3, 32, 32), 10, {"train": 50000, "test": 10000, "all": 60000}),
}


@dataclass(frozen=True)
class DataShape:
    """What the estimate needs to know of the data: one sample's shape, the classes, the sample count."""

    sample_shape: tuple[int, ...]
    num_classes: int
    samples: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Total bytes and its parts (name -> bytes), with the figures the message quotes."""

    total: int
    parts: dict[str, int] = field(default_factory=dict)
    parameters: int = 0
    clients: int = 0
    clients_at_once: int = 0

    def describe(self, largest: int = 3) -> str:
        """'100 clients x 1.2M parameters: updates 12.0 GiB, training 1.0 GiB, ...' (largest parts first)."""
        head = f"{self.clients} clients x {human_count(self.parameters)} parameters" if self.clients else \
            f"{human_count(self.parameters)} parameters"
        if self.clients_at_once:
            head += f", {self.clients_at_once} trained at once"
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:largest]
        return f"{head}: " + ", ".join(f"{name} {human_bytes(b)}" for name, b in top)


def human_bytes(n: float) -> str:
    """Bytes as '38.2 GiB' / '512.0 MiB' / '12.0 KiB'."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_count(n: int) -> str:
    """1234567 -> '1.2M', 65000 -> '65.0K'."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def default_budget(fraction: float = 0.75) -> int:
    """fraction of the machine's physical memory in bytes (os.sysconf); 8 GiB where it is not known."""
    try:
        return int(fraction * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * GIB


# ---------------------------------------------------------------- the pieces
def data_shape(config: ExperimentConfig, data=None) -> DataShape:
    """Sample shape, classes and count: from data (a Dataset) if given, the built-in table, or by loading."""
    if data is None:
        known = KNOWN_DATA.get(config.data.dataset)
        part = config.data.params.get("part", "train")
        if known is not None and part in known[2]:
            return DataShape(known[0], known[1], known[2][part])
        if known is not None:
            return DataShape(known[0], known[1], known[2]["all"])
        if config.data.dataset == "synthetic":
            p = {"num_samples": 12000, "num_features": 32, "num_classes": 10, **config.data.params}
            return DataShape((int(p["num_features"]),), int(p["num_classes"]), int(p["num_samples"]))
        from poisonlab.data import load

        data = load(config.data.dataset, **config.data.params)
    return DataShape(tuple(data.input_shape), int(data.num_classes), len(data))


def meta_model(config: ExperimentConfig, shape: DataShape) -> torch.nn.Module:
    """The configured model on the meta device: its shapes without allocating its memory.

    A user's 'package.module:factory' is built for real instead (its code may not run on meta), once,
    before the run: build_model's checks (a Module, (B, num_classes) logits) fail here, naming model.name.
    """
    from poisonlab.model_spec import is_import_spec

    if is_import_spec(config.model.name):
        return _user_model(config, shape)
    from poisonlab.models import MODELS

    with torch.device("meta"):
        return MODELS.get(config.model.name, input_shape=shape.sample_shape, num_classes=max(2, shape.num_classes),
                          **config.model.params)


REAL_PROBE_BYTES = 64 * 2**20
"""A registered model with at most this many parameter bytes is probed on the CPU (probe_model)."""


def probe_model(config: ExperimentConfig, shape: DataShape, model: torch.nn.Module) -> torch.nn.Module:
    """The model per_client_bytes runs one batch through: the meta model, or, when it is small (parameters up to
    REAL_PROBE_BYTES), the same registered model built on the CPU.

    The probe counts output sizes only, which are the same on either device; but PyTorch's first computation on
    the meta device imports its tracing machinery (torch._dynamo, sympy: ~0.9 s, a whole small run's time),
    while building a small model on the CPU takes milliseconds. The CPU build's random initialisation runs
    inside torch.random.fork_rng, so the global generator is left as it was.
    """
    if next(model.parameters()).device.type != "meta" or 4 * sum(p.numel() for p in model.parameters()) > REAL_PROBE_BYTES:
        return model
    from poisonlab.models import MODELS

    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        return MODELS.get(config.model.name, input_shape=shape.sample_shape, num_classes=max(2, shape.num_classes),
                          **config.model.params).eval()


def _user_model(config: ExperimentConfig, shape: DataShape) -> torch.nn.Module:
    """The user's model built as the run builds it, in eval mode (the estimate's probe updates no statistics)."""
    from poisonlab.errors import ConfigError
    from poisonlab.model_spec import build_model

    try:
        model = build_model(config.model.name, shape.sample_shape, max(2, shape.num_classes), seed=config.seed,
                            **config.model.params)
    except ConfigError as err:
        raise ConfigError(f"model.name: {err}") from err.__cause__
    return model.eval()


def per_client_bytes(model: torch.nn.Module, shape: DataShape, batch_size: int) -> int:
    """fl.local.bytes_per_client (the engine's own chunking formula), run on the meta device for a meta model."""
    from poisonlab.fl.local import bytes_per_client

    device = next(model.parameters()).device
    with torch.device(device):
        return bytes_per_client(model, shape.sample_shape, batch_size)


def sampled_clients(config: ExperimentConfig) -> int:
    """k, the most updates a round can have: the sample (fraction or count), or all attackers that are forced
    to take part if they are more (the engine draws the sample around them, Federation.sample), at most K."""
    from poisonlab.fl.round import sample_size

    fed = config.federated
    K = fed.clients
    forced = sum(_attacker_count(a.clients, K) for a in fed.adversaries() if a.force_participation)
    return max(sample_size(fed.sample, K), min(K, forced))


def _attacker_count(clients, K: int) -> int:
    if isinstance(clients, list):
        return len(set(clients))
    return max(1, round(clients * K)) if isinstance(clients, float) else int(clients)


def aggregator_bytes(config: ExperimentConfig, k: int, d: int) -> dict[str, int]:
    """Temporaries of the aggregation chain beyond the update matrix: a (k, d) working copy plus what
    the configured rule reports (Rule.memory_parts; a chain merges its steps')."""
    from poisonlab.fl.aggregators import build_chain

    rule = build_chain((c.name, c.params) for c in config.federated.aggregator_chain())
    K = config.federated.clients
    parts = rule.memory_parts(k, d, K)
    return {"aggregator working copy": 4 * k * d,
            **{name.format(k=k, d=human_count(d), clients=K): b for name, b in parts.items()}}


# ---------------------------------------------------------------- the estimate
def estimate(config: ExperimentConfig, data=None, memory_budget: int = ENGINE_MEMORY_BUDGET,
             device: torch.device | None = None) -> MemoryEstimate:
    """The peak memory of the experiment, by part (see the module docstring for each term).

    data: the loaded Dataset if the caller has it (needed for datasets without a built-in shape);
    memory_budget: the engine's bytes per chunk of clients (FederationConfig.memory_budget; on CUDA the engine
    takes it from the device's free memory, fl/local.py engine_budget); device: where the run computes (the
    engine's CPU-only cap on conv chunks, CONV_CHUNK, applies on the CPU only).
    """
    shape = data_shape(config, data)
    model = meta_model(config, shape)
    d = sum(p.numel() for p in model.parameters())
    sample = 4 * math.prod(shape.sample_shape) + 8
    if config.federated is None:
        return _centralized(config, shape, model, d, sample)
    fed = config.federated
    k = sampled_clients(config)
    per = per_client_bytes(probe_model(config, shape, model), shape, fed.local.batch_size)
    at_once = min(k, max(1, memory_budget // per))
    from poisonlab.fl.local import CONV_CHUNK, is_fast_sequential

    on_cpu = device is None or device.type == "cpu"
    if on_cpu and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()) and is_fast_sequential(model):
        at_once = min(at_once, CONV_CHUNK)  # the engine's cap for conv models on the CPU (fl/local.py)
    parts = {
        f"training ({at_once} client{'s' if at_once != 1 else ''} at once)": at_once * per,
        f"updates ({k} x {human_count(d)})": 2 * 4 * k * d,
        **aggregator_bytes(config, k, d),
        "models": 3 * 4 * d,
        "data": 3 * shape.samples * sample,
    }
    return MemoryEstimate(sum(parts.values()), parts, d, k, at_once)


def _centralized(config: ExperimentConfig, shape: DataShape, model, d: int, sample: int) -> MemoryEstimate:
    states = 4 if config.train.optimizer == "adam" else 3  # params, grads, momentum (+ a second Adam moment)
    batch = max(config.train.batch_size, config.injection.batch_size or 0)
    activations = per_client_bytes(probe_model(config, shape, model), shape, batch) - 4 * 4 * d
    parts = {"models (clean and poisoned)": 2 * 4 * states * d, "activations": activations,
             "data (and its poisoned copy)": 2 * shape.samples * sample}
    return MemoryEstimate(sum(parts.values()), parts, d, 0, 0)


def check_budget(config: ExperimentConfig, budget_bytes: int, data=None, memory_budget: int | None = None,
                 device: torch.device | None = None) -> MemoryEstimate:
    """The estimate, or a one-line ResourceError when it is over budget_bytes (naming both and what to lower).

    On CUDA the estimate (everything the run keeps on the device) must also fit the device's free memory
    (torch.cuda.mem_get_info), and the engine's chunk is planned from it as the engine will (engine_budget)."""
    from poisonlab.device import free_bytes
    from poisonlab.fl.local import engine_budget

    device = torch.device("cpu") if device is None else device
    est = estimate(config, data, engine_budget(device, memory_budget), device)
    lower = "lower federated.sample, federated.clients or the model size" if config.federated is not None \
        else "lower the model size, train.batch_size or the dataset size"
    free = free_bytes(device)
    if free is not None and est.total > free:
        raise ResourceError(f"this experiment needs about {human_bytes(est.total)} on {device} ({est.describe()}),"
                            f" which has {human_bytes(free)} free; {lower}")
    if est.total > budget_bytes:
        raise ResourceError(f"this experiment needs about {human_bytes(est.total)} ({est.describe()}),"
                            f" over the budget of {human_bytes(budget_bytes)}; {lower}")
    return est
