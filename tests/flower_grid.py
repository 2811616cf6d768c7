"""An in-process Flower Grid for the server tests: poisonlab's ClientApp answers each node's messages directly.

``InProcessGrid(app, node_configs, run_config)`` holds nodes (node id -> node config). ``send_and_receive``
stamps each message with an id (as Flower's in-memory grid does), then calls the ClientApp for every node
that is up and not ``silent``; a node in ``down`` is not connected (get_node_ids leaves it out), a node in
``silent`` is connected but never answers (a node that dies mid-round), a node in ``unavailable`` is answered
by the SuperLink's "node unavailable" error reply. ``plan[round]`` (1-based train rounds) changes them before
that round: {"down": set, "silent": set, "unavailable": set, "add": {node: config}, "crash": True (raise, as
a server that dies)}. No Ray, no network.
"""

from __future__ import annotations

from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

SUPERLINK = 1  # flwr.common.constant.SUPERLINK_NODE_ID: the sender of the SuperLink's own error replies
NODE_UNAVAILABLE = 5


def set_task_identity(monkeypatch) -> None:
    """Flower needs a task identity to build messages outside its runtime."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)


class InProcessGrid:
    """The part of Flower's Grid RobustStrategy and the ServerApp use, answered in process."""

    def __init__(self, app, node_configs: dict[int, dict], run_config: dict, plan: dict | None = None):
        self.app, self.nodes, self.run_config = app, dict(node_configs), dict(run_config)
        self.down: set[int] = set()
        self.silent: set[int] = set()
        self.unavailable: set[int] = set()
        self.plan, self.applied = dict(plan or {}), 0
        self.train_round = 0
        self.timeouts: list[float] = []

    def _apply_plan(self) -> None:
        """The plan of the next train round, once, before the strategy looks at the nodes."""
        upcoming = self.train_round + 1
        if self.applied >= upcoming:
            return
        self.applied = upcoming
        step = self.plan.get(upcoming, {})
        if step.get("crash"):
            raise RuntimeError(f"the server died before round {upcoming}")
        self.nodes.update(step.get("add", {}))
        for key in ("down", "silent", "unavailable"):
            if key in step:
                setattr(self, key, set(step[key]))

    def get_node_ids(self):
        self._apply_plan()
        return [n for n in self.nodes if n not in self.down]

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            self.train_round += 1
            self.timeouts.append(timeout)
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            node = int(msg.metadata.dst_node_id)
            if node in self.down or node in self.silent:
                continue
            if node in self.unavailable:
                reply = Message(Error(code=NODE_UNAVAILABLE, reason="Error: Node Unavailable"), reply_to=msg)
                reply.metadata.__dict__["_src_node_id"] = SUPERLINK
                replies.append(reply)
                continue
            context = Context(run_id=7, node_id=node, node_config=self.nodes[node], state=RecordDict(),
                              run_config=self.run_config)
            replies.append(self.app(msg, context))
        return replies
