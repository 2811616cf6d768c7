"""RobustStrategy: a Flower strategy that aggregates with any poisonlab aggregator chain.

One training round, as a readable sequence of steps (Flower's ``Strategy.start`` drives it):

1. ``configure_train``: sample clients (poisonlab.fl.round.sample_clients, seeded from the
   experiment seed: the built-in engine's draw and rounding), remember the global model, send it
   to the sampled nodes.
2. ``aggregate_train``: for every reply, *validate* it (error replies, a missing ArrayRecord or
   weight, arrays missing / unexpected / of the wrong shape or dtype / NaN or Inf are each
   rejected with a logged reason; the round goes on with the rest); stack the valid ones, in
   client-id order as the engine's rows, into the (k, d) update matrix (update = returned model -
   global model); then the engine's own steps (poisonlab.fl.round): ``aggregate_and_apply`` (the
   rule, ``global + server_lr * update``, the global model kept if that is not finite) and
   ``round_record`` (selected, flagged, precision, recall); log which nodes it flagged.

A model with buffers (batch norm's running statistics) has them in every record beside the parameters
(flower/arrays.py): the update matrix is parameters only (the rule never sees buffers), and the new global
buffers are the weighted mean of the valid replies' buffers (weights = num-examples; poisonlab.fl.buffers
.average, as the built-in engine), set only when the round is applied.

Every round appends one entry to ``self.history`` in the shape of the built-in engine's
metrics.json history (round, sampled, malicious, selected, flagged, update_norms, precision,
recall, applied, seconds; clean_accuracy / attack_success_rate / loss are filled in by the
ServerApp's centralized evaluation), plus ``flagged_nodes``, ``rejected`` ({node, client,
reason}), ``scores`` and ``info``. A stateful rule's state (Aggregate.state) is kept between
rounds and passed back as RoundContext.state (not checkpointed: Flower runs do not resume).

Client ids: a node's client id is its ``partition-id`` when the ServerApp has discovered it
(``node_clients``), else the node's rank among the sorted node ids. Truth about which clients are
malicious (``malicious``) is only used to score the defense (precision/recall, ctx.malicious),
never to decide.
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
from flwr.serverapp.strategy import FedAvg  # noqa: E402

LOG = logging.getLogger("poisonlab.flower")

Rule = Callable[[torch.Tensor, torch.Tensor, RoundContext], Aggregate]
Sampler = Callable[[int, int], list[int]]


def default_sampler(sample: float | int, seed: int) -> Sampler:
    """sampler(round, K) -> sorted client ids: the built-in engine's draw (poisonlab.fl.round.sample_clients).

    A float in (0, 1] is a fraction (max(1, round(sample * K)) clients, Python's round), an int a count.
    """
    sample_size(sample, 1)  # a ConfigError now for an invalid sample

    def sampler(round: int, k: int) -> list[int]:
        return sample_clients(k, sample, seed, round).tolist()

    return sampler


class RobustStrategy(FedAvg):
    """A Flower strategy aggregating with a poisonlab rule (e.g. ``get("median")``, ``chain(...)``).

    aggregator: rule(updates (k, d), weights (k,), ctx) -> Aggregate (poisonlab.fl.aggregators);
    spec: the model's ArraySpec (replies must match it exactly);
    server_lr: eta in global + eta * aggregate; sample: fraction or count of clients per round;
    seed: experiment seed (sampling, ctx.seed); malicious: client ids known to be malicious, or
    truth(round) -> set of them (scoring only); sampler: sampler(round, K) -> client ids, overriding
    sample; extras(round, global) -> RoundContext.extras (e.g. FLTrust's server update);
    min_available_nodes: nodes to wait for before the first round.
    """

    def __init__(self, aggregator: Rule, spec: ArraySpec, *, server_lr: float = 1.0, sample: float | int = 1.0,
                 seed: int = 0, malicious: Iterable[int] | Callable[[int], set[int]] = (),
                 sampler: Sampler | None = None, extras: Callable[[int, torch.Tensor], dict] | None = None,
                 min_available_nodes: int = 2, fraction_evaluate: float = 0.0,
                 weighted_by_key: str = "num-examples", arrayrecord_key: str = "arrays",
                 configrecord_key: str = "config") -> None:
        if not callable(aggregator):
            raise ConfigError(f"aggregator {aggregator!r} is not callable; accepted: a poisonlab rule such as"
                              " poisonlab.fl.aggregators.get('median')")
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
        self.node_clients: dict[int, int] = {}
        self.history: list[dict] = []
        self.state: dict | None = None  # the rule's Aggregate.state of the last round
        self._global: torch.Tensor | None = None
        self._global_buffers: dict[str, torch.Tensor] = {}
        self._sent: dict[int, int] = {}
        self._started = 0.0
        self._round = 0

    # ------------------------------------------------------------------ Flower API
    def summary(self) -> None:
        """Log the strategy's configuration."""
        LOG.info("RobustStrategy: aggregator=%r server_lr=%s seed=%d d=%d", self.aggregator, self.server_lr,
                 self.seed, self.spec.dim)
        super().summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Sample clients (seeded), remember the global model, send it with the round number."""
        self._started = time.perf_counter()
        self._round = server_round - 1
        nodes = self.wait_for_nodes(grid)
        clients = self.client_ids(nodes)
        by_client = {c: n for n, c in zip(nodes, clients)}
        chosen = self.sampler(server_round - 1, len(nodes))
        ordered = sorted(by_client)  # client ids in order; the sampler picks positions in it
        self._sent = {by_client[ordered[i]]: ordered[i] for i in chosen}
        self._global, self._global_buffers = read_record(arrays, self.spec)
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        LOG.info("round %d: sent the global model to %d of %d nodes", server_round, len(self._sent), len(nodes))
        return self._construct_messages(record, list(self._sent), MessageType.TRAIN)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate replies, aggregate the valid ones with the poisonlab rule, log flagged nodes."""
        if self._global is None:
            raise ConfigError("aggregate_train called before configure_train; the strategy has no global model")
        replies = list(replies)
        valid, rejected = self.validate_replies(replies)
        entry = self._entry(server_round, replies, valid, rejected)
        if not valid:
            LOG.warning("round %d: no valid reply (%d rejected); the global model is unchanged",
                        server_round, len(rejected))
            self._finish(entry)
            return None, None
        valid = sorted(valid, key=lambda v: self._client_of(v[0]))  # rows in client-id order, as the engine's
        nodes = [n for n, _, _, _ in valid]
        updates = torch.stack([local - self._global for _, local, _, _ in valid])
        weights = torch.tensor([w for _, _, w, _ in valid], dtype=torch.float32)
        client_buffers = {name: torch.stack([b[name] for _, _, _, b in valid]) for name in self._global_buffers}
        clients = torch.tensor([self._client_of(n) for n in nodes], dtype=torch.long)
        malicious = torch.tensor([int(c) in self.malicious for c in clients], dtype=torch.bool)
        ctx = RoundContext(round=server_round - 1, num_clients=max(len(self.node_clients), len(self._sent)),
                           sampled=clients, global_params=self._global, server_lr=self.server_lr,
                           malicious=malicious, omniscient=False, seed=self.seed,
                           extras=self.extras(server_round - 1, self._global) if self.extras else {},
                           state=self.state)
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

    def _entry(self, server_round: int, replies: list[Message], valid: list, rejected: list) -> dict:
        """A fresh history entry for this round (metrics.json history shape)."""
        sent_nodes = sorted(self._sent, key=lambda n: self._sent[n])
        entry = {"round": server_round - 1, "clean_accuracy": None, "attack_success_rate": None, "loss": None,
                 "sampled": [self._sent[n] for n in sent_nodes],
                 "malicious": sorted(c for c in self._sent.values() if c in self.malicious),
                 "selected": [], "flagged": [], "flagged_nodes": [], "update_norms": [None] * len(sent_nodes),
                 "precision": None, "recall": None, "flips": {}, "applied": True, "seconds": None,
                 "rejected": [{"node": n, "client": self._sent.get(n), "reason": r} for n, r in rejected],
                 "_sent_nodes": sent_nodes}
        missing = set(self._sent) - {int(m.metadata.src_node_id) for m in replies}
        for node in sorted(missing):
            reason = "no reply before the timeout"
            entry["rejected"].append({"node": node, "client": self._sent[node], "reason": reason})
            LOG.warning("node %d (client %d): %s", node, self._sent[node], reason)
        return entry

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

    # ------------------------------------------------------------------ ids
    def client_ids(self, nodes: list[int]) -> list[int]:
        """Client id of each node: its discovered partition-id, else its rank among the sorted nodes."""
        if self.node_clients and all(n in self.node_clients for n in nodes):
            return [self.node_clients[n] for n in nodes]
        return [sorted(nodes).index(n) for n in nodes]

    def _client_of(self, node: int) -> int:
        return self._sent.get(node, self.node_clients.get(node, -1))

    def wait_for_nodes(self, grid: Grid) -> list[int]:
        """The connected node ids (sorted), after waiting for min_available_nodes of them."""
        while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes:
            LOG.info("waiting for nodes: %d connected, %d needed", len(nodes), self.min_available_nodes)
            time.sleep(1.0)
        return nodes


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
