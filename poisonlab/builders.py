"""Config -> object builders: every runtime object an experiment needs, built from its ExperimentConfig.

The data split, the server's carved-out data, the client partition, the adversaries with their poisons
and attacks, the aggregator (chain) and the Federation itself. Imported by the experiment runner and
by the Flower bridge; it imports neither, so the two never import each other through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from poisonlab.config.adversary import AdversaryConfig
from poisonlab.config.federation import FederatedTraining
from poisonlab.config.schema import AdversarySpec, ExperimentConfig, FederatedSpec
from poisonlab.data import load
from poisonlab.data.augment import check_images
from poisonlab.data.dataset import Dataset
from poisonlab.device import host
from poisonlab.errors import ConfigError
from poisonlab.poison.targets import asr_target
from poisonlab.rng import derive_seed, generator
from poisonlab.shared_builds import shared


def load_split(config: ExperimentConfig) -> tuple[Dataset, Dataset]:
    """The configured dataset, split into (train, test), stratified and seeded (on the host: data preparation);
    built once per data section and seed inside a sweep (shared_builds.py)."""
    key = ("split", config.data.model_dump_json(), config.seed)
    return shared(key, lambda: _load_split(config))


def _load_split(config: ExperimentConfig) -> tuple[Dataset, Dataset]:
    with host():
        data = load(config.data.dataset, **config.data.params)
        if config.data.size is not None and config.data.size != len(data):
            if config.data.size > len(data):
                raise ConfigError(f"data.size={config.data.size} exceeds the {len(data)} samples of"
                                  f" '{config.data.dataset}'; accepted: 2 to {len(data)}, or none for all")
            data = data.split(config.data.size / len(data), seed=derive_seed(config.seed, "size"))[1]
        return data.split(config.data.test_fraction, seed=derive_seed(config.seed, "split"))


def built_poisons(config: ExperimentConfig) -> list:
    from poisonlab.poison.registry import make_poison

    return [make_poison(c.model_dump()) for c in config.poison]


def build_federation(config: ExperimentConfig, train_set: Dataset, test_set: Dataset, out: Path | None = None,
                     quiet: bool = True, device: str | torch.device | None = None):
    """The Federation for a config: server data carved out, clients partitioned, adversaries, aggregator; the
    data prepared and the model built on the host, then moved to device (None: config.device) by the Federation."""
    from poisonlab.fl.federation import Federation
    from poisonlab.model_spec import build_model

    fed = config.federated
    if fed.local.augment is not None:  # refused before any round runs, not at the first local step
        check_images(train_set.input_shape, "federated.local.augment")
    with host():
        key = ("clients", id(train_set), fed.server_data.model_dump_json(), fed.partition.model_dump_json(),
               fed.clients, config.seed)
        train_set, root, validation, clients = shared(key, lambda: _clients(fed, train_set, config.seed), train_set)
        adversaries, probe = build_adversaries(fed, config.seed)
        target = asr_target(probe, test_set.num_classes) if probe is not None and probe.has_trigger else None
        learned = learned_trigger(probe)  # stamped only once the attackers' poisons trained it (Federation setup)
        triggered = (probe.triggered(test_set, derive_seed(config.seed, "triggered"))
                     if target is not None and not learned else None)
        model = build_model(config.model.name, train_set.input_shape, train_set.num_classes, seed=config.seed,
                            **config.model.params)
    federation = Federation(model, clients, test_set, federation_config(config, out, quiet, target, probe),
                            aggregator=build_aggregator(fed), adversaries=adversaries, triggered_test=triggered,
                            root_data=root, validation_data=validation,
                            device=config.device if device is None else device, precision=config.precision)
    if target is not None and learned:
        with host():
            federation.set_triggered_test(probe.triggered(test_set, derive_seed(config.seed, "triggered")))
    return federation


def learned_trigger(poison) -> bool:
    """Whether poison's trigger is a network its apply() trains (poison/generated.py): the federation's ASR probe
    is then stamped after the attackers' data is poisoned, with the network their poisoning trained."""
    from poisonlab.poison.generated import GeneratedBackdoor

    return isinstance(poison, GeneratedBackdoor)


def _clients(fed: FederatedSpec, train_set: Dataset, seed: int):
    """(training rest, root, validation, client datasets): the server's data carved out, the rest partitioned."""
    train_set, root, validation = carve_server_data(fed, train_set, seed)
    return train_set, root, validation, partition_clients(fed, train_set, seed)


