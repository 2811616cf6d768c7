"""RobustStrategy: a Flower strategy that aggregates with any poisonlab aggregator chain.

One training round, as a readable sequence of steps (``RobustStrategy.start`` drives them: Flower's
Strategy.start loop, plus a first round to resume from and a callback after each round):

1. ``configure_train``: draw the round's clients (poisonlab.fl.round.sample_clients, seeded from the
   experiment seed: the built-in engine's draw and rounding), look up the node holding each one among
   the nodes connected NOW (node -> client from discovery; no client id is ever a position in the node
   list); a drawn client whose node is not connected is dropped from the round with the reason; remember
   the global model; send it (with the round number and the round's size) to the others.
2. ``aggregate_train``: every node sent to that did not reply before the round timeout, or whose
   reply is Flower's "node unavailable" error, is dropped with the reason; every reply is *validated*
   (error replies, a missing ArrayRecord or weight, arrays missing / unexpected / of the wrong shape or
   dtype / NaN or Inf are each rejected with a logged reason); with fewer valid replies than
   ``min_replies`` the round is skipped (global model unchanged, ``skipped`` says why); otherwise the
   valid ones are stacked, in client-id order as the engine's rows, into the (k, d) update matrix
   (update = returned model - global model); the threat simulation (flower/threat.py: omniscient or
   colluding adversaries, applied by the server to their clients' rows with the engine's context) runs;
   then the engine's own steps (poisonlab.fl.round): ``aggregate_and_apply`` and ``round_record``.

A model with buffers (batch norm's running statistics) has them in every record beside the parameters
(flower/arrays.py): the update matrix is parameters only (the rule never sees buffers), and the new global
buffers are the weighted mean of the valid replies' buffers (weights = num-examples; poisonlab.fl.buffers
.average, as the built-in engine), set only when the round is applied.

Every round appends one entry to ``self.history`` in the shape of the built-in engine's
metrics.json history (round, sampled, malicious, selected, flagged, update_norms, precision,
recall, applied, seconds; clean_accuracy / attack_success_rate / loss are filled in by the
ServerApp's centralized evaluation), plus ``flagged_nodes``, ``rejected`` and ``dropped`` ({node,
client, reason} each), ``skipped`` (None, or why the round was not applied), ``simulated`` (clients whose
rows the server's threat simulation rewrote), ``scores`` and ``info``. ``sampled`` lists the clients
whose node was sent the model. A stateful rule's state (Aggregate.state) is kept between rounds and
passed back as RoundContext.state; flower/resume.py checkpoints it with the global model.

Client ids: a node's client id is its ``partition-id`` when the ServerApp has discovered it
(``node_clients``; a node that connects later is discovered when first seen, through
``discover_new``), else the rank at which the strategy first saw the node. Truth about which
clients are malicious (``malicious``) is only used to score the defense (precision/recall,
ctx.malicious), never to decide.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

import torch

from poisonlab.errors import ConfigError, DataError
from poisonlab.flower import require_flwr
from poisonlab.fl.buffers import average
from poisonlab.flower.arrays import ArraySpec, read_record, to_record
from poisonlab.fl.round import aggregate_and_apply, round_record, sample_clients, sample_size
from poisonlab.fl.history import RoundRecord
from poisonlab.fl.types import Aggregate, RoundContext

require_flwr()
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from flwr.serverapp.strategy import FedAvg, Result  # noqa: E402

LOG = logging.getLogger("poisonlab.flower")

Rule = Callable[[torch.Tensor, torch.Tensor, RoundContext], Aggregate]
Sampler = Callable[[int, int], list[int]]
#: Threat(round, sampled client ids (k,), malicious (k,)) -> (adversaries, their row masks) the server simulates
Threat = Callable[[int, torch.Tensor, torch.Tensor], tuple[list, list[torch.Tensor]]]
#: Flower's error codes for a reply that never came from the node (flwr.common.constant.ErrorCode)
UNAVAILABLE_CODES = {3: "message unavailable", 4: "reply unavailable", 5: "node unavailable"}


def default_sampler(sample: float | int, seed: int) -> Sampler:
    """sampler(round, K) -> sorted client ids: the built-in engine's draw (poisonlab.fl.round.sample_clients).

    A float in (0, 1] is a fraction (max(1, round(sample * K)) clients, Python's round), an int a count.
    """
    sample_size(sample, 1)  # a ConfigError now for an invalid sample

    def sampler(round: int, k: int) -> list[int]:
        return sample_clients(k, sample, seed, round).tolist()

    return sampler


def check_positive_int(name: str, value, low: int = 1) -> int:
    """value as an int >= low, or ConfigError naming the setting."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} is invalid; accepted: an integer >= {low}")
    return value


