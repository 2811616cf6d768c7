"""A SuperNode's own data and role (a deployment where every machine brings its data).

A node names its data in its node config (``flower-supernode --node-config node.toml``):

- ``npz = "/data/site-3.npz"``: arrays ``x`` and ``y`` (and ``classes``), read with allow_pickle=False
  (poisonlab's ``npz`` source, data/sources.py); or
- ``dataset = "mnist"`` with ``data-dir = "/data/mnist"`` (any registered source; data-dir goes to its
  ``data_dir`` or ``path`` parameter) and optionally ``data-params`` (JSON of the source's other parameters,
  e.g. ``{"part": "test"}``);

plus ``partition-id`` (the node's client id: it keys the node's random streams, as the engine's client id does)
and optionally ``role``: ``honest``, ``malicious`` (the adversary of the experiment that controls this client id,
if any, plus the node's ``attack``), or an adversary of the experiment by name (its poison and attack names
joined by '+', e.g. ``backdoor+scale``, or ``adversary-<i>``). Without a role the node is malicious iff the
experiment's seeded draw gives its client id to an adversary (the built-in engine's assignment).

``NodeExperiment`` is what such a node trains with: the experiment's model (built for the node's input shape and
classes), local training settings and adversaries, and the node's data, poisoned by its adversary exactly as the
built-in engine poisons a client's partition (the adversary's poison with the engine's per-client seed). Nothing
of the experiment's own dataset is loaded on the node. The ServerApp side of such a run loads only its test set
and server data (``node-data = true`` in the run config, sources ``test-*``, ``root-*``, ``validation-*``:
flower/sources.py).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, DataError
from poisonlab.fl.adversary import Adversary, resolve_clients
from poisonlab.flower.arrays import ArraySpec
from poisonlab.flower.prepared import parse_experiment, train_client
from poisonlab.flower.threat import on_server
from poisonlab.flower.sources import load_source

ROLES = ("honest", "malicious")


# ---------------------------------------------------------------------------- the node's experiment
@dataclass
class NodeExperiment:
    """What a node with its own data trains with (see the module docstring); the attributes local training reads
    (model, config, device, precision, num_clients) are named as the Federation's."""

    model: torch.nn.Module
    config: object  # FederationConfig
    device: torch.device
    precision: str
    num_clients: int
    client: int
    adversary: int | None  # index of the node's adversary in adversaries, or None
    adversaries: list[Adversary]
    data: Dataset
    source: str
    poisoned: Dataset | None = None
    adversary_clients: list[list[int]] = field(default_factory=list)  # the engine's draw of each adversary's clients
    spec: ArraySpec = field(init=False)

    def __post_init__(self) -> None:
        self.spec = ArraySpec.from_module(self.model)

    @property
    def role(self) -> str:
        """'malicious' when an adversary of the experiment controls the node, else 'honest'."""
        return "honest" if self.adversary is None else "malicious"

    @property
    def adversary_name(self) -> str:
        return "" if self.adversary is None else self.adversaries[self.adversary].name

    def local_result(self, global_params: torch.Tensor, rnd: int, attack=None,
                     buffers: dict | None = None, round_size: int | None = None) -> tuple[torch.Tensor, int, dict]:
        """(update, number of examples, buffers) of this node in round rnd, as the engine computes its client's row;
        attack (a malicious node's 'attack' setting) overrides its adversary's update attack. The boost and attack
        run here unless the adversary is simulated on the server (flower/threat.py on_server: omniscient or
        colluding), on a matrix of round_size rows (the server's 'round-size'; None: 1)."""
        a = self.adversary
        adversary = self.adversaries[a] if a is not None else Adversary(clients=[self.client])
        if attack is not None:
            adversary = adversary.model_copy(update={"attack": attack})
        active = a is not None and adversary.schedule.active(rnd)
        data = self.poisoned if active and self.poisoned is not None else self.data
        colluders = self.adversary_clients[a] if a is not None and a < len(self.adversary_clients) else [self.client]
        acts = attack is not None or (active and not on_server(adversary, colluders))
        return train_client(self, data, self.client, rnd, adversary, acts, global_params, buffers,
                            1 if round_size is None else int(round_size))


def adversary_index(role: str | None, client: int, adversaries: list[Adversary], assigned: list[list[int]]) -> int | None:
    """The node's adversary: by its role's name, else the one the engine's draw gives its client id ('malicious' or
    no role), None for 'honest' (ConfigError naming an unknown role and the accepted ones)."""
    drawn = next((i for i, ids in enumerate(assigned) if client in ids), None)
    if role is None or role == "malicious":
        return drawn
    if role == "honest":
        return None
    names = [a.name for a in adversaries]
    if names.count(role) == 1:
        return names.index(role)
    labels = [f"adversary-{i}" for i in range(len(adversaries))]
    if role in labels:
        return labels.index(role)
    accepted = [*ROLES, *sorted({n for n in names if names.count(n) == 1}), *labels]
    raise ConfigError(f"role '{role}' is not known; accepted: {', '.join(accepted)}")


@functools.lru_cache(maxsize=2)
def prepare_node(experiment: str, source: str, client: int, role: str | None) -> NodeExperiment:
    """Build (once per process) the node's experiment from the experiment JSON and its data source JSON."""
    from poisonlab import builders
    from poisonlab.data.augment import check_images
    from poisonlab.device import host, move_dataset, resolve
    from poisonlab.model_spec import build_model
    from poisonlab.precision import check_precision

    config = parse_experiment(experiment)
    fed = config.federated
    if fed.batch_norm != "shared":
        raise ConfigError("federated.batch_norm='local' (FedBN) runs on the built-in engine only; accepted on"
                          " Flower: 'shared'")
    if not 0 <= client < fed.clients:
        raise ConfigError(f"partition-id={client} does not fit the experiment's {fed.clients} clients; accepted:"
                          f" 0 <= partition-id < {fed.clients}")
    src = json.loads(source)
    with host():
        data = load_source(src, f"node {client}")
        if fed.local.augment is not None:
            check_images(data.input_shape, "federated.local.augment")
        adversaries, _ = builders.build_adversaries(fed, config.seed)
        assigned = resolve_clients(adversaries, fed.clients, config.seed)
        a = adversary_index(role, client, adversaries, assigned)
        poison = adversaries[a].poison if a is not None else None
        poisoned = poison(data, client) if poison is not None else None
        model = build_model(config.model.name, data.input_shape, data.num_classes, seed=config.seed,
                            **config.model.params)
    device = resolve(config.device)
    label = src.get("npz") or f"{src['dataset']} in {src.get('data-dir', '-')}"
    return NodeExperiment(model.to(device), builders.federation_config(config, None, True, None, None), device,
                          check_precision(config.precision), fed.clients, client, a, adversaries,
                          move_dataset(data, device), str(label),
                          move_dataset(poisoned, device) if poisoned is not None else None, assigned)


def check_fits(node: NodeExperiment, err: DataError) -> DataError:
    """A DataError saying that the node's data does not fit the global model the server sent."""
    return DataError(f"node data {node.source} (input shape {tuple(node.data.input_shape)}, {node.data.num_classes}"
                     f" classes) does not fit the global model: {err}")
