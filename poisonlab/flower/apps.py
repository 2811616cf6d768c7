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
  data comes from the experiment's adversary that controls the node's partition; where each
  adversary's attack runs (on its node, or in the server's threat simulation): flower/threat.py;
- server (ServerSettings below): ``output`` (a path: the history is written there as JSON), ``min-nodes``
  (nodes to wait for before the first round; default the experiment's clients), ``timeout`` (seconds the
  server waits for a round's replies; default 600), ``min-replies`` (valid replies a round needs, default 1;
  fewer: the round is skipped), ``checkpoint-every`` / ``checkpoint-dir`` / ``resume`` (server-side
  checkpoints, flower/resume.py), ``trust-reported-roles`` (score flags against the roles the nodes
  report, for lab deployments).

The ClientApp trains with the engine's local training (``poisonlab.fl.local.local_train``, k=1)
from the global parameters and buffers it receives and replies with the trained model (``arrays``:
parameters and buffers, flower/arrays.py) and ``num-examples``; a ``query`` message is
answered with the node's partition id and role, which the ServerApp uses to name clients and
to score the defense (never to decide).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from poisonlab.divergence import check_round
from poisonlab.errors import ConfigError, DataError, PoisonlabError
from poisonlab.fl.federation import _progress as round_progress  # the built-in engine's bar (acc, ASR per round)
from poisonlab.flower import node, require_flwr, resume, sources
from poisonlab.flower import prepared as engine
from poisonlab.flower.arrays import read_record, to_record
from poisonlab.flower.strategy import RobustStrategy, check_positive_int, check_timeout
from poisonlab.flower.threat import server_threat

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
        size = msg.content["config"].get("round-size")
        round_size = int(size) if isinstance(size, int) else None
        if own is not None:
            malicious = own.role == "malicious" or s.get("role") == "malicious"
            attack = _attack(s.get("attack")) if malicious else None
            try:
                global_params, buffers = read_record(msg.content["arrays"], own.spec)
            except DataError as err:
                raise node.check_fits(own, err) from None
            update, n, local_buffers = own.local_result(global_params, rnd, attack=attack, buffers=buffers,
                                                        round_size=round_size)
            spec, client = own.spec, own.client
        else:
            exp = source(s)
            client = partition_of(s, exp)
            role = role_of(s, exp, client)
            attack = _attack(s.get("attack")) if role == "malicious" else None
            global_params, buffers = read_record(msg.content["arrays"], exp.spec)
            update, n, local_buffers = exp.local_result(global_params, client, rnd, malicious=role == "malicious",
                                                        attack=attack, buffers=buffers, round_size=round_size)
            spec = exp.spec
        content = RecordDict({"arrays": to_record(global_params + update, spec, local_buffers),
                              "metrics": MetricRecord({"num-examples": n, "client-id": client})})
        return Message(content, reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        s = settings(defaults, context)
        own = node_of(s)
        if own is not None:
            own_attack = s.get("role") == "malicious" and _attack(s.get("attack")) is not None
            malicious = own.role == "malicious" or own_attack
            record = ConfigRecord({"partition-id": own.client, "role": "malicious" if malicious else "honest",
                                   "adversary": own.adversary_name, "num-examples": len(own.data),
                                   "own-attack": own_attack})
        else:
            exp = source(s)
            client = partition_of(s, exp)
            role = role_of(s, exp, client)
            record = ConfigRecord({"partition-id": client, "role": role,
                                   "own-attack": role == "malicious" and _attack(s.get("attack")) is not None})
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
@dataclass(frozen=True)
class ServerSettings:
    """The ServerApp's settings (run config keys in parentheses), validated by ``server_settings``.

    timeout (``timeout``): seconds the server waits for a round's replies (and for the nodes before the first
    round); min_nodes (``min-nodes``): nodes to wait for before the first round; min_replies (``min-replies``):
    valid replies a round needs to be applied; checkpoint_every / checkpoint_dir (``checkpoint-every`` /
    ``checkpoint-dir``; default the experiment's federated.checkpoint_every / checkpoint_dir): server-side
    checkpoints (flower/resume.py); resume (``resume``): continue from checkpoint_dir; trust_reports
    (``trust-reported-roles``); output (``output``).
    """

    timeout: float = 600.0
    min_nodes: int = 1
    min_replies: int = 1
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    resume: bool = False
    trust_reports: bool = False
    output: str | None = None


def server_settings(s: dict[str, Any], exp: engine.Prepared) -> ServerSettings:
    """The ServerApp's settings from the merged settings, each checked (ConfigError naming the key)."""
    cfg = exp.federation.config
    every = check_positive_int("checkpoint-every", s.get("checkpoint-every", cfg.checkpoint_every), low=0)
    directory = s.get("checkpoint-dir", cfg.checkpoint_dir) or None
    if every and not directory:
        raise ConfigError(f"checkpoint-every={every} needs a checkpoint-dir; accepted: a directory path")
    resume = _flag("resume", s.get("resume", False))
    if resume and not directory:
        raise ConfigError("resume=true needs a checkpoint-dir to resume from; accepted: a directory path")
    min_nodes = check_positive_int("min-nodes", s.get("min-nodes", exp.num_clients))
    min_replies = check_positive_int("min-replies", s.get("min-replies", 1))
    return ServerSettings(timeout=check_timeout(s.get("timeout", 600.0)), min_nodes=min_nodes,
                          min_replies=min_replies, checkpoint_every=every,
                          checkpoint_dir=None if directory is None else str(directory), resume=resume,
                          trust_reports=_flag("trust-reported-roles", s.get("trust-reported-roles", False)),
                          output=str(s["output"]) if s.get("output") else None)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is invalid; accepted: true or false")
    return value


def server_app(defaults: dict | None = None, sink: Callable[[dict], None] | None = None,
               source: Callable[[dict], engine.Prepared] = from_settings) -> ServerApp:
    """A ServerApp running the experiment's rounds with RobustStrategy and the engine's evaluation (run_server).

    sink({"history": [...], "params": final flat global model, "buffers": its buffers}) is called when the run
    ends (the simulation uses it), or sink({"error": err}) with poisonlab's own error (a bad setting, a diverged
    run, an unusable checkpoint), which the simulation raises in its caller; without a sink the error propagates.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            outcome = run_server(grid, settings(defaults, context), source)
        except PoisonlabError as err:
            if sink is None:
                raise
            sink({"error": err})
            return
        if sink is not None:
            sink(outcome)

    return app


def run_server(grid: Grid, s: dict[str, Any], source: Callable[[dict], engine.Prepared]) -> dict:
    """The rounds of one run: discovery as nodes appear, resume from a checkpoint if asked, the rounds with the
    progress bar (the built-in engine's: accuracy and ASR), the divergence check and checkpoints after each;
    the history written to 'output' if set. Returns {"history", "params", "buffers"} of the final model."""
    exp = source(s)
    opts = server_settings(s, exp)
    strategy = make_strategy(exp, min_nodes=opts.min_nodes, min_replies=opts.min_replies, timeout=opts.timeout)
    strategy.discover_new = lambda g, nodes: discover(g, strategy, opts.timeout, opts.trust_reports, nodes)
    initial, first = to_record(exp.initial_params(), exp.spec, exp.initial_buffers()), 1
    resumed = resume.load(opts.checkpoint_dir, exp.spec) if opts.resume else None
    if resumed is not None:
        strategy.history, strategy.state, first = resumed.history, resumed.state, resumed.next_round
        initial = to_record(resumed.params, exp.spec, resumed.buffers)
        LOG.info("resuming from the checkpoint in %s at round %d", opts.checkpoint_dir, first)

    def evaluate(server_round: int, arrays) -> MetricRecord:
        params, buffers = read_record(arrays, exp.spec)
        metrics = exp.evaluate(params, server_round - 1, buffers)
        if server_round > 0:
            strategy.record_evaluation(server_round, metrics)
        return MetricRecord({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})

    with round_progress(exp.federation.config.quiet, exp.rounds, first - 1) as bar:
        def after_round(server_round: int, arrays) -> None:
            entry = strategy.history[-1]
            bar(SimpleNamespace(**entry))
            LOG.info("round %d/%d: clean accuracy %s, ASR %s", server_round, exp.rounds, entry["clean_accuracy"],
                     entry["attack_success_rate"])
            check_round(divergence_view(entry), exp.federation.config)
            if opts.checkpoint_every and (server_round % opts.checkpoint_every == 0 or server_round == exp.rounds):
                params, buffers = read_record(arrays, exp.spec)
                resume.save(opts.checkpoint_dir, server_round, params, buffers, strategy.state, strategy.history)

        result = strategy.start(grid, initial, num_rounds=exp.rounds, timeout=opts.timeout, evaluate_fn=evaluate,
                                first_round=first, after_round=after_round)
    if opts.output:
        write_json(Path(opts.output), {"history": strategy.history})
    final, buffers = read_record(result.arrays, exp.spec)
    return {"history": strategy.history, "params": final, "buffers": buffers}


def divergence_view(entry: dict) -> SimpleNamespace:
    """The round as poisonlab.divergence.check_round reads it: the rows of valid replies plus those rejected as
    non-finite (norm NaN), the malicious ids and the evaluated loss."""
    nonfinite = {r["client"] for r in entry["rejected"] if "non-finite" in r["reason"]}
    rows = [(c, math.nan if n is None else n) for c, n in zip(entry["sampled"], entry["update_norms"])
            if n is not None or c in nonfinite]
    return SimpleNamespace(round=entry["round"], sampled=[c for c, _ in rows], update_norms=[n for _, n in rows],
                           malicious=entry["malicious"], loss=entry["loss"])


def make_strategy(exp: engine.Prepared, min_nodes: int, min_replies: int = 1, timeout: float = 600.0
                  ) -> RobustStrategy:
    """RobustStrategy with the experiment's aggregator chain, sampling, server lr, seed, truth, extras and threat
    simulation (flower/threat.py)."""
    fed = exp.federation
    strategy = RobustStrategy(fed.aggregator, exp.spec, server_lr=exp.server_lr, seed=exp.seed, malicious=exp.truth,
                              sampler=exp.sample, min_available_nodes=min_nodes, min_replies=min_replies,
                              wait_timeout=timeout, num_clients=exp.num_clients,
                              threat=server_threat(fed.adversaries, fed.adversary_clients, set()))
    strategy.extras = lambda rnd, g: fed.server_extras(rnd, g, strategy.global_buffers)  # the round's global model
    return strategy


def discover(grid: Grid, strategy: RobustStrategy, timeout: float, trust_reports: bool = False,
             nodes: list[int] | None = None) -> None:
    """Ask nodes (None: every connected node) for their partition id, role and whether they run their own attack;
    map node ids to client ids (partition ids). A node that answers for a client already known (it came back
    under a new node id) replaces the old node. Clients with an own attack or an honest role are left out of
    the threat simulation.

    With trust_reports the truth used for scoring becomes the roles the nodes report (a lab
    deployment where node configs set the roles); it never affects aggregation.
    """
    nodes = strategy.wait_for_nodes(grid) if nodes is None else nodes
    messages = [Message(RecordDict({"config": ConfigRecord({"ask": "partition-id"})}), dst_node_id=n,
                        message_type="query") for n in nodes]
    mapping, roles, own = {}, {}, {}
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
        own[node] = bool(record.get("own-attack", False))
    if len(set(mapping.values())) != len(mapping):
        raise ConfigError(f"two nodes claim the same partition id: {mapping}; accepted: distinct partition ids")
    for node, client in mapping.items():
        for old in [n for n, c in strategy.node_clients.items() if c == client and n != node]:
            LOG.warning("client %d is now on node %d (was node %d)", client, node, old)
            del strategy.node_clients[old]
        strategy.node_clients[node] = client
        strategy.reported_roles[client] = roles[node]
        excluded = getattr(strategy.threat, "excluded", None)
        if excluded is not None and (own[node] or roles[node] != "malicious"):
            excluded.add(client)
        elif excluded is not None:
            excluded.discard(client)
    if trust_reports:
        strategy.truth = lambda rnd: frozenset(c for c, r in strategy.reported_roles.items() if r == "malicious")
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
