"""poisonlab's Flower apps: an honest or malicious ClientApp and a ServerApp, from one experiment.

Settings come from three places, later ones winning: the defaults the app was built with (the
simulation passes the experiment there), the run config (``flwr run`` / pyproject
``[tool.flwr.app.config]``) and the node config (``flower-supernode --node-config``). Keys:

- ``experiment``: the experiment as a JSON string, the YAML's shape (seed, data, model, federated);
- ``partition-id`` / ``num-partitions``: which data partition this node holds (node config;
  Flower's simulation engine sets both);
- ``role``: "honest" or "malicious" (node config), or with the node's own data an adversary of the
  experiment by name (flower/node.py); without it a node is malicious when its partition id is one of
  the experiment's adversary clients;
- the node's own data (node config; flower/node.py): ``npz``, or ``dataset`` + ``data-dir`` (+
  ``data-params``); then the node trains on it (poisoned by its adversary as the engine poisons a client's
  partition) instead of a partition of the experiment's dataset, which it never loads;
- ``node-data`` (run config, bool): nodes bring their own data; the ServerApp then loads only its test set
  and server data, named by ``test-npz`` / ``test-dataset`` + ``test-data-dir`` and likewise ``root-*``,
  ``validation-*`` (the sizes federated.server_data asks for);
- ``attack``: JSON {name, params}, an update attack for a malicious node, overriding its
  adversary's (applied to this node's own update only: the non-omniscient form); poisoned local
  data comes from the experiment's adversary that controls the node's partition;
- server: ``output`` (a path: the history is written there as JSON), ``min-nodes`` (nodes to wait
  for; default the experiment's clients), ``timeout`` (seconds per round trip),
  ``trust-reported-roles`` (score flags against the roles the nodes report, for lab deployments).

The ClientApp trains with the engine's local training (``poisonlab.fl.local.local_train``, k=1)
from the global parameters and buffers it receives and replies with the trained model (``arrays``:
parameters and buffers, flower/arrays.py) and ``num-examples``; a ``query`` message is
answered with the node's partition id and role, which the ServerApp uses to name clients and
to score the defense (never to decide).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from poisonlab import progress
from poisonlab.errors import ConfigError, DataError
from poisonlab.flower import node, require_flwr, sources
from poisonlab.flower import prepared as engine
from poisonlab.flower.arrays import read_record, to_record
from poisonlab.flower.strategy import RobustStrategy

require_flwr()
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

LOG = logging.getLogger("poisonlab.flower")
ROLES = ("honest", "malicious")


# ---------------------------------------------------------------------------- settings
def settings(defaults: dict | None, context: Context) -> dict[str, Any]:
    """defaults, then the run config, then the node config (later wins)."""
    return {**(defaults or {}), **dict(context.run_config), **dict(context.node_config)}


def experiment_of(s: dict[str, Any]) -> str:
    """The experiment JSON string from the settings (ConfigError if absent)."""
    exp = s.get("experiment")
    if not exp:
        raise ConfigError("the Flower app has no 'experiment' setting; accepted: the experiment as a JSON string"
                          " in the run config or the app defaults")
    return exp if isinstance(exp, str) else json.dumps(exp, sort_keys=True)


def _component(value: Any, what: str) -> dict | None:
    """A {name, params} dict from a JSON string or dict (None for empty)."""
    if value in (None, "", "none"):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(f"{what}={value!r} is invalid; accepted: JSON {{\"name\": ..., \"params\": {{...}}}}")
    return {"name": value["name"], "params": dict(value.get("params") or {})}


def role_of(s: dict[str, Any], exp: engine.Prepared, client: int) -> str:
    """The node's role: its 'role' setting, else malicious iff an adversary of the experiment controls it."""
    role = s.get("role")
    if role is None:
        return "malicious" if exp.is_malicious(client) else "honest"
    if role not in ROLES:
        raise ConfigError(f"role '{role}' is not known; accepted: {', '.join(ROLES)}")
    return role


def partition_of(s: dict[str, Any], exp: engine.Prepared) -> int:
    """The node's partition id (checked against the experiment's number of clients)."""
    if "partition-id" not in s:
        raise ConfigError("the node has no 'partition-id'; accepted: --node-config 'partition-id=0 num-partitions=4'")
    pid, n = int(s["partition-id"]), int(s.get("num-partitions", exp.num_clients))
    if n != exp.num_clients or not 0 <= pid < n:
        raise ConfigError(f"partition-id={pid} num-partitions={n} do not fit the experiment's"
                          f" {exp.num_clients} clients; accepted: num-partitions={exp.num_clients},"
                          " 0 <= partition-id < it")
    return pid


