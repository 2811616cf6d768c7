"""One federated experiment prepared for Flower's apps, built as the built-in engine builds it.

``prepare(experiment_json)`` parses the experiment (the YAML's shape; poisonlab.config.parse),
then builds the engine's own ``Federation`` with the runner's helpers (poisonlab.experiment:
seeded split, server data, partition, adversaries, aggregator chain, FederationConfig). The
Flower apps then use that Federation's pieces, so the data, seeds, sampling (forced attackers
included), poisoned local data, local training and evaluation are exactly the built-in engine's:

- client side: ``local_update(global, client, round)`` = the engine's local training of that one
  client on its (possibly poisoned) data, then, for a node-side adversary, its boost and update attack
  applied to its own row only with the engine's step (flower/threat.py: ctx.omniscient=False, the
  attacker never sees an honest update; omniscient / colluding adversaries are simulated by the server);
- server side: ``sample(round)``, ``truth(round)``, the aggregator, ``server_extras``, ``evaluate(params)``.

It is cached per process (Ray actors and SuperNodes' ClientApp processes call it per message).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.adversary import Adversary
from poisonlab.fl.federation import Federation
from poisonlab.fl.buffers import model_buffers
from poisonlab.fl.local import flat_params, local_train
from poisonlab.fl.types import RoundContext
from poisonlab.flower.arrays import ArraySpec
from poisonlab.flower.threat import attack_on_node, on_server
from poisonlab.rng import generator


@dataclass
class Prepared:
    """A Federation plus what the Flower apps need from it (see the module docstring)."""

    federation: Federation
    rounds: int
    server_only: bool = False  # built by prepare_server: no client data (nodes bring their own)

    def __post_init__(self) -> None:
        if self.federation.config.batch_norm != "shared":  # a ClientApp keeps no state between rounds
            raise ConfigError("federated.batch_norm='local' (FedBN) runs on the built-in engine only; accepted on"
                              " Flower: 'shared'")
        if self.federation.config.engine != "vectorized":  # a ClientApp trains with fl/local.py (train_client)
            raise ConfigError(f"federated.engine={self.federation.config.engine!r} runs on the built-in engine only;"
                              " accepted on Flower: 'vectorized'")

    @property
    def seed(self) -> int:
        return self.federation.config.seed

    @property
    def num_clients(self) -> int:
        return self.federation.num_clients

    @property
    def server_lr(self) -> float:
        return self.federation.config.server_lr

    @functools.cached_property
    def spec(self) -> ArraySpec:
        return ArraySpec.from_module(self.federation.model)

    def initial_params(self) -> torch.Tensor:
        """The global model of round 0 (flat)."""
        return flat_params(self.federation.model)

    def initial_buffers(self) -> dict[str, torch.Tensor]:
        """The global model's buffers of round 0 (name -> tensor; empty for a buffer-free model)."""
        return model_buffers(self.federation.model)

    # ---------------------------------------------------------------- client side
    def adversary_of(self, client: int) -> int | None:
        """Index of the adversary controlling client, or None for an honest client."""
        for i, ids in enumerate(self.federation.adversary_clients):
            if client in ids:
                return i
        return None

    def is_malicious(self, client: int) -> bool:
        """True if an adversary controls this client."""
        return self.adversary_of(client) is not None

    def client_data(self, client: int, rnd: int, malicious: bool | None = None):
        """The data the client trains on in round rnd: its poisoned data when its adversary is active."""
        fed = self.federation
        a = self.adversary_of(client)
        if a is None or not (malicious is None or malicious) or not fed.adversaries[a].schedule.active(rnd):
            return fed.clients[client]
        return fed.poisoned[a].get(client, fed.clients[client])

    def local_update(self, global_params: torch.Tensor, client: int, rnd: int, malicious: bool | None = None,
                     attack=None, buffers: dict | None = None) -> tuple[torch.Tensor, int]:
        """(update (d,), number of examples) of client in round rnd, as the engine computes its row."""
        return self.local_result(global_params, client, rnd, malicious, attack, buffers)[:2]

    def local_result(self, global_params: torch.Tensor, client: int, rnd: int, malicious: bool | None = None,
                     attack=None, buffers: dict | None = None, round_size: int | None = None
                     ) -> tuple[torch.Tensor, int, dict]:
        """(update (d,), number of examples, the client's buffers after training) of client in round rnd, trained
        from the global model (global_params and buffers; None: the model's initial buffers) as the engine does.

        malicious=False forces honest behaviour; attack overrides the adversary's update attack (parameters only).
        The boost and attack run here only for a node-side adversary (flower/threat.py: non-omniscient, one
        client, or a node's own attack), on a matrix of round_size rows (None: the engine's draw this round);
        a server-side adversary's client returns its update on its poisoned data, which the server then attacks.
        """
        fed = self.federation
        if self.server_only:
            raise ConfigError("this experiment was prepared for the ServerApp only (nodes bring their own data);"
                              " accepted: local training on a node (poisonlab.flower.node)")
        data = self.client_data(client, rnd, malicious)
        a = self.adversary_of(client)
        adversary = fed.adversaries[a] if a is not None else Adversary(clients=[client])
        if attack is not None:
            adversary = adversary.model_copy(update={"attack": attack})
        acts = attack is not None or (a is not None and adversary.schedule.active(rnd) and malicious is not False
                                      and not on_server(adversary, fed.adversary_clients[a]))
        size = len(self.sample(rnd)) if round_size is None else round_size
        return train_client(fed, data, client, rnd, adversary, acts, global_params, buffers, size)

    # ---------------------------------------------------------------- server side
    def sample(self, rnd: int, k: int | None = None) -> list[int]:
        """Sorted client ids of round rnd (the engine's draw, active forced attackers included)."""
        return self.federation.sample(rnd).tolist()

    def truth(self, rnd: int) -> set[int]:
        """Clients acting maliciously in round rnd (their adversary's schedule is active)."""
        return self.federation.active_clients(rnd)

    def evaluate(self, params: torch.Tensor, rnd: int | None = None, buffers: dict | None = None) -> dict:
        """The engine's evaluation of params with buffers (None: the initial ones): clean_accuracy, loss,
        attack_success_rate, flips."""
        device = self.federation.device
        buffers = self.initial_buffers() if buffers is None else buffers
        return self.federation.evaluate(params.to(device), {n: b.to(device) for n, b in buffers.items()})


