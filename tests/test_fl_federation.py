"""The round loop: learns, deterministic, resumes exactly, forces attackers in, never applies NaN."""

import json

import pytest
import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.fl.adversary import Adversary, resolve_clients
from poisonlab.fl.federation import Federation, FederationConfig
from tests.support import history_without_times
from poisonlab.fl.local import LocalConfig
from poisonlab.fl.partition import partition
from poisonlab.fl.types import Aggregate, RoundContext, Schedule
from poisonlab.models import make_model
from poisonlab.rng import generator

CLASSES = tuple(str(i) for i in range(4))


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> Aggregate:
    """FedAvg written out (McMahan et al. 2017): sum_i w_i u_i / sum_i w_i; selects every row."""
    w = weights.to(updates.dtype)
    return Aggregate(w @ updates / w.sum(), torch.ones(len(updates), dtype=torch.bool))


def _blobs(n, seed):
    """4 linearly separable Gaussian blobs in 8 dimensions."""
    g = generator(seed, "blobs")
    y = torch.randint(0, 4, (n,), generator=g)
    centers = torch.eye(4, 8) * 3
    return Dataset(centers[y] + torch.randn(n, 8, generator=g), y, CLASSES)


def _federation(rounds=6, seed=0, aggregator=None, adversaries=(), **cfg):
    train, test = _blobs(400, 1), _blobs(200, 2)
    parts = partition("quantity_skew", train.y, 10, seed=seed, beta=2.0)
    clients = [train.subset(p) for p in parts]
    config = FederationConfig(rounds=rounds, sample=cfg.pop("sample", 0.5), seed=seed, quiet=True,
                              local=LocalConfig(epochs=2, batch_size=16, lr=0.1, momentum=0.5), **cfg)
    model = make_model("mlp", (8,), 4, seed=seed, hidden=(16,))
    return Federation(model, clients, test, config, aggregator=aggregator, adversaries=adversaries)


def test_fedavg_learns_and_records_are_json():
    result = _federation(rounds=6).run()
    assert len(result.history) == 6
    assert result.history[-1].clean_accuracy > 0.9
    assert result.history[-1].clean_accuracy > result.history[0].clean_accuracy - 1e-9
    entry = json.loads(json.dumps(result.history[-1].to_dict(), allow_nan=False))
    for key in ("round", "clean_accuracy", "attack_success_rate", "loss", "sampled", "malicious", "selected",
                "flagged", "update_norms", "precision", "recall", "seconds"):
        assert key in entry
    assert len(entry["sampled"]) == 5 and len(entry["update_norms"]) == 5


def test_same_seed_is_bit_identical_other_seed_differs():
    a = _federation(seed=3).run()
    b = _federation(seed=3).run()
    c = _federation(seed=4).run()
    assert history_without_times(a.history) == history_without_times(b.history)
    assert torch.equal(a.params, b.params)
    assert history_without_times(a.history) != history_without_times(c.history)


def test_resume_equals_uninterrupted(tmp_path):
    full = _federation(rounds=6).run()
    fed = _federation(rounds=6, checkpoint_every=2, checkpoint_dir=str(tmp_path))
    fed.run(stop_after=3)  # checkpoint after round index 1; round index 2 is lost and redone
    resumed = _federation(rounds=6, checkpoint_every=2, checkpoint_dir=str(tmp_path)).run(resume=True)
    assert history_without_times(resumed.history) == history_without_times(full.history)
    assert torch.equal(resumed.params, full.params)


def test_fedavg_round_is_weighted_mean_of_updates():
    seen = {}

    def spy(updates, weights, ctx):
        seen["u"], seen["w"], seen["g"] = updates.clone(), weights.clone(), ctx.global_params.clone()
        return weighted_mean(updates, weights, ctx)

    fed = _federation(rounds=1, aggregator=spy, server_lr=0.5)
    result = fed.run()
    expected = seen["g"] + 0.5 * (seen["w"] @ seen["u"]) / seen["w"].sum()
    assert torch.allclose(result.params, expected, atol=1e-6)
    sizes = [len(fed.clients[c]) for c in result.history[0].sampled]
    assert seen["w"].tolist() == sizes


def test_attackers_forced_in_when_scheduled_and_their_rows_attacked():
    calls = []

    def negate(updates, malicious, ctx):
        calls.append((ctx.round, malicious.clone(), int((~malicious).sum())))  # honest rows seen
        out = updates.clone()
        out[malicious] = -10 * updates[malicious]
        return out

    adv = Adversary(clients=[7, 8], attack=negate, schedule=Schedule(rounds=(1, 3)), force=True)
    fed = _federation(rounds=5, sample=2, adversaries=[adv])
    hist = fed.run().history
    for rec in hist:
        if rec.round in (1, 3):
            assert rec.sampled == [7, 8] and rec.malicious == [7, 8]
        else:
            assert rec.malicious == []
    assert [c[0] for c in calls] == [1, 3]
    assert all(c[1].all() and c[2] == 0 for c in calls)
    norms = {r.round: max(r.update_norms) for r in hist}
    assert norms[1] > 3 * norms[0]  # boosted by the attack