def check_timeout(value) -> float:
    """A round timeout in seconds: a finite number > 0, or ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"timeout={value!r} is invalid; accepted: seconds per round, a finite number > 0")
    return float(value)


class RobustStrategy(FedAvg):
    """A Flower strategy aggregating with a poisonlab rule (e.g. ``get("median")``, ``chain(...)``).

    aggregator: rule(updates (k, d), weights (k,), ctx) -> Aggregate (poisonlab.fl.aggregators);
    spec: the model's ArraySpec (replies must match it exactly);
    server_lr: eta in global + eta * aggregate; sample: fraction or count of clients per round;
    seed: experiment seed (sampling, ctx.seed); malicious: client ids known to be malicious, or
    truth(round) -> set of them (scoring only); sampler: sampler(round, K) -> client ids, overriding
    sample; extras(round, global) -> RoundContext.extras (e.g. FLTrust's server update);
    min_available_nodes: nodes to wait for (at most ``wait_timeout`` seconds) before the first round;
    min_replies: valid replies a round needs to be applied (fewer: skipped, never a crash);
    num_clients: K, the federation's clients (None: the clients known so far); threat: the server's
    threat simulation (flower/threat.py; None: none); discover_new(grid, nodes): learn the client ids of
    nodes seen for the first time (the ServerApp's discovery query).
    """

    def __init__(self, aggregator: Rule, spec: ArraySpec, *, server_lr: float = 1.0, sample: float | int = 1.0,
                 seed: int = 0, malicious: Iterable[int] | Callable[[int], set[int]] = (),
                 sampler: Sampler | None = None, extras: Callable[[int, torch.Tensor], dict] | None = None,
                 min_available_nodes: int = 2, min_replies: int = 1, wait_timeout: float = 600.0,
                 num_clients: int | None = None, threat: Threat | None = None,
                 discover_new: Callable[[Grid, list[int]], None] | None = None, fraction_evaluate: float = 0.0,
                 weighted_by_key: str = "num-examples", arrayrecord_key: str = "arrays",
                 configrecord_key: str = "config") -> None:
        if not callable(aggregator):
            raise ConfigError(f"aggregator {aggregator!r} is not callable; accepted: a poisonlab rule such as"
                              " poisonlab.fl.aggregators.get('median')")
        check_positive_int("min-nodes", min_available_nodes)
        super().__init__(fraction_train=1.0, fraction_evaluate=fraction_evaluate, min_train_nodes=1,
                         min_evaluate_nodes=1 if fraction_evaluate else 0, min_available_nodes=min_available_nodes,
                         weighted_by_key=weighted_by_key, arrayrecord_key=arrayrecord_key,
                         configrecord_key=configrecord_key)
        self.aggregator = aggregator
        self.spec = spec
        self.server_lr = float(server_lr)
        self.seed = int(seed)
        self.truth = malicious if callable(malicious) else (lambda rnd, fixed=frozenset(int(c) for c in malicious): fixed)
        self.extras = extras
        self.sampler = sampler or default_sampler(sample, self.seed)
        self.min_replies = check_positive_int("min-replies", min_replies)
        self.wait_timeout = check_timeout(wait_timeout)
        self.num_clients, self.threat, self.discover_new = num_clients, threat, discover_new
        self.node_clients: dict[int, int] = {}
        self.reported_roles: dict[int, str] = {}  # client -> the role its node reported (discovery)
        self.history: list[dict] = []
        self.state: dict | None = None  # the rule's Aggregate.state of the last round
        self._global: torch.Tensor | None = None
        self._global_buffers: dict[str, torch.Tensor] = {}
        self._sent: dict[int, int] = {}
        self._dropped: list[dict] = []
        self._outgoing: list[Message] = []
        self._started = 0.0
        self._round = 0
        self._waited = False

    # ------------------------------------------------------------------ Flower API
    def summary(self) -> None:
        """Log the strategy's configuration."""
        LOG.info("RobustStrategy: aggregator=%r server_lr=%s seed=%d d=%d min_replies=%d", self.aggregator,
                 self.server_lr, self.seed, self.spec.dim, self.min_replies)
        super().summary()

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None, *,
              first_round: int = 1, after_round: Callable[[int, ArrayRecord], None] | None = None) -> Result:
        """Flower's round loop (flwr Strategy.start: configure_train, send_and_receive with the round timeout,
        aggregate_train, client evaluation if configured, evaluate_fn) over rounds first_round..num_rounds
        (first_round > 1: a resumed run; initial_arrays is then the global model after round first_round - 1,
        and evaluate_fn is not called for it). after_round(round, arrays) runs after each round's evaluation
        (checkpoints, progress)."""
        timeout = check_timeout(timeout)
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result, arrays = Result(), initial_arrays
        result.arrays = initial_arrays
        if evaluate_fn and first_round == 1 and (res := evaluate_fn(0, initial_arrays)) is not None:
            result.evaluate_metrics_serverapp[0] = res
        for rnd in range(first_round, num_rounds + 1):
            replies = grid.send_and_receive(messages=self.configure_train(rnd, arrays, train_config, grid),
                                            timeout=timeout)
            new, train_metrics = self.aggregate_train(rnd, replies)
            if new is not None:
                result.arrays = arrays = new
            if train_metrics is not None:
                result.train_metrics_clientapp[rnd] = train_metrics
            evaluation = list(self.configure_evaluate(rnd, arrays, evaluate_config, grid))
            if evaluation:
                metrics = self.aggregate_evaluate(rnd, grid.send_and_receive(messages=evaluation, timeout=timeout))
                if metrics is not None:
                    result.evaluate_metrics_clientapp[rnd] = metrics
            if evaluate_fn and (res := evaluate_fn(rnd, arrays)) is not None:
                result.evaluate_metrics_serverapp[rnd] = res
            if after_round is not None:
                after_round(rnd, arrays)
        return result

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Draw the round's clients (seeded), send the global model to the connected nodes holding them."""
        self._started = time.perf_counter()
        self._round = server_round - 1
        nodes = self.connected_nodes(grid)
        by_client = {c: n for n, c in self.node_clients.items() if n in set(nodes)}
        k = self._k()
        chosen = self.sampler(server_round - 1, k) if k else []
        self._sent = {by_client[c]: c for c in chosen if c in by_client}
        last = {c: n for n, c in self.node_clients.items()}  # the node a client was last seen on
        self._dropped = [self._drop(last.get(c), c, "its node is not connected") for c in chosen if c not in by_client]
        self._global, self._global_buffers = read_record(arrays, self.spec)
        config["server-round"] = server_round
        config["round-size"] = len(chosen)
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        LOG.info("round %d: sent the global model to %d of %d connected nodes (%d drawn)", server_round,
                 len(self._sent), len(nodes), len(chosen))
        self._outgoing = list(self._construct_messages(record, list(self._sent), MessageType.TRAIN))
        return self._outgoing

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop the silent nodes, validate replies, aggregate the valid ones with the poisonlab rule."""
        if self._global is None:
            raise ConfigError("aggregate_train called before configure_train; the strategy has no global model")
        replies, dropped = self.split_unavailable(list(replies))
        valid, rejected = self.validate_replies(replies)
        entry = self._entry(server_round, replies, valid, rejected, dropped)
        if len(valid) < self.min_replies:
            entry["skipped"] = (f"{len(valid)} valid replies, fewer than min-replies={self.min_replies};"
                                " the global model is unchanged")
            entry["applied"] = False
            LOG.warning("round %d skipped: %s", server_round, entry["skipped"])
            self._finish(entry)
            return None, None
        valid = sorted(valid, key=lambda v: self._client_of(v[0]))  # rows in client-id order, as the engine's
        nodes = [n for n, _, _, _ in valid]
        updates = torch.stack([local - self._global for _, local, _, _ in valid])
        weights = torch.tensor([w for _, _, w, _ in valid], dtype=torch.float32)
        client_buffers = {name: torch.stack([b[name] for _, _, _, b in valid]) for name in self._global_buffers}
        clients = torch.tensor([self._client_of(n) for n in nodes], dtype=torch.long)
        malicious = torch.tensor([int(c) in self.malicious for c in clients], dtype=torch.bool)
        extras = self.extras(server_round - 1, self._global) if self.extras else {}
        ctx = RoundContext(round=server_round - 1, num_clients=self._k(), sampled=clients,
                           global_params=self._global, server_lr=self.server_lr, malicious=malicious,
                           omniscient=True, seed=self.seed, state=self.state,
                           extras={"weights": weights, "aggregator": self.aggregator, **extras})  # the rule: aware attacks
        updates = self.simulate_threat(entry, updates, clients, malicious, ctx)
        new, agg, applied = aggregate_and_apply(self.aggregator, updates, weights, ctx, self._global, self.server_lr)
        self.state = agg.state
        self._record_aggregate(entry, nodes, round_record(server_round - 1, clients, malicious, updates, agg, applied),
                               agg)
        self._finish(entry)
        if not applied:
            LOG.warning("round %d: the aggregate is not finite; the global model is unchanged", server_round)
            return None, None
        metrics = self._train_metrics([m for m in replies if m.metadata.src_node_id in set(nodes)])
        return to_record(new, self.spec, average(client_buffers, weights, self._global_buffers)), metrics

    # ------------------------------------------------------------------ steps
    def simulate_threat(self, entry: dict, updates: torch.Tensor, clients: torch.Tensor, malicious: torch.Tensor,
                        ctx: RoundContext) -> torch.Tensor:
        """The threat simulation (flower/threat.py): the server applies the omniscient / colluding adversaries'
        boost and update attack to their clients' rows, with the engine's context; logged and recorded."""
        if self.threat is None:
            return updates
        from poisonlab.fl.round import apply_adversaries

        adversaries, masks = self.threat(ctx.round, clients, malicious)
        rows = torch.zeros(len(clients), dtype=torch.bool)
        for m in masks:
            rows |= m
        entry["simulated"] = clients[rows].tolist()
        if not adversaries or not bool(rows.any()):
            return updates
        LOG.info("round %d: threat simulation: the server applies the omniscient/colluding attack to clients %s",
                 ctx.round + 1, entry["simulated"])
        return apply_adversaries(updates.clone(), masks, adversaries, ctx)

    def split_unavailable(self, replies: list[Message]) -> tuple[list[Message], list[dict]]:
        """(the replies from nodes, the drops): nodes sent to without a reply before the timeout, and
        Flower's own error replies for a node or message that is not available (the node is down)."""
        kept, dropped = [], list(self._dropped)
        for msg in replies:
            code = int(msg.error.code) if msg.has_error() else None
            if code in UNAVAILABLE_CODES:
                node = self._node_of_reply(msg)
                node = int(msg.metadata.src_node_id) if node is None else node
                dropped.append(self._drop(node, self._sent.get(node), f"{UNAVAILABLE_CODES[code]}: {msg.error.reason}"))
            else:
                kept.append(msg)
        answered = {int(m.metadata.src_node_id) for m in kept} | {d["node"] for d in dropped}
        for node in sorted(set(self._sent) - answered):
            dropped.append(self._drop(node, self._sent[node], "no reply before the round timeout (down or too slow)"))
        return kept, dropped

    def _node_of_reply(self, msg: Message) -> int | None:
        """The node an error reply stands for: Flower's system replies come from the SuperLink and name the
        instruction they answer (its message id, set on our message when the grid pushed it)."""
        answered = msg.metadata.reply_to_message_id
        return next((int(m.metadata.dst_node_id) for m in self._outgoing if m.metadata.message_id == answered), None)

    def _drop(self, node: int | None, client: int | None, reason: str) -> dict:
        """One drop mark {node, client, reason}, logged."""
        LOG.warning("round %d: dropped node %s (client %s): %s", self._round + 1, node, client, reason)
        return {"node": node, "client": client, "reason": reason}

    def validate_replies(self, replies: list[Message]) -> tuple[list[tuple[int, torch.Tensor, float, dict]],
                                                                  list[tuple[int, str]]]:
        """Split replies into valid (node, local params (d,), weight, local buffers) and rejected (node, reason).

        A reply is rejected if it carries an error, comes from a node not sent this round or twice,
        lacks the ArrayRecord or the weight, or its arrays do not match the spec or are not finite.
        """
        valid, rejected, seen = [], [], set()
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            try:
                if node not in self._sent:
                    raise DataError(f"reply from node {node}, which was not sampled this round")
                if node in seen:
                    raise DataError("a second reply from the same node this round")
                seen.add(node)
                local, weight, buffers = self._read_reply(msg)
                valid.append((node, local, weight, buffers))
            except DataError as err:
                rejected.append((node, str(err)))
                LOG.warning("rejected the reply of node %d (client %s): %s", node, self._sent.get(node, "?"), err)
        return valid, rejected

    def _read_reply(self, msg: Message) -> tuple[torch.Tensor, float, dict]:
        """(local params, weight, local buffers) of one reply, or DataError with the reason."""
        if msg.has_error():
            raise DataError(f"the client reported an error: {msg.error.reason}")
        if not msg.has_content():
            raise DataError("missing content: the reply has neither content nor an error")
        content = msg.content
        arrays = content.array_records.get(self.arrayrecord_key)
        if arrays is None:
            raise DataError(f"missing arrays: no ArrayRecord '{self.arrayrecord_key}' in the reply"
                            f" (has {sorted(content.array_records)})")
        weight = self._weight(content)
        local, buffers = read_record(arrays, self.spec)
        return local, weight, buffers

    def _weight(self, content: RecordDict) -> float:
        """The reply's weight (MetricRecord value weighted_by_key): finite and > 0."""
        for record in content.metric_records.values():
            if self.weighted_by_key in record:
                value = record[self.weighted_by_key]
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                        and value > 0:
                    return float(value)
                raise DataError(f"metric '{self.weighted_by_key}'={value!r} is invalid; accepted: a finite number > 0")
        raise DataError(f"missing metric '{self.weighted_by_key}' in the reply")

    def _record_aggregate(self, entry: dict, nodes: list[int], record: RoundRecord, agg: Aggregate) -> None:
        """Fill the history entry from the round's record (the rows of the valid replies); log the flagged nodes.

        sampled / malicious stay those of every node sent to; update_norms and scores are listed per
        node sent to (None for a node without a valid reply).
        """
        by_client = dict(zip(record.sampled, nodes))
        entry["selected"], entry["flagged"] = record.selected, record.flagged
        entry["flagged_nodes"] = [by_client[c] for c in record.flagged]
        entry["precision"], entry["recall"], entry["applied"] = record.precision, record.recall, record.applied
        norms = dict(zip(nodes, record.update_norms))
        entry["update_norms"] = [norms.get(n) for n in entry["_sent_nodes"]]
        if agg.scores is not None:
            scores = dict(zip(nodes, agg.scores.tolist()))
            entry["scores"] = [_json_float(scores.get(n)) for n in entry["_sent_nodes"]]
        entry["info"] = _jsonable(agg.info)
        LOG.info("round %d: flagged nodes %s (clients %s) of %d", entry["round"] + 1, entry["flagged_nodes"],
                 entry["flagged"], len(nodes))

    def _entry(self, server_round: int, replies: list[Message], valid: list, rejected: list,
               dropped: list[dict]) -> dict:
        """A fresh history entry for this round (metrics.json history shape, plus rejected / dropped / skipped)."""
        sent_nodes = sorted(self._sent, key=lambda n: self._sent[n])
        return {"round": server_round - 1, "clean_accuracy": None, "attack_success_rate": None, "loss": None,
                "sampled": [self._sent[n] for n in sent_nodes],
                "malicious": sorted(c for c in self._sent.values() if c in self.malicious),
                "selected": [], "flagged": [], "flagged_nodes": [], "update_norms": [None] * len(sent_nodes),
                "precision": None, "recall": None, "flips": {}, "applied": True, "seconds": None,
                "rejected": [{"node": n, "client": self._sent.get(n), "reason": r} for n, r in rejected],
                "dropped": dropped, "skipped": None, "simulated": [], "_sent_nodes": sent_nodes}

    def _finish(self, entry: dict) -> None:
        entry.pop("_sent_nodes", None)
        entry["seconds"] = time.perf_counter() - self._started
        self.history.append(entry)

    def record_evaluation(self, server_round: int, metrics: dict) -> None:
        """Attach the centralized evaluation of round server_round (1-based) to its history entry."""
        for entry in reversed(self.history):
            if entry["round"] == server_round - 1:
                for key in ("clean_accuracy", "attack_success_rate", "loss"):
                    if key in metrics:
                        entry[key] = _json_float(metrics[key])
                entry["flips"] = dict(metrics.get("flips") or {})
                entry["seconds"] = time.perf_counter() - self._started
                return

    def _train_metrics(self, replies: list[Message]) -> MetricRecord | None:
        """Weighted mean of the valid replies' training metrics (Flower's default), None if inconsistent."""
        try:
            return self.train_metrics_aggr_fn([m.content for m in replies], self.weighted_by_key)
        except Exception as err:  # noqa: BLE001 - metrics are informative; never fail the round on them
            LOG.warning("could not aggregate the training metrics: %s", err)
            return None

    @property
    def global_buffers(self) -> dict[str, torch.Tensor]:
        """The buffers of the global model sent this round (name -> tensor; empty for a buffer-free model)."""
        return self._global_buffers

    @property
    def malicious(self) -> set[int]:
        """Clients truly malicious in the current round (scoring only)."""
        return set(self.truth(self._round))

    # ------------------------------------------------------------------ nodes and ids
    def connected_nodes(self, grid: Grid) -> list[int]:
        """The nodes connected now (sorted), every one with a client id: before the first round, wait up to
        wait_timeout seconds for min_available_nodes of them (then go on with those connected, logged); a node
        seen for the first time is discovered (discover_new) or, without discovery, gets the next free id."""
        if not self._waited:
            self._waited = True
            self.wait_for_nodes(grid)
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if len(nodes) < self.min_available_nodes:
            LOG.warning("%d nodes connected, fewer than min-nodes=%d; the round goes on with them", len(nodes),
                        self.min_available_nodes)
        new = [n for n in nodes if n not in self.node_clients]
        if new and self.discover_new is not None:
            self.discover_new(grid, new)
        for n in new:
            if n not in self.node_clients and self.discover_new is None:
                self.node_clients[n] = max(self.node_clients.values(), default=-1) + 1
        return [n for n in nodes if n in self.node_clients]

    def _k(self) -> int:
        """K for RoundContext.num_clients: the federation's clients, else the clients known so far."""
        return self.num_clients if self.num_clients is not None else len(set(self.node_clients.values()))

    def _client_of(self, node: int) -> int:
        return self._sent.get(node, self.node_clients.get(node, -1))

    def wait_for_nodes(self, grid: Grid, timeout: float | None = None) -> list[int]:
        """The connected node ids (sorted), after waiting up to timeout (None: wait_timeout) seconds for
        min_available_nodes of them."""
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes and time.monotonic() < deadline:
            LOG.info("waiting for nodes: %d connected, %d wanted", len(nodes), self.min_available_nodes)
            time.sleep(1.0)
        return nodes


def fault_lines(history: list[dict]) -> list[str]:
    """One line per round that dropped a client or was skipped (for the run's warnings and its report banner)."""
    lines = []
    for entry in history:
        parts = [f"client {d['client']} dropped ({d['reason']})" for d in entry.get("dropped") or []]
        if entry.get("skipped"):
            parts.append(f"skipped: {entry['skipped']}")
        if parts:
            lines.append(f"Flower round {entry['round'] + 1}: " + "; ".join(parts))
    return lines


def _json_float(value):
    """A float for JSON (None for None / NaN / Inf)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(info: dict) -> dict:
    """The aggregate's info with tensors turned into lists and numbers into floats."""
    out = {}
    for key, value in (info or {}).items():
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        out[str(key)] = value
    return out