def train_client(fed, data, client: int, rnd: int, adversary: Adversary, acts: bool, global_params: torch.Tensor,
                 buffers: dict | None, round_size: int = 1) -> tuple[torch.Tensor, int, dict]:
    """(update (d,), number of examples, buffers after training) of one client trained on data in round rnd from
    the global model, then, when acts, its adversary's boost and update attack applied to its own row of a
    round_size-row matrix (flower/threat.py attack_on_node: ctx.omniscient False, the other rows unread).

    fed: anything with the Federation's model, config, device, precision and num_clients (the Federation itself,
    or a node's NodeExperiment); the generator is the engine's (seed, "local", round, client) stream.
    """
    gen = generator(fed.config.seed, "local", rnd, client)
    home, global_params = global_params.device, global_params.to(fed.device)  # trains on the federation's device
    buffers = None if buffers is None else {n: b.to(fed.device) for n, b in buffers.items()}
    trained = local_train(fed.model, global_params, [data], fed.config.local, [gen], fed.config.memory_budget,
                          buffers, precision=fed.precision)
    update = trained.updates[0]
    if acts:
        ctx = RoundContext(round=rnd, num_clients=fed.num_clients, global_params=global_params,
                           server_lr=fed.config.server_lr, seed=fed.config.seed)
        update = attack_on_node(update, adversary, client, ctx, round_size)
    return update.to(home), len(data), {n: b[0].to(home) for n, b in trained.buffers.items()}