def test_poisoned_data_used_only_in_active_rounds_and_boost():
    used = {}

    def poison(ds, cid):
        return ds.replace(y=(ds.y + 1) % 4)  # label shift

    def spy(updates, weights, ctx):
        used[ctx.round] = ctx.malicious.clone()
        return weighted_mean(updates, weights, ctx)

    adv = Adversary(clients=1, poison=poison, schedule=Schedule(start=2), boost=5.0, force=True)
    fed = _federation(rounds=4, sample=3, adversaries=[adv], aggregator=spy)
    cid = fed.adversary_clients[0][0]
    assert torch.equal(fed.poisoned[0][cid].y, (fed.clients[cid].y + 1) % 4)
    hist = fed.run().history
    assert [r.malicious for r in hist] == [[], [], [cid], [cid]]
    assert used[0].sum() == 0 and used[2].sum() == 1


def test_nan_aggregate_is_not_applied():
    def broken(updates, weights, ctx):
        agg = weighted_mean(updates, weights, ctx)
        return Aggregate(torch.full_like(agg.update, float("nan")) if ctx.round == 1 else agg.update, agg.selected)

    fed = _federation(rounds=3, aggregator=broken, eval_every=1)
    hist = fed.run().history
    assert [r.applied for r in hist] == [True, False, True]
    assert hist[1].clean_accuracy == hist[0].clean_accuracy  # global model kept


def test_flags_precision_recall_and_asr():
    def drop_first(updates, weights, ctx):
        sel = torch.ones(len(updates), dtype=torch.bool)
        sel[0] = False
        return Aggregate(weights[sel] @ updates[sel] / weights[sel].sum(), sel)

    train = _blobs(200, 5)
    triggered = train.replace(x=train.x + 100.0)  # nonsense trigger, true labels kept
    adv = Adversary(clients=[0, 1], schedule=Schedule(), force=True)
    base = _federation(rounds=2, sample=4, aggregator=drop_first, adversaries=[adv])
    fed = Federation(base.model, base.clients, base.test, FederationConfig(
        rounds=2, sample=4, quiet=True, target=0, flips=((1, 2),)), aggregator=drop_first, adversaries=[adv],
        triggered_test=triggered)
    rec = fed.run().history[-1]
    assert rec.flagged == [rec.sampled[0]] == [0]
    assert rec.precision == 1.0 and rec.recall == 0.5
    assert 0.0 <= rec.attack_success_rate <= 1.0 and "1->2" in rec.flips


def test_server_extras_for_fltrust_and_validation():
    got = {}

    def spy(updates, weights, ctx):
        got.update(ctx.extras, gp=ctx.global_params.clone(), u=updates.clone())
        got["acc"] = ctx.extras["validate"](torch.cat([torch.zeros(1, updates.shape[1]), updates]))
        return weighted_mean(updates, weights, ctx)

    base = _federation(rounds=1)
    root, val = _blobs(40, 9), _blobs(100, 10)
    fed = Federation(base.model, base.clients, base.test, base.config, aggregator=spy, root_data=root,
                     validation_data=val)
    fed.run()
    assert got["server_update"].shape == (sum(p.numel() for p in base.model.parameters()),)
    assert float(got["server_update"].norm()) > 0
    # candidate 0 is the zero update: its accuracy is the base accuracy; vectorized == one by one
    assert abs(float(got["acc"][0]) - got["base_accuracy"]) < 1e-9
    from poisonlab.training import predict

    plain = fed.model_with(got["gp"] + base.config.server_lr * got["u"][0])  # one model, the ordinary forward
    assert abs(float((predict(plain, val.x) == val.y).float().mean()) - float(got["acc"][1])) < 1e-9


def test_adversary_ids_are_seeded_disjoint_and_checked():
    advs = [Adversary(clients=[3]), Adversary(clients=2), Adversary(clients=0.2)]
    ids = resolve_clients(advs, 10, seed=0)
    assert ids[0] == [3] and len(ids[1]) == 2 and len(ids[2]) == 2
    flat = sum(ids, [])
    assert len(set(flat)) == len(flat)
    assert ids == resolve_clients(advs, 10, seed=0)
    with pytest.raises(ConfigError, match="client ids"):
        resolve_clients([Adversary(clients=[3]), Adversary(clients=[3])], 10, seed=0)
    with pytest.raises(ConfigError, match="sample"):
        FederationConfig(sample=1.5)
