"""The federated round loop: sample -> local train -> attack -> aggregate -> apply -> evaluate.

    fed = Federation(model, clients, test, FederationConfig(rounds=30, sample=0.1), aggregator=rule,
                     adversaries=[Adversary(clients=2, poison=..., attack=...)])
    result = fed.run()          # result.history (list of RoundRecord), result.params (d,), result.model

Each round: the sampled clients (seeded per round; active adversaries with force=True always in)
train from the global model, all at once (local.py); the (k, d) updates get the adversaries' boost
and update attacks; the aggregator (FedAvg weighted mean by default, weights = local sample counts)
reduces them; the global model moves by server_lr * aggregate unless that gives a non-finite model
(then it is kept and the record says applied=False).

The global model is its flat parameters (d,) plus its buffers (``self.buffers``: batch norm's running
statistics, constant buffers; fl/buffers.py). The update matrix (k, d) is parameters only: attacks and
aggregators act on parameters only. Each client trains its own copy of the buffers; when the round is
applied the server sets the new global buffers to the weighted mean of the sampled clients' buffers
(weights = local sample counts, as FedAvg; num_batches_tracked: the mean count, rounded), whichever rows
the aggregator kept. Evaluation, candidate evaluation and checkpoints use the global buffers.
With config.batch_norm="local" (FedBN, fl/fedbn.py) each client keeps its own batch-norm parameters and
buffers instead: they are zero in the update matrix, and the evaluated global model carries the weighted
mean of all clients' batch-norm layers. Every draw comes from poisonlab.rng streams
keyed by (seed, purpose, round, client), so the same config and seed give the same history, and a
resumed run (checkpoint_every, run(resume=True)) continues exactly as an uninterrupted one.

The server steps (sampling, adversaries, aggregate-and-apply, the round record) are the shared
ones of poisonlab.fl.round, which the Flower strategy calls too. A stateful rule's state
(Aggregate.state) is kept here (aggregator_state), passed back as RoundContext.state the next
round and checkpointed with the global model.

What the rules and attacks get in RoundContext.extras:
  "weights": (k,) the rows' aggregation weights (local sample counts);
  "aggregator": the deployed rule (chain), for the aggregator-aware attacks (fl/attacks/aware.py);
  "server_update": (d,) the server's own update on root_data (FLTrust's g0), if root_data is given;
  "validate", "base_accuracy": accuracy of global + server_lr * candidate on validation_data, if given.
The last three are computed when first read (fl/extras.py), so a rule that reads none costs no server training.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from poisonlab.config.federation import FederationConfig  # defined once, sharing the YAML's federated fields
from poisonlab.data.dataset import Dataset
from poisonlab.device import host, model_device, move_dataset, resolve
from poisonlab.precision import check_precision
from poisonlab.errors import ConfigError, DataError
from poisonlab.divergence import check_round
from poisonlab.fl import cohort
from poisonlab.fl.adversary import Adversary, resolve_clients
from poisonlab.fl.extras import LazyExtras
from poisonlab.fl.buffers import average, load_buffers, model_buffers, same_layout
from poisonlab.fl.checkpoint import load_checkpoint, save_checkpoint
from poisonlab.fl.fedbn import LocalNorm
from poisonlab.fl.history import RoundRecord
from poisonlab.fl.reference import reference_train
from poisonlab.fl.local import LocalResult, check_trainable, flat_params, local_train, local_updates, stacked_logits, \
    unflatten
from poisonlab.fl.round import aggregate_and_apply, apply_adversaries, round_record, sample_clients, sample_size
from poisonlab.fl.types import RoundContext
from poisonlab.metrics import attack_success_rate, flip_count
from poisonlab.model_spec import ModelSpec, build_model
from poisonlab.rng import generator
from poisonlab.training import predict_logits


@dataclass
class FederationResult:
    """history: one RoundRecord per round; params: final flat global parameters; model: a model holding them
    and the final global buffers; adversary_clients: the client ids of each adversary; buffers: the final global
    buffers (name -> tensor; empty for a buffer-free model); engine: the path that trained the clients (config.engine,
    'auto' resolved: fl/engine_choice.py)."""

    history: list[RoundRecord]
    params: torch.Tensor
    model: nn.Module
    adversary_clients: list[list[int]]
    buffers: dict = field(default_factory=dict)
    engine: str = "vectorized"


def default_aggregator():
    """FedAvg as a config builds it: the non-finite guard, then the weighted mean."""
    from poisonlab.fl.aggregators import build_rule

    return build_rule("mean")


class Federation:
    """K clients with local Datasets, a global model, an aggregator and optional adversaries.

    model: an nn.Module (its parameters and buffers are the initial global model; it is not modified), or a
    model spec that poisonlab.model_spec.build_model builds for the clients' input shape with config.seed;
    clients: the K clean local Datasets; test: the clean test set; triggered_test: the test inputs
    with the trigger applied and their TRUE labels (ASR needs config.target); root_data: the server's
    root set for FLTrust; validation_data: the server's held-out set for validation-based rejection;
    device: where the federation computes (auto | cpu | cuda | cuda:N | mps, poisonlab/device.py; None: where the
    given model is, the CPU for a spec): the model and every dataset are moved there once, after the adversaries'
    poisons are applied on the host (a config run passes its resolved `device:`); precision:
    fp32, or bf16 autocast for local training (poisonlab/precision.py).
    """

    def __init__(self, model: nn.Module | ModelSpec, clients: Sequence[Dataset], test: Dataset,
                 config: FederationConfig = FederationConfig(), aggregator=None,
                 adversaries: Sequence[Adversary] = (), triggered_test: Dataset | None = None,
                 root_data: Dataset | None = None, validation_data: Dataset | None = None,
                 device: str | torch.device | None = None, precision: str = "fp32"):
        if not clients:
            raise ConfigError("a federation needs at least one client dataset")
        if not isinstance(model, nn.Module):  # a name, 'package.module:factory' or a factory
            model = build_model(model, clients[0].input_shape, test.num_classes, seed=config.seed)
        check_trainable(model)
        if triggered_test is not None and config.target is None:
            raise ConfigError("triggered_test is given but config.target is None; set the backdoor target class")
        self.model, self.clients, self.test, self.config = model, list(clients), test, config
        self.precision = check_precision(precision)
        self.aggregator = aggregator if aggregator is not None else default_aggregator()
        self.adversaries = list(adversaries)
        self.triggered_test, self.root_data, self.validation_data = triggered_test, root_data, validation_data
        with host():  # the attackers' draws and their poisons: data preparation, on the CPU
            self.adversary_clients = resolve_clients(self.adversaries, len(self.clients), config.seed)
            self.poisoned = [self._poisoned_data(a, ids) for a, ids in zip(self.adversaries, self.adversary_clients)]
        self._to_device(resolve(device) if device is not None else model_device(model))
        self._eval_model = copy.deepcopy(self.model)
        self.aggregator_state: dict | None = None  # the rule's Aggregate.state of the last round
        self.attack_states: dict[int, dict] = {}  # the stateful attacks' states by adversary index (fl/round.py)
        self.engine_used: str | None = None  # the training path, once known (config.engine; 'auto' resolved)
        self.buffers = model_buffers(self.model)  # the global model's buffers (on the run's device) (fl/buffers.py), set by each round
        self.local_norm = self._local_norm()  # FedBN's per-client batch-norm layers, or None

    # ---------------------------------------------------------------- setup
    def _local_norm(self) -> LocalNorm | None:
        """Fresh FedBN state (every client holds the initial batch-norm layers) with batch_norm="local"."""
        if self.config.batch_norm != "local":
            return None
        return LocalNorm(self.model, [len(c) for c in self.clients])
    def _to_device(self, device: torch.device) -> None:
        """Move the model and every dataset to device, once; the run computes there."""
        self.device = device
        if model_device(self.model) != device:  # a copy: the caller's model is not modified
            self.model = copy.deepcopy(self.model).to(device)
        self.clients = [move_dataset(ds, device) for ds in self.clients]
        self.poisoned = [{c: move_dataset(ds, device) for c, ds in p.items()} for p in self.poisoned]
        self.test, self.triggered_test, self.root_data, self.validation_data = (
            move_dataset(ds, device) for ds in (self.test, self.triggered_test, self.root_data, self.validation_data))

    def _poisoned_data(self, adversary: Adversary, ids: list[int]) -> dict[int, Dataset]:
        out = {}
        for cid in ids:  # once per attacker at setup
            if adversary.datasets is not None and cid in adversary.datasets:
                out[cid] = adversary.datasets[cid]
            elif adversary.poison is not None:
                out[cid] = adversary.poison(self.clients[cid], cid)
        return out

    def set_triggered_test(self, triggered: Dataset) -> None:
        """The ASR probe of a poison whose trigger is trained while the attackers' data is poisoned (in setup,
        builders.learned_trigger): given after construction, moved to the run's device."""
        if self.config.target is None:
            raise ConfigError("triggered_test is given but config.target is None; set the backdoor target class")
        self.triggered_test = move_dataset(triggered, self.device)

    @property
    def num_clients(self) -> int:
        """K, the number of clients in the federation."""
        return len(self.clients)

    def sample_size(self) -> int:
        """Clients sampled per round (before forced attackers are added)."""
        return sample_size(self.config.sample, self.num_clients)

    # ---------------------------------------------------------------- one round
    def sample(self, round: int) -> torch.Tensor:
        """Sorted client ids of the round: forced active attackers plus a seeded draw of the rest."""
        forced = sorted({c for a, ids in zip(self.adversaries, self.adversary_clients)
                         if a.force and a.schedule.active(round) for c in ids})
        return sample_clients(self.num_clients, self.config.sample, self.config.seed, round, forced)

    def active_clients(self, round: int) -> set[int]:
        """Clients acting maliciously in this round (their adversary's schedule is active)."""
        return {c for a, ids in zip(self.adversaries, self.adversary_clients) if a.schedule.active(round) for c in ids}

    def _roles(self, round: int, sampled: torch.Tensor) -> tuple[list[Dataset], torch.Tensor, list[torch.Tensor]]:
        """Local data of each sampled client, the malicious mask, and each active adversary's row mask."""
        data = [self.clients[int(c)] for c in sampled]
        malicious = torch.zeros(len(sampled), dtype=torch.bool, device=sampled.device)
        masks = []
        for a, ids, poisoned in zip(self.adversaries, self.adversary_clients, self.poisoned):
            rows = torch.isin(sampled, torch.tensor(ids, dtype=torch.long, device=sampled.device)) \
                if a.schedule.active(round) else torch.zeros(len(sampled), dtype=torch.bool, device=sampled.device)
            for r in torch.nonzero(rows).flatten().tolist():
                data[r] = poisoned.get(int(sampled[r]), data[r])
            malicious |= rows
            masks.append(rows)
        return data, malicious, masks

    def server_extras(self, round: int, global_params: torch.Tensor, buffers: dict | None = None) -> dict:
        """RoundContext.extras the server computes itself: FLTrust's "server_update" (with root_data),
        "validate" and "base_accuracy" (with validation_data), for the global model global_params with buffers
        (None: self.buffers). The Flower strategy asks for them too."""
        return {key: compute() for key, compute in self.lazy_server_extras(round, global_params, buffers).items()}

    def lazy_server_extras(self, round: int, global_params: torch.Tensor,
                           buffers: dict | None = None) -> dict:
        """server_extras as key -> zero-argument function, so a round computes only what its rule reads
        (fl/extras.py: each entry depends on the seed, round and global model alone)."""
        lazy = {}
        cfg = self.config
        buffers = self.buffers if buffers is None else buffers
        home, global_params = global_params.device, global_params.to(self.device)  # computed here, answered there
        buffers = {n: b.to(self.device) for n, b in buffers.items()}
        if self.root_data is not None:
            def server_update() -> torch.Tensor:
                g = [generator(cfg.seed, "server", round)]
                server = local_updates(self.model, global_params, [self.root_data], cfg.local, g, cfg.memory_budget,
                                       buffers, self.precision)
                server = server if self.local_norm is None else self.local_norm.shared_only(server)
                return server[0].to(home)

            lazy["server_update"] = server_update
        if self.validation_data is not None:
            val = self.validation_data

            def validate(candidates: torch.Tensor) -> torch.Tensor:
                """Accuracy (m,) on the server's validation set of global + server_lr * each candidate."""
                candidates = torch.atleast_2d(candidates).to(self.device)
                return self.accuracies(global_params + cfg.server_lr * candidates, val, buffers=buffers).to(home)

            lazy["validate"] = lambda: validate
            lazy["base_accuracy"] = lambda: float(self.accuracies(global_params.unsqueeze(0), val, buffers=buffers)[0])
        return lazy

    @torch.no_grad()
    def accuracies(self, stacked: torch.Tensor, data: Dataset, max_candidates: int = 16,
                   buffers: dict | None = None) -> torch.Tensor:
        """Accuracy (m,) of each of m flat parameter vectors with buffers (None: the global buffers) on data,
        the m models evaluated together."""
        buffers = self.buffers if buffers is None else buffers
        out = []
        for lo in range(0, len(stacked), max_candidates):
            params = unflatten(self.model, stacked[lo:lo + max_candidates])
            correct = torch.zeros(len(params[0]), device=stacked.device)
            for s in range(0, len(data), 512):
                logits = stacked_logits(self.model, params, data.x[s:s + 512], shared=True, buffers=buffers)
                correct += (logits.argmax(-1) == data.y[s:s + 512]).sum(dim=1)
            out.append(correct / max(1, len(data)))
        return torch.cat(out) if out else torch.zeros(0, device=stacked.device)

    def round(self, round: int, global_params: torch.Tensor) -> tuple[torch.Tensor, RoundRecord]:
        """Run one round from global_params; returns the new global params and the round's record."""
        start = time.perf_counter()
        cfg = self.config
        sampled = self.sample(round)  # drawn on the CPU; the roles are looked up there, then moved once
        data, malicious, masks = self._roles(round, sampled)
        trained = self.train_clients(round, global_params, sampled, data)
        updates = trained.updates
        sampled, malicious = sampled.to(self.device), malicious.to(self.device)
        masks = [m.to(self.device) for m in masks]
        weights = torch.tensor([float(len(ds)) for ds in data], device=self.device)
        ctx = RoundContext(round=round, num_clients=self.num_clients, sampled=sampled, global_params=global_params,
                           server_lr=cfg.server_lr, malicious=malicious, omniscient=True, seed=cfg.seed,
                           extras=LazyExtras({"weights": weights, "aggregator": self.aggregator},
                                             self.lazy_server_extras(round, global_params)),
                           state=self.aggregator_state)
        updates = apply_adversaries(updates, masks, self.adversaries, ctx, self.attack_states)
        new, agg, applied = aggregate_and_apply(self.aggregator, updates, weights, ctx, global_params, cfg.server_lr)
        self.aggregator_state = agg.state
        if applied:  # FedAvg of the clients' buffers (parameters only went through the rule)
            self.buffers = average(trained.buffers, weights, self.buffers)
        if self.local_norm is not None:  # FedBN: the evaluated model carries the clients' mean batch norm
            new, self.buffers = self.local_norm.global_view(new, self.buffers)
        record = round_record(round, sampled, malicious, updates, agg, applied)
        if (round + 1) % cfg.eval_every == 0 or round == cfg.rounds - 1:
            for key, value in self.evaluate(new).items():
                setattr(record, key, value)
        record.seconds = time.perf_counter() - start
        return new, record

    def train_clients(self, round: int, global_params: torch.Tensor, sampled: torch.Tensor,
                      data: list[Dataset]) -> LocalResult:
        """The (k, d) updates and the buffers of the sampled clients trained on data from the global model
        (global_params and self.buffers), with the configured engine. FedBN: each client starts from its own
        batch-norm layers, which are stored back, and the updates' batch-norm entries are zero."""
        cfg = self.config
        gens = [generator(cfg.seed, "local", round, int(c)) for c in sampled]
        ids = sampled.tolist()
        starts = self.local_norm.starts(global_params, self.buffers, ids) if self.local_norm is not None else None
        engine = self._engine(global_params, data)
        if engine != "vectorized":  # a per-client loop: reference (NCHW) or reference_channels_last
            if self.precision != "fp32":
                raise ConfigError(f"engine {engine!r} is the fp32 definition; precision={self.precision!r} is"
                                  " not; accepted: precision fp32 with the reference engine")
            trained = reference_train(self.model, global_params, data, cfg.local, gens, self.buffers, starts,
                                      channels_last=engine == "reference_channels_last")
        elif cohort.current() is not None and starts is None and self.precision == "fp32":  # a sweep's stacked cells
            trained = cohort.current().train(self.model, global_params, data, cfg.local, gens, cfg.memory_budget,
                                             self.buffers)
        else:
            trained = local_train(self.model, global_params, data, cfg.local, gens, cfg.memory_budget, self.buffers,
                                  starts, precision=self.precision)
        if starts is None:
            return trained
        self.local_norm.store(ids, starts.params + trained.updates, trained.buffers)
        return LocalResult(self.local_norm.shared_only(trained.updates), trained.buffers)

    def _engine(self, global_params: torch.Tensor, data: list[Dataset]) -> str:
        """The path that trains the clients: the configured one, or for 'auto' the choice for this model shape
        (fl/engine_choice.py: timed once per machine, cached), made at the first round and kept for the run."""
        if self.engine_used is None:
            if self.config.engine != "auto":
                self.engine_used = self.config.engine
            elif data:
                from poisonlab.fl.engine_choice import choose

                cfg = self.config
                self.engine_used = choose(self.model, global_params, data, cfg.local, cfg.memory_budget, self.buffers,
                                          self.precision, quiet=cfg.quiet).engine
        return self.engine_used or "vectorized"

    def evaluate(self, params: torch.Tensor, buffers: dict | None = None) -> dict:
        """The model params (with buffers; None: the global buffers) on the test sets: clean_accuracy, loss, flips
        ({"s->t": count}) and attack_success_rate (None without a triggered test set); the RoundRecord fields of
        the same names."""
        model = self.model_with(params, buffers)
        logits = predict_logits(model, self.test.x)
        pred = logits.argmax(dim=1)
        out = {"clean_accuracy": float((pred == self.test.y).float().mean()),
               "loss": float(nn.functional.cross_entropy(logits, self.test.y)),
               "flips": {f"{s}->{t}": flip_count(pred, self.test.y, s, t) for s, t in self.config.flips},
               "attack_success_rate": None}
        if self.triggered_test is not None:
            trig = predict_logits(model, self.triggered_test.x).argmax(dim=1)
            out["attack_success_rate"] = attack_success_rate(trig, self.triggered_test.y, self.config.target)
        return out

    def model_with(self, params: torch.Tensor, buffers: dict | None = None) -> nn.Module:
        """The engine's evaluation copy of the model holding the flat params and buffers (None: the global
        buffers), shared, overwritten per call."""
        torch.nn.utils.vector_to_parameters(params.detach().clone(), self._eval_model.parameters())
        load_buffers(self._eval_model, self.buffers if buffers is None else buffers)
        return self._eval_model

    # ---------------------------------------------------------------- the loop
    def run(self, resume: bool = False, stop_after: int | None = None) -> FederationResult:
        """Run all rounds (or resume from config.checkpoint_dir); stop_after=n ends after n rounds total."""
        cfg = self.config
        params, history, first = flat_params(self.model), [], 0
        self.buffers, self.local_norm = model_buffers(self.model), self._local_norm()
        if resume and cfg.checkpoint_dir:
            loaded = load_checkpoint(cfg.checkpoint_dir)
            if loaded is not None:
                params, history, first = self._restore(*loaded)
        end = cfg.rounds if stop_after is None else min(cfg.rounds, stop_after)
        with _progress(cfg.quiet, cfg.rounds, first) as bar:
            for r in range(first, end):
                params, record = self.round(r, params)
                check_round(record, cfg)  # a diverged run stops here (divergence.py), not at chance accuracy
                history.append(record)
                bar(record)
                if cfg.checkpoint_every and ((r + 1) % cfg.checkpoint_every == 0 or r == cfg.rounds - 1):
                    self._save(r, params, history)
        model = copy.deepcopy(self.model)
        torch.nn.utils.vector_to_parameters(params.clone(), model.parameters())
        load_buffers(model, self.buffers)
        return FederationResult(history, params, model, self.adversary_clients, dict(self.buffers),
                                self.engine_used or self.config.engine)

    def _save(self, round: int, params: torch.Tensor, history: list[RoundRecord]) -> None:
        """Checkpoint: the global params, the global buffers ("buffer.<name>") and the rule's state tensors
        ("aggregator.<key>") and the attacks' ("attack.<i>.<key>") as tensors, all on the CPU; the history and
        the states' other values (meta["aggregator"], None for a stateless rule; meta["attacks"]) as meta."""
        tensors = {"global_params": params.cpu(), **{f"buffer.{n}": b.cpu() for n, b in self.buffers.items()}}
        if self.local_norm is not None:
            tensors.update({n: t.cpu() for n, t in self.local_norm.state().items()})
        meta: dict = {"history": [r.to_dict() for r in history], "aggregator": None}
        state = self.aggregator_state
        if state is not None:
            tensors.update({f"aggregator.{k}": v.cpu() for k, v in state.items() if isinstance(v, torch.Tensor)})
            meta["aggregator"] = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
        for i, attack_state in self.attack_states.items():  # "attack.<i>.<key>" tensors, meta["attacks"] the rest
            tensors.update({f"attack.{i}.{k}": v.cpu() for k, v in attack_state.items() if isinstance(v, torch.Tensor)})
        meta["attacks"] = {str(i): {k: v for k, v in st.items() if not isinstance(v, torch.Tensor)}
                           for i, st in self.attack_states.items()}
        save_checkpoint(self.config.checkpoint_dir, round, tensors, meta)

    def _restore(self, tensors: dict, meta: dict) -> tuple[torch.Tensor, list[RoundRecord], int]:
        params, d = tensors.get("global_params"), flat_params(self.model).numel()
        if params is None or params.shape != (d,) or not bool(torch.isfinite(params).all()):
            found = "none" if params is None else f"shape {tuple(params.shape)}" + (
                "" if bool(torch.isfinite(params).all()) else " with NaN/Inf")
            raise DataError(f"checkpoint in {self.config.checkpoint_dir}: global_params is {found}; this model"
                            f" needs {d} finite values; delete it to start over")
        buffers = {k.removeprefix("buffer."): v for k, v in tensors.items() if k.startswith("buffer.")}
        problem = same_layout(buffers, model_buffers(self.model))
        if problem is None and not all(bool(torch.isfinite(b).all()) for b in buffers.values() if b.is_floating_point()):
            problem = "a buffer holds NaN/Inf"
        if problem is not None:
            raise DataError(f"checkpoint in {self.config.checkpoint_dir}: {problem}; delete it to start over")
        self.buffers = {n: buffers[n].to(self.device) for n in self.buffers}  # the model's order, on the device
        problem = self.local_norm.load(tensors) if self.local_norm is not None else None
        if problem is not None:
            raise DataError(f"checkpoint in {self.config.checkpoint_dir}: {problem} (batch_norm: local);"
                            " delete it to start over")
        if meta.get("aggregator") is not None:
            agg = {k.removeprefix("aggregator."): v.to(self.device) for k, v in tensors.items()
                   if k.startswith("aggregator.")}
            self.aggregator_state = {**meta["aggregator"], **agg}
        self.attack_states = {int(i): {**rest, **{k.removeprefix(f"attack.{i}."): v.to(self.device)
                                                  for k, v in tensors.items() if k.startswith(f"attack.{i}.")}}
                              for i, rest in (meta.get("attacks") or {}).items()}
        history = [RoundRecord.from_dict(r) for r in meta["history"]]
        return tensors["global_params"].to(self.device), history, int(meta["round"]) + 1


class _progress:
    """A rich progress bar over rounds showing clean accuracy and ASR (no output when quiet)."""

    def __init__(self, quiet: bool, total: int, done: int):
        self.quiet, self.total, self.done = quiet, total, done

    def __enter__(self):
        if self.quiet:
            return lambda record: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from poisonlab.console import console

        self.bar = Progress(TextColumn("round"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[status]}"), console=console, transient=False)
        self.bar.start()
        task = self.bar.add_task("rounds", total=self.total, completed=self.done, status="")
        fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"  # noqa: E731

        def update(record: RoundRecord) -> None:
            status = f"acc {fmt(record.clean_accuracy)}  ASR {fmt(record.attack_success_rate)}"
            self.bar.update(task, advance=1, status=status)

        return update

    def __exit__(self, *exc) -> None:
        if not self.quiet:
            self.bar.stop()