def parse_experiment(experiment) -> object:
    """An ExperimentConfig from a dict, a JSON string or an ExperimentConfig (must be federated)."""
    from poisonlab.config.load import parse

    if isinstance(experiment, str):
        experiment = json.loads(experiment)
    config = experiment if hasattr(experiment, "model_dump") else parse(dict(experiment))
    if config.kind != "federated":
        raise ConfigError("the experiment has no 'federated' section; accepted: a federated experiment")
    return config


def build_federation(config, quiet: bool = True) -> Federation:
    """The built-in engine's Federation for config, built exactly as poisonlab.experiment.run_federated does."""
    from poisonlab import builders as runner

    train_set, test_set = runner.load_split(config)
    return runner.build_federation(config, train_set, test_set, None, quiet=quiet)


def experiment_json(experiment) -> str:
    """The experiment as a canonical JSON string (from a dict, an ExperimentConfig or a JSON string)."""
    config = parse_experiment(experiment)
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


@functools.lru_cache(maxsize=4)
def prepare(experiment: str) -> Prepared:
    """Build (once per process) the prepared experiment from its JSON string."""
    config = parse_experiment(experiment)
    return Prepared(build_federation(config), config.federated.rounds)


@functools.lru_cache(maxsize=4)
def prepare_server(experiment: str, sources: str) -> Prepared:
    """The experiment for a ServerApp whose nodes bring their own data: only the test set and the server's root /
    validation sets are loaded (sources: JSON {"test": src, "root": src, "validation": src}, flower/sources.py's
    data sources), never the experiment's training data. Its Federation has K empty client datasets (the server
    samples, scores, aggregates and evaluates; it never trains a client: local_result refuses)."""
    from poisonlab.flower.sources import load_source

    config = parse_experiment(experiment)
    src = json.loads(sources)
    test = load_source(src["test"], "the server's test set")
    server = {part: load_source(src[part], f"the server's {part} set") if part in src else None
              for part in ("root", "validation")}
    return Prepared(server_federation(config, test, server["root"], server["validation"]), config.federated.rounds,
                    server_only=True)


def server_federation(config, test, root, validation) -> Federation:
    """The server's Federation (no client data) as builders.build_federation builds the engine's, with root and
    validation given instead of carved out of the training split (their sizes must be the configured ones)."""
    from poisonlab import builders
    from poisonlab.data.augment import check_images
    from poisonlab.device import host
    from poisonlab.model_spec import build_model
    from poisonlab.poison.targets import asr_target
    from poisonlab.rng import derive_seed

    fed = config.federated
    for part, data, size in (("root", root, fed.server_data.root_size),
                             ("validation", validation, fed.server_data.validation_size)):
        if (0 if data is None else len(data)) != size:
            raise ConfigError(f"the server's {part} set holds {0 if data is None else len(data)} samples but"
                              f" federated.server_data.{part}_size is {size}; accepted: {part}-npz (or"
                              f" {part}-dataset) with exactly {size} samples" + (", or none" if not size else ""))
    if fed.local.augment is not None:
        check_images(test.input_shape, "federated.local.augment")
    with host():
        adversaries, probe = builders.build_adversaries(fed, config.seed)
        target = asr_target(probe, test.num_classes) if probe is not None and probe.has_trigger else None  # a map for all_to_all
        triggered = probe.triggered(test, derive_seed(config.seed, "triggered")) if target is not None else None
        model = build_model(config.model.name, test.input_shape, test.num_classes, seed=config.seed,
                            **config.model.params)
        empty = test.subset(torch.zeros(0, dtype=torch.long))
    adversaries = [a.model_copy(update={"poison": None}) for a in adversaries]  # nodes poison their own data
    return Federation(model, [empty] * fed.clients, test,
                      builders.federation_config(config, None, True, target, probe),
                      aggregator=builders.build_aggregator(fed), adversaries=adversaries, triggered_test=triggered,
                      root_data=root, validation_data=validation, device=config.device, precision=config.precision)
