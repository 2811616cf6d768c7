"""RobustStrategy on constructed Flower messages (no Ray, no network).

Checks: a reply with NaN, one with a wrong shape, one with a wrong dtype and one with missing
arrays are each rejected with a logged reason while the round completes on the others; the
aggregate is the poisonlab rule's (coordinate-wise median computed by hand); flagged nodes are
logged by node id and recorded with precision/recall against the truth; seeded sampling.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="Flower is not installed; install poisonlab[flower]")

from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from poisonlab.errors import ConfigError  # noqa: E402
from poisonlab.fl.types import Aggregate  # noqa: E402
from poisonlab.flower.arrays import ArraySpec, from_record, to_record  # noqa: E402
from poisonlab.flower.strategy import RobustStrategy, default_sampler  # noqa: E402

SPEC = ArraySpec(("w", "b"), ((2, 3), (2,)))
NODES = [101, 202, 303, 404, 505]


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Flower needs a task identity to build instruction messages outside its runtime."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)


class FakeGrid:
    """The part of a Flower Grid the strategy uses: the connected node ids."""

    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return list(self.nodes)


def mean_rule(updates, weights, ctx):
    """Plain weighted mean that selects every row (a trivial rule for plumbing tests)."""
    w = weights / weights.sum()
    return Aggregate(w @ updates, torch.ones(len(updates), dtype=torch.bool))


def median_rule(updates, weights, ctx):
    """Coordinate-wise median; flags the row farthest from it (to exercise flagging)."""
    med = updates.median(dim=0).values
    dist = torch.linalg.vector_norm(updates - med, dim=1)
    selected = torch.ones(len(updates), dtype=torch.bool)
    selected[dist.argmax()] = False
    return Aggregate(med, selected, dist)


def reply(instruction: Message, arrays: ArrayRecord | None, n: int = 10) -> Message:
    content = RecordDict({"metrics": MetricRecord({"num-examples": n, "train-loss": 1.0})})
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content, reply_to=instruction)


def start_round(strategy, global_params, nodes=NODES):
    messages = list(strategy.configure_train(1, to_record(global_params, SPEC),
                                             __import__("flwr.app", fromlist=["ConfigRecord"]).ConfigRecord(),
                                             FakeGrid(nodes)))
    return {int(m.metadata.dst_node_id): m for m in messages}


def bad_nan(vec):
    rec = to_record(vec, SPEC)
    w = rec["w"].numpy().copy()
    w[0, 1] = np.nan
    rec["w"] = Array(w)
    return rec


def bad_shape(vec):
    rec = to_record(vec, SPEC)
    rec["w"] = Array(rec["w"].numpy().reshape(3, 2).copy())
    return rec


def bad_dtype(vec):
    rec = to_record(vec, SPEC)
    rec["b"] = Array(rec["b"].numpy().astype(np.float64))
    return rec


def test_round_completes_and_rejects_nan_shape_dtype_missing_with_logged_reasons(caplog):
    strategy = RobustStrategy(median_rule, SPEC, seed=0)
    g = torch.arange(8, dtype=torch.float32)
    sent = start_round(strategy, g)
    assert sorted(sent) == NODES  # sample=1.0 -> every node
    good = {101: g + 1.0, 202: g + 2.0}
    replies = [reply(sent[101], to_record(good[101], SPEC)), reply(sent[202], to_record(good[202], SPEC)),
               reply(sent[303], bad_nan(g + 3)), reply(sent[404], bad_shape(g + 4)), reply(sent[505], None)]
    with caplog.at_level(logging.INFO, logger="poisonlab.flower"):
        arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None, "the round must complete with the two valid replies"
    # median of two rows is the lower one (torch.median); the rule's update is applied with server_lr=1
    np.testing.assert_allclose(from_record(arrays, SPEC).numpy(), (g + 1.0).numpy())
    entry = strategy.history[-1]
    reasons = {r["node"]: r["reason"] for r in entry["rejected"]}
    assert set(reasons) == {303, 404, 505}
    assert "non-finite" in reasons[303] and "NaN" in reasons[303]
    assert "shape (3, 2)" in reasons[404] and "expected (2, 3)" in reasons[404]
    assert "missing arrays" in reasons[505]
    logged = caplog.text
    for node in (303, 404, 505):
        assert f"rejected the reply of node {node}" in logged
    assert metrics is not None and metrics["train-loss"] == pytest.approx(1.0)


def test_wrong_dtype_and_error_reply_and_bad_weight_are_rejected(caplog):
    strategy = RobustStrategy(mean_rule, SPEC)
    g = torch.zeros(8)
    sent = start_round(strategy, g, nodes=[1, 2, 3, 4])
    replies = [reply(sent[1], to_record(g + 4.0, SPEC)), reply(sent[2], bad_dtype(g)),
               Message(Error(code=0, reason="client crashed"), reply_to=sent[3]),
               reply(sent[4], to_record(g + 100.0, SPEC), n=0)]
    with caplog.at_level(logging.WARNING, logger="poisonlab.flower"):
        arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(from_record(arrays, SPEC).numpy(), np.full(8, 4.0))
    reasons = {r["node"]: r["reason"] for r in strategy.history[-1]["rejected"]}
    assert "dtype float64" in reasons[2]
    assert "client crashed" in reasons[3]
    assert "num-examples" in reasons[4]
    assert "client crashed" in caplog.text


def test_all_rejected_keeps_global_and_round_still_recorded():
    strategy = RobustStrategy(mean_rule, SPEC)
    g = torch.zeros(8)
    sent = start_round(strategy, g, nodes=[1, 2])
    arrays, metrics = strategy.aggregate_train(1, [reply(sent[1], bad_nan(g)), reply(sent[2], None)])
    assert arrays is None and metrics is None
    assert len(strategy.history) == 1 and len(strategy.history[0]["rejected"]) == 2


def test_flagged_nodes_logged_with_precision_recall(caplog):
    strategy = RobustStrategy(median_rule, SPEC, malicious=[3])
    strategy.node_clients = {n: i for i, n in enumerate(NODES)}  # as discovered: partition ids 0..4
    g = torch.zeros(8)
    sent = start_round(strategy, g)
    updates = {101: 1.0, 202: 1.1, 303: 0.9, 404: 50.0, 505: 1.05}  # node 404 = client 3 boosts
    replies = [reply(sent[n], to_record(g + v, SPEC)) for n, v in updates.items()]
    with caplog.at_level(logging.INFO, logger="poisonlab.flower"):
        arrays, _ = strategy.aggregate_train(1, replies)
    entry = strategy.history[-1]
    assert entry["flagged_nodes"] == [404] and entry["flagged"] == [3] and entry["malicious"] == [3]
    assert entry["precision"] == 1.0 and entry["recall"] == 1.0
    assert entry["sampled"] == [0, 1, 2, 3, 4] and entry["selected"] == [0, 1, 2, 4]
    assert entry["update_norms"][3] == pytest.approx(50.0 * 8 ** 0.5, rel=1e-5)
    assert "flagged nodes [404]" in caplog.text
    np.testing.assert_allclose(from_record(arrays, SPEC).numpy(), np.full(8, 1.05), rtol=1e-6)  # median of the 5


def test_reply_from_unsampled_node_is_rejected():
    strategy = RobustStrategy(mean_rule, SPEC, sample=2, seed=3)
    g = torch.zeros(8)
    sent = start_round(strategy, g, nodes=[1, 2, 3, 4])
    assert len(sent) == 2
    other = next(n for n in (1, 2, 3, 4) if n not in sent)
    fake = Message(RecordDict(), dst_node_id=other, message_type=MessageType.TRAIN)
    replies = [reply(m, to_record(g + 1, SPEC)) for m in sent.values()] + [reply(fake, to_record(g + 99, SPEC))]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(from_record(arrays, SPEC).numpy(), np.ones(8))
    assert [r["node"] for r in strategy.history[-1]["rejected"]] == [other]


def test_default_sampler_is_seeded_and_sized():
    s = default_sampler(0.5, seed=1)
    assert s(0, 10) == s(0, 10) and len(s(0, 10)) == 5 and s(0, 10) == sorted(set(s(0, 10)))
    assert any(default_sampler(0.5, seed=1)(r, 10) != s(0, 10) for r in range(1, 5))
    assert default_sampler(1.0, 0)(3, 4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="sample"):
        default_sampler(0, 0)


def test_default_sampler_is_the_engines_draw_and_rounding():
    from poisonlab.fl.round import sample_clients

    for r in range(4):
        assert default_sampler(0.25, seed=3)(r, 10) == sample_clients(10, 0.25, 3, r).tolist()
    assert len(default_sampler(0.25, seed=3)(0, 10)) == 2  # 2.5 -> 2, as the engine (was 3 on Flower)


def test_rule_state_is_passed_back_and_rows_are_in_client_order():
    seen = []

    def stateful(updates, weights, ctx):
        seen.append((ctx.state, ctx.sampled.tolist(), updates[:, 0].tolist()))
        count = 0 if ctx.state is None else ctx.state["count"]
        return Aggregate(updates.mean(dim=0), torch.ones(len(updates), dtype=torch.bool), state={"count": count + 1})

    strategy = RobustStrategy(stateful, SPEC)
    g = torch.zeros(8)
    for rnd in (1, 2):
        sent = start_round(strategy, g, nodes=[1, 2, 3])
        replies = [reply(sent[n], to_record(g + n, SPEC)) for n in (3, 1, 2)]  # arrival order 3, 1, 2
        strategy.aggregate_train(rnd, replies)
    assert [s for s, _, _ in seen] == [None, {"count": 1}] and strategy.state == {"count": 2}
    assert all(c == [0, 1, 2] and u == [1.0, 2.0, 3.0] for _, c, u in seen)


def test_not_finite_round_is_not_applied_but_recorded():
    def blows_up(updates, weights, ctx):
        selected = torch.tensor([True, False])
        return Aggregate(torch.full((updates.shape[1],), float("inf")), selected)

    strategy = RobustStrategy(blows_up, SPEC, malicious=[1])
    g = torch.zeros(8)
    sent = start_round(strategy, g, nodes=[1, 2])
    arrays, metrics = strategy.aggregate_train(1, [reply(m, to_record(g + 1, SPEC)) for m in sent.values()])
    entry = strategy.history[-1]
    assert arrays is None and metrics is None and entry["applied"] is False
    assert entry["selected"] == [0] and entry["flagged"] == [1] and entry["precision"] == 1.0


def test_non_callable_aggregator_is_a_config_error():
    with pytest.raises(ConfigError, match="not callable"):
        RobustStrategy("median", SPEC)