def carve_server_data(fed: FederatedSpec, train_set: Dataset, seed: int):
    """Take the server's root and validation sets (seeded) out of the training split before partitioning."""
    need = fed.server_data.root_size + fed.server_data.validation_size
    if need == 0:
        return train_set, None, None
    if need >= len(train_set):
        raise ConfigError(f"federated.server_data asks for {need} samples but the training split has {len(train_set)}")
    order = torch.randperm(len(train_set), generator=generator(seed, "server-data"))
    r, v = fed.server_data.root_size, fed.server_data.validation_size
    root = train_set.subset(order[:r]) if r else None
    validation = train_set.subset(order[r:r + v]) if v else None
    return train_set.subset(order[need:]), root, validation


def partition_clients(fed: FederatedSpec, train_set: Dataset, seed: int) -> list[Dataset]:
    """The K client datasets from the configured partitioner."""
    from poisonlab.fl.partition import partition

    parts = partition(fed.partition.name, train_set.y, fed.clients, seed=derive_seed(seed, "partition"),
                      **fed.partition.params)
    return [train_set.subset(idx) for idx in parts]


def build_adversaries(fed: FederatedSpec, seed: int):
    """poisonlab Adversary objects from the config, and the first poison with a trigger (for ASR) or flips."""
    from poisonlab.fl.adversary import Adversary

    adversaries, probe = [], None
    for i, spec in enumerate(fed.adversaries()):
        poison = make_poison_fn(spec, seed, i)
        if poison is not None and probe is None:
            probe = poison.poison
        adversaries.append(Adversary(**_settings(spec, AdversaryConfig), poison=poison, attack=make_attack(spec),
                                     name=_adversary_name(spec, i)))
    return adversaries, probe


def _settings(spec, shared: type[BaseModel]) -> dict:
    """The values of spec's fields that it shares with the runtime config (defined once in shared)."""
    return {name: getattr(spec, name) for name in shared.model_fields}


class _ClientPoison:
    """callable(clean client Dataset, client id) -> poisoned Dataset, seeded per client."""

    def __init__(self, poison: Any, seed: int):
        self.poison, self.seed = poison, seed

    def __call__(self, data: Dataset, client_id: int) -> Dataset:
        seed = derive_seed(self.seed, "client-poison", client_id)
        if learned_trigger(self.poison):  # coordinated attackers: the first one's data trains the shared trigger
            return self.poison.apply(data, seed, learn=False).data
        return self.poison.apply(data, seed).data


def make_poison_fn(spec: AdversarySpec, seed: int, index: int) -> _ClientPoison | None:
    if spec.poison is None:
        return None
    from poisonlab.poison.registry import make_poison

    poison = make_poison(spec.poison.model_dump())
    if poison.trains_model:  # its attack is a training loop the federated engines do not run: refused, not ignored
        raise ConfigError(f"poison '{poison.name}' trains the model itself and runs only centralized; accepted in"
                          " federated.adversary.poison: a data poison")
    return _ClientPoison(poison, derive_seed(seed, "adversary", index))


def make_attack(spec: AdversarySpec):
    if spec.attack is None:
        return None
    from poisonlab.fl.attacks import ATTACKS

    return ATTACKS.get(spec.attack.name, **spec.attack.params)


def _adversary_name(spec: AdversarySpec, index: int) -> str:
    parts = [c.name for c in (spec.poison, spec.attack) if c is not None]
    return "+".join(parts) or f"adversary-{index}"


def build_aggregator(fed: FederatedSpec):
    """The configured rule, or a chain of steps (e.g. norm_clip then median), after the non-finite guard."""
    from poisonlab.fl.aggregators import build_chain

    return build_chain((c.name, c.params) for c in fed.aggregator_chain())


def federation_config(config: ExperimentConfig, out: Path | None, quiet: bool, target, probe):
    """The engine's FederationConfig: the federated section's shared settings plus seed, checkpoints, target, flips."""
    from poisonlab.fl.federation import FederationConfig

    fed = config.federated
    flips = tuple(sorted(_flip_pairs(probe))) if probe is not None else ()
    shared = {**_settings(fed, FederatedTraining), "checkpoint_every": fed.checkpoint_every if out is not None else 0}
    return FederationConfig(
        **shared, seed=config.seed,
        checkpoint_dir=str(out / "checkpoints") if out is not None and fed.checkpoint_every else None,
        target=target, flips=flips, quiet=quiet)


def _flip_pairs(poison) -> set[tuple[int, int]]:
    """The poison's flip pairs; as before, only for a poison with one source class (a backdoor's `sources` are not)."""
    return set(poison.flip_pairs) if poison.source is not None else set()