def from_settings(s: dict[str, Any]) -> engine.Prepared:
    """The prepared experiment named by the 'experiment' setting (cached per process); with node-data=true (nodes
    bring their own data) the server's part only: its test set and server data (flower/sources.py server_sources)."""
    if sources.node_data_mode(s):
        return engine.prepare_server(experiment_of(s), sources.server_sources(s))
    return engine.prepare(experiment_of(s))


# ---------------------------------------------------------------------------- client
def node_of(s: dict[str, Any]) -> node.NodeExperiment | None:
    """The node's own-data experiment when its node config names data (npz / dataset), else None (ConfigError
    when the run says node-data=true and the node names none)."""
    source = sources.data_source(s)
    if source is None:
        if sources.node_data_mode(s):
            raise ConfigError("the run has node-data=true but this node names no data; accepted in its node config:"
                              ' npz="file.npz", or dataset="mnist" data-dir="dir"')
        return None
    if "partition-id" not in s:
        raise ConfigError("the node has no 'partition-id' (its client id); accepted: --node-config"
                          " 'partition-id=0 npz=\"site-0.npz\"'")
    role = s.get("role")
    return node.prepare_node(experiment_of(s), json.dumps(source, sort_keys=True), int(s["partition-id"]),
                             None if role is None else str(role))


def client_app(defaults: dict | None = None, source: Callable[[dict], engine.Prepared] = from_settings) -> ClientApp:
    """A ClientApp that trains honestly or, by its role, maliciously (poisoned data, boost, update attack), on its
    partition of the experiment's dataset or, when its node config names data, on that (flower/node.py).

    source(settings) -> the prepared experiment (default: built from the 'experiment' setting).
    """
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        s = settings(defaults, context)
        rnd = int(msg.content["config"]["server-round"]) - 1
        own = node_of(s)
        if own is not None:
            malicious = own.role == "malicious" or s.get("role") == "malicious"
            attack = _attack(s.get("attack")) if malicious else None
            try:
                global_params, buffers = read_record(msg.content["arrays"], own.spec)
            except DataError as err:
                raise node.check_fits(own, err) from None
            update, n, local_buffers = own.local_result(global_params, rnd, attack=attack, buffers=buffers)
            spec, client = own.spec, own.client
        else:
            exp = source(s)
            client = partition_of(s, exp)
            role = role_of(s, exp, client)
            attack = _attack(s.get("attack")) if role == "malicious" else None
            global_params, buffers = read_record(msg.content["arrays"], exp.spec)
            update, n, local_buffers = exp.local_result(global_params, client, rnd, malicious=role == "malicious",
                                                        attack=attack, buffers=buffers)
            spec = exp.spec
        content = RecordDict({"arrays": to_record(global_params + update, spec, local_buffers),
                              "metrics": MetricRecord({"num-examples": n, "client-id": client})})
        return Message(content, reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        s = settings(defaults, context)
        own = node_of(s)
        if own is not None:
            malicious = own.role == "malicious" or (s.get("role") == "malicious" and bool(s.get("attack")))
            record = ConfigRecord({"partition-id": own.client, "role": "malicious" if malicious else "honest",
                                   "adversary": own.adversary_name, "num-examples": len(own.data)})
        else:
            exp = source(s)
            client = partition_of(s, exp)
            record = ConfigRecord({"partition-id": client, "role": role_of(s, exp, client)})
        return Message(RecordDict({"node": record}), reply_to=msg)

    return app


def _attack(spec: Any):
    """An update attack from a node's 'attack' setting (JSON {name, params}), or None."""
    spec = _component(spec, "attack")
    if spec is None:
        return None
    from poisonlab.fl.attacks import get as get_attack

    return get_attack(spec["name"], **spec["params"])


# ---------------------------------------------------------------------------- server
def server_app(defaults: dict | None = None, sink: Callable[[dict], None] | None = None,
               source: Callable[[dict], engine.Prepared] = from_settings) -> ServerApp:
    """A ServerApp running the experiment's rounds with RobustStrategy and the engine's evaluation.

    sink({"history": [...], "params": final flat global model, "buffers": its buffers}) is called when the run
    ends (the simulation uses it);
    with an 'output' setting the history is also written there as JSON (atomically).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        s = settings(defaults, context)
        exp = source(s)
        timeout = float(s.get("timeout", 600))
        strategy = make_strategy(exp, min_nodes=int(s.get("min-nodes", exp.num_clients)))
        discover(grid, strategy, timeout=timeout, trust_reports=bool(s.get("trust-reported-roles", False)))

        def evaluate(server_round: int, arrays) -> MetricRecord:
            params, buffers = read_record(arrays, exp.spec)
            metrics = exp.evaluate(params, server_round - 1, buffers)
            if server_round > 0:
                strategy.record_evaluation(server_round, metrics)
                progress.step(f"Flower round {server_round}/{exp.rounds}: clean accuracy"
                              f" {_pct(metrics.get('clean_accuracy'))}, ASR {_pct(metrics.get('attack_success_rate'))}",
                              last=server_round == exp.rounds)
            return MetricRecord({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})

        result = strategy.start(grid, to_record(exp.initial_params(), exp.spec, exp.initial_buffers()),
                                num_rounds=exp.rounds, timeout=timeout, evaluate_fn=evaluate)
        if sink is not None:
            final, buffers = read_record(result.arrays, exp.spec) if len(result.arrays) else \
                (exp.initial_params(), exp.initial_buffers())
            sink({"history": strategy.history, "params": final, "buffers": buffers})
        if s.get("output"):
            write_json(Path(str(s["output"])), {"history": strategy.history})

    return app


def _pct(value) -> str:
    """A progress line's percentage ('-' when not measured)."""
    return "-" if not isinstance(value, (int, float)) or value != value else f"{100 * value:.2f}%"


def make_strategy(exp: engine.Prepared, min_nodes: int) -> RobustStrategy:
    """RobustStrategy with the experiment's aggregator chain, sampling, server lr, seed, truth and extras."""
    fed = exp.federation
    strategy = RobustStrategy(fed.aggregator, exp.spec, server_lr=exp.server_lr, seed=exp.seed, malicious=exp.truth,
                              sampler=exp.sample, min_available_nodes=min_nodes)
    strategy.extras = lambda rnd, g: fed.server_extras(rnd, g, strategy.global_buffers)  # the round's global model
    return strategy


def discover(grid: Grid, strategy: RobustStrategy, timeout: float, trust_reports: bool = False) -> None:
    """Ask every node for its partition id and role; map node ids to client ids (partition ids).

    With trust_reports the truth used for scoring becomes the roles the nodes report (a lab
    deployment where node configs set the roles); it never affects aggregation.
    """
    nodes = strategy.wait_for_nodes(grid)
    messages = [Message(RecordDict({"config": ConfigRecord({"ask": "partition-id"})}), dst_node_id=n,
                        message_type="query") for n in nodes]
    mapping, roles = {}, {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = int(reply.metadata.src_node_id)
        if reply.has_error():
            LOG.warning("node %d did not answer the discovery query: %s", node, reply.error.reason)
            continue
        record = reply.content.config_records.get("node")
        if record is None or not isinstance(record.get("partition-id"), int):
            LOG.warning("node %d sent an invalid discovery reply", node)
            continue
        mapping[node], roles[node] = int(record["partition-id"]), str(record.get("role", "honest"))
    if len(set(mapping.values())) != len(mapping):
        raise ConfigError(f"two nodes claim the same partition id: {mapping}; accepted: distinct partition ids")
    strategy.node_clients = mapping
    if trust_reports:
        reported = frozenset(c for n, c in mapping.items() if roles[n] == "malicious")
        strategy.truth = lambda rnd: reported
    LOG.info("discovered nodes -> clients %s; reported roles %s", mapping, roles)


def write_json(path: Path, payload: dict) -> None:
    """Write payload as JSON atomically (temp file + os.replace)."""
    from poisonlab.rundir import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=1))


# ---------------------------------------------------------------------------- deployment entry points
#: ``poisonlab.flower.apps:clientapp`` / ``:serverapp``, configured by the run and node config only
#: (the components of the Flower app that deployment.py writes).
clientapp = client_app()
serverapp = server_app()

__all__ = ["client_app", "clientapp", "discover", "make_strategy", "server_app", "serverapp"]
