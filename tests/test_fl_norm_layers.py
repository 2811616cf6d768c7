"""Batch norm, group norm, layer norm, dropout and buffers in federated training (issue #17 item 4).

The vectorized engine (fl/local.py) must equal the plain per-client loop (fl/reference.py) on the same batches
and dropout masks: updates AND the clients' buffers (batch norm's running statistics), with padded batches
(client sizes not multiples of the batch size), so batch statistics never include padding rows.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.fl.buffers import average, model_buffers
from poisonlab.fl.local import LocalConfig, flat_params, local_train
from poisonlab.fl.reference import reference_train
from poisonlab.rng import generator

CLASSES = tuple(str(i) for i in range(4))
CFG = LocalConfig(epochs=2, batch_size=8, lr=0.05, momentum=0.9, weight_decay=1e-3)
SIZES = [19, 8, 13, 5]  # 3, 1, 2, 1 steps per epoch; last batches of 3, 5, 5 real rows: padded
IMAGE, FEATURES = (2, 6, 6), (10,)


def _data(n, shape, seed):
    g = generator(seed, "norm-data")
    return Dataset(torch.rand(n, *shape, generator=g), torch.randint(0, 4, (n,), generator=g), CLASSES)


def _gens(k, seed=0):
    return [generator(seed, "local", 0, i) for i in range(k)]


def _seeded(build, seed=1):
    """The module build() makes, its floating parameters and buffers re-drawn from a seeded generator (so batch
    norm's affine weights and running statistics are not the trivial 1/0 they start at)."""
    model = build()
    g = generator(seed, "norm-init")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return model


def bn_cnn(affine=True, track=True):
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, affine=affine, track_running_stats=track), nn.ReLU(),
                         nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8, affine=affine, track_running_stats=track),
                         nn.ReLU(), nn.Linear(8, 4))


def group_norm_cnn():
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 4))


def layer_norm_mlp():
    return nn.Sequential(nn.Linear(10, 12), nn.LayerNorm(12), nn.Tanh(), nn.Linear(12, 4))


def dropout_cnn():
    """Every supported dropout: a channel mask on images (2d) and on sequences (1d), element masks on features."""
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Dropout2d(0.3), nn.ReLU(), nn.Flatten(2), nn.Dropout1d(0.2),
                         nn.Flatten(), nn.Dropout(0.4), nn.Linear(64, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 4))


class WithConstant(nn.Module):
    """A model with a constant (never updated) buffer and a BatchNorm1d: the buffer must travel unchanged."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor([2.0]))
        self.body = nn.Sequential(nn.Linear(10, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 4))

    def forward(self, x):
        return self.body(x * self.scale)


def _both(model, shape, sizes=SIZES, cfg=CFG):
    datasets = [_data(n, shape, i) for i, n in enumerate(sizes)]
    gp = flat_params(model)
    fast = local_train(model, gp, datasets, cfg, _gens(len(sizes)))
    ref = reference_train(model, gp, datasets, cfg, _gens(len(sizes)))
    return fast, ref


def _assert_same(fast, ref):
    assert torch.allclose(fast.updates, ref.updates, atol=2e-5, rtol=1e-4)
    assert float(ref.updates.norm(dim=1).min()) > 1e-3  # every client trained
    assert list(fast.buffers) == list(ref.buffers)
    for name in ref.buffers:
        assert fast.buffers[name].dtype == ref.buffers[name].dtype
        assert torch.allclose(fast.buffers[name].double(), ref.buffers[name].double(), atol=2e-5, rtol=1e-4), name


@pytest.mark.parametrize("affine,track", [(True, True), (False, True), (True, False), (False, False)])
def test_batch_norm_with_padded_batches_equals_reference(affine, track):
    model = _seeded(lambda: bn_cnn(affine, track))
    fast, ref = _both(model, IMAGE)
    _assert_same(fast, ref)
    if track:  # per-client running statistics, counted in batches: 2 epochs x (3, 1, 2, 1) steps
        assert fast.buffers["1.num_batches_tracked"].tolist() == [6, 2, 4, 2]
        stats = fast.buffers["1.running_mean"]
        assert not torch.allclose(stats[0], stats[1])  # each client its own statistics
    assert torch.equal(flat_params(model), flat_params(_seeded(lambda: bn_cnn(affine, track))))  # not modified


def test_batch_norm_statistics_exclude_padding():
    """A client of 5 samples with batch size 8: its batch statistics are those of its 5 samples alone, as the
    plain loop computes them; padding rows (copies of row 0) would shift the mean."""
    model = _seeded(lambda: bn_cnn())
    fast, ref = _both(model, IMAGE, sizes=[5, 8], cfg=LocalConfig(epochs=1, batch_size=8, lr=0.1))
    _assert_same(fast, ref)


def test_group_norm_equals_reference():
    _assert_same(*_both(_seeded(group_norm_cnn), IMAGE))


def test_layer_norm_equals_reference():
    _assert_same(*_both(_seeded(layer_norm_mlp), FEATURES))


def test_constant_buffer_travels_unchanged():
    fast, ref = _both(_seeded(WithConstant), FEATURES)
    _assert_same(fast, ref)
    assert torch.equal(fast.buffers["scale"], torch.full((len(SIZES), 1), 2.0))


def test_dropout_masks_equal_so_updates_equal():
    model = _seeded(dropout_cnn)
    fast, ref = _both(model, IMAGE)
    _assert_same(fast, ref)
    # the masks matter: the same clients without dropout (p = 0) train to other updates
    plain = _seeded(dropout_cnn)
    for m in plain.modules():
        if isinstance(m, nn.Dropout | nn.Dropout1d | nn.Dropout2d):
            m.p = 0.0
    no_drop, _ = _both(plain, IMAGE)
    assert not torch.allclose(no_drop.updates, fast.updates, atol=1e-3)


def test_dropout_does_not_touch_global_random_state():
    model = _seeded(dropout_cnn)  # construction itself reads torch's stream (PyTorch's default init)
    before = torch.random.get_rng_state()
    _both(model, IMAGE, sizes=[9, 4])
    assert torch.equal(before, torch.random.get_rng_state())


class HiddenDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        return self.fc(F.dropout(x, 0.5, self.training))


def test_random_op_inside_forward_is_refused_by_both_engines():
    model = HiddenDropout()
    datasets = [_data(9, FEATURES, 0)]
    with pytest.raises(ConfigError, match="random numbers the engine cannot see"):
        local_train(model, flat_params(model), datasets, CFG, _gens(1))
    with pytest.raises(ConfigError, match="random numbers the engine cannot see"):
        reference_train(model, flat_params(model), datasets, CFG, _gens(1))


def test_unsupported_random_module_is_refused():
    model = nn.Sequential(nn.Linear(10, 4), nn.AlphaDropout(0.2))
    with pytest.raises(ConfigError, match="AlphaDropout"):
        local_train(model, flat_params(model), [_data(9, FEATURES, 0)], CFG, _gens(1))


def test_module_vmap_cannot_run_falls_back_with_one_notice():
    """BatchNorm1d(momentum=None) reads its batch counter with .item(), which vmap refuses: the engine trains it
    with the reference loop (same batches, so equal results) after ONE notice for the model, not one per call."""
    model = nn.Sequential(nn.Linear(10, 6), nn.BatchNorm1d(6, momentum=None), nn.ReLU(), nn.Linear(6, 4))
    datasets = [_data(n, FEATURES, i) for i, n in enumerate(SIZES)]
    gp = flat_params(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = local_train(model, gp, datasets, CFG, _gens(len(SIZES)))
        again = local_train(model, gp, datasets, CFG, _gens(len(SIZES)))
    notices = [str(w.message) for w in caught if "reference loop" in str(w.message)]
    assert len(notices) == 1 and "\n" not in notices[0] and "Sequential" in notices[0]
    ref = reference_train(model, gp, datasets, CFG, _gens(len(SIZES)))
    _assert_same(fast, ref)
    assert torch.equal(again.updates, fast.updates)


def test_buffers_fedavg_weighted_by_hand():
    """Two clients, weights 1 and 3: running_mean (0, 4) -> (0*1 + 4*3) / 4 = 3; counts 2 and 6 -> 5;
    a constant buffer stays bit-identical."""
    global_buffers = {"running_mean": torch.tensor([1.0]), "num_batches_tracked": torch.tensor(0),
                      "scale": torch.tensor([0.1])}
    stacked = {"running_mean": torch.tensor([[0.0], [4.0]]), "num_batches_tracked": torch.tensor([2, 6]),
               "scale": torch.tensor([[0.1], [0.1]])}
    new = average(stacked, torch.tensor([1.0, 3.0]), global_buffers)
    assert torch.allclose(new["running_mean"], torch.tensor([3.0]))
    assert new["num_batches_tracked"].dtype == torch.long and int(new["num_batches_tracked"]) == 5
    assert torch.equal(new["scale"], torch.tensor([0.1]))
    broken = average({**stacked, "running_mean": torch.tensor([[0.0], [float("nan")]])}, torch.tensor([1.0, 3.0]),
                     global_buffers)
    assert torch.equal(broken["running_mean"], global_buffers["running_mean"])  # never a non-finite global model


def test_model_buffers_are_copies():
    model = bn_cnn()
    buffers = model_buffers(model)
    buffers["1.running_mean"] += 1
    assert float(model[1].running_mean.abs().sum()) == 0


# ---------------------------------------------------------------------------- the federation
def _bn_federation(rounds=4, engine="vectorized", **cfg):
    from poisonlab.fl.federation import Federation, FederationConfig

    clients = [_data(n, FEATURES, i) for i, n in enumerate([19, 8, 13, 5, 11, 16])]
    test = _data(40, FEATURES, 99)
    model = _seeded(lambda: nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2),
                                          nn.Linear(8, 4)))
    config = FederationConfig(rounds=rounds, sample=0.5, seed=3, quiet=True, engine=engine,
                              local=LocalConfig(epochs=1, batch_size=8, lr=0.1, momentum=0.5), **cfg)
    return Federation(model, clients, test, config)


def test_federation_sets_global_buffers_to_weighted_mean_by_hand():
    """BatchNorm1d(momentum=1) right at the input of one feature: after one local step a client's running mean and
    variance are its batch's mean and unbiased variance. Client 0 holds [1, 3] (mean 2, var 2), client 1 holds
    [5, 5, 5, 7, 7, 7] (mean 6, var 1.2); weighted by 2 and 6 samples: mean (2*2 + 6*6) / 8 = 5, variance
    (2*2 + 6*1.2) / 8 = 1.4, batches tracked 1."""
    from poisonlab.fl.federation import Federation, FederationConfig

    def client(values):
        return Dataset(torch.tensor(values).reshape(-1, 1), torch.zeros(len(values), dtype=torch.long), ("a", "b"))

    model = nn.Sequential(nn.BatchNorm1d(1, momentum=1.0), nn.Linear(1, 2))
    config = FederationConfig(rounds=1, sample=1.0, quiet=True, local=LocalConfig(epochs=1, batch_size=8, lr=0.1))
    result = Federation(model, [client([1.0, 3.0]), client([5.0, 5.0, 5.0, 7.0, 7.0, 7.0])], client([0.0, 1.0]),
                        config).run()
    assert torch.allclose(result.buffers["0.running_mean"], torch.tensor([5.0]))
    assert torch.allclose(result.buffers["0.running_var"], torch.tensor([1.4]))
    assert int(result.buffers["0.num_batches_tracked"]) == 1
    assert torch.allclose(result.model[0].running_var, torch.tensor([1.4]))  # the final model holds them too
    assert float(model[0].running_mean) == 0.0  # the given model is not modified


def test_federation_engines_agree_with_buffers_and_dropout():
    fast, ref = _bn_federation(engine="vectorized").run(), _bn_federation(engine="reference").run()
    assert torch.allclose(fast.params, ref.params, atol=1e-4)
    for name in ref.buffers:
        assert torch.allclose(fast.buffers[name].double(), ref.buffers[name].double(), atol=1e-4), name
    assert int(fast.buffers["1.num_batches_tracked"]) > 0
    assert fast.history[-1].clean_accuracy == pytest.approx(ref.history[-1].clean_accuracy)


def test_checkpoint_resume_with_buffers_equals_uninterrupted(tmp_path):
    from tests.support import history_without_times

    full = _bn_federation(rounds=4).run()
    _bn_federation(rounds=4, checkpoint_every=2, checkpoint_dir=str(tmp_path)).run(stop_after=2)
    resumed = _bn_federation(rounds=4, checkpoint_every=2, checkpoint_dir=str(tmp_path)).run(resume=True)
    assert history_without_times(resumed.history) == history_without_times(full.history)
    assert torch.equal(resumed.params, full.params)
    for name, value in full.buffers.items():
        assert torch.equal(resumed.buffers[name], value), name
    # the stored buffers are the global model's after round 2, not the initial ones
    from poisonlab.fl.checkpoint import load_checkpoint

    tensors, _ = load_checkpoint(str(tmp_path))
    assert int(tensors["buffer.1.num_batches_tracked"]) == int(full.buffers["1.num_batches_tracked"])


def test_evaluation_uses_the_global_buffers():
    """Accuracy of candidates (stacked_logits) and of the evaluation model (model_with) both read the global
    running statistics: equal logits, and other than with the initial statistics."""
    from poisonlab.fl.local import unflatten

    fed = _bn_federation(rounds=2)
    result = fed.run()
    x = fed.test.x
    plain = fed.model_with(result.params)
    plain.eval()
    with torch.no_grad():
        expected = plain(x)
    stacked = fed.accuracies(result.params.unsqueeze(0), fed.test)
    assert float(stacked[0]) == pytest.approx(float((expected.argmax(1) == fed.test.y).float().mean()))
    from poisonlab.fl.local import stacked_logits

    logits = stacked_logits(fed.model, unflatten(fed.model, result.params.unsqueeze(0)), x, shared=True,
                            buffers=fed.buffers)[0]
    assert torch.allclose(logits, expected, atol=1e-5)
    initial = stacked_logits(fed.model, unflatten(fed.model, result.params.unsqueeze(0)), x, shared=True)[0]
    assert not torch.allclose(initial, expected, atol=1e-3)


# ---------------------------------------------------------------------------- FedBN
def _fedbn(rounds=3, engine="vectorized", **cfg):
    from poisonlab.fl.federation import Federation, FederationConfig

    clients = [_data(n, FEATURES, i) for i, n in enumerate([19, 8, 13, 5])]
    model = _seeded(lambda: nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4)))
    config = FederationConfig(rounds=rounds, sample=0.5, seed=2, quiet=True, engine=engine, batch_norm="local",
                              local=LocalConfig(epochs=1, batch_size=8, lr=0.1, momentum=0.5), **cfg)
    return Federation(model, clients, _data(30, FEATURES, 99), config)


def test_fedbn_clients_keep_their_batch_norm_and_the_rule_never_sees_it():
    """FedBN (Li et al. 2021): a client trains from the shared layers and ITS OWN batch norm, stores its batch norm
    back, and the update matrix is zero on batch-norm entries; the evaluated model carries the clients' weighted
    mean batch norm."""
    from poisonlab.fl.federation import default_aggregator

    fed, mean_rule, seen = _fedbn(rounds=1), default_aggregator(), {}

    def spy(updates, weights, ctx):
        seen["updates"] = updates.clone()
        return mean_rule(updates, weights, ctx)

    fed.aggregator = spy
    initial = fed.local_norm.params.clone()  # every client: the initial model's batch norm
    result = fed.run()
    norm = fed.local_norm
    trained = fed.sample(0).tolist()
    assert float(seen["updates"][:, norm.mask].abs().sum()) == 0  # batch norm never reaches the rule
    assert float(seen["updates"][:, ~norm.mask].abs().sum()) > 0
    others = [c for c in range(4) if c not in trained]
    assert torch.equal(norm.params[others], initial[others])  # not sampled: still the initial layers
    assert not torch.allclose(norm.params[trained], initial[trained])  # sampled: their own trained layers
    assert torch.equal(norm.buffers["1.num_batches_tracked"][others], torch.zeros(len(others), dtype=torch.long))
    w = torch.tensor([19.0, 8, 13, 5])
    mean = (w.unsqueeze(1) * norm.params).sum(0) / w.sum()
    assert torch.allclose(result.params[norm.mask], mean, atol=1e-6)  # the evaluated model's batch norm
    expected = (w.unsqueeze(1).double() * norm.buffers["1.running_mean"].double()).sum(0) / w.sum()
    assert torch.allclose(result.buffers["1.running_mean"].double(), expected, atol=1e-6)


def test_fedbn_second_round_starts_from_the_clients_own_batch_norm_in_both_engines():
    fedbn = _fedbn(rounds=3)
    fast, ref = fedbn.run(), _fedbn(rounds=3, engine="reference").run()
    assert torch.allclose(fast.params, ref.params, atol=1e-4)
    assert any(len(set(fedbn.sample(r).tolist()) & set(fedbn.sample(r + 1).tolist())) for r in range(2))  # re-sampled
    shared = _fedbn(rounds=3)
    shared.config = shared.config.model_copy(update={"batch_norm": "shared"})
    assert not torch.allclose(shared.run().params, fast.params, atol=1e-4)  # keeping batch norm local matters


def test_fedbn_checkpoint_resume_equals_uninterrupted(tmp_path):
    from tests.support import history_without_times

    full = _fedbn(rounds=4).run()
    _fedbn(rounds=4, checkpoint_every=2, checkpoint_dir=str(tmp_path)).run(stop_after=2)
    fed = _fedbn(rounds=4, checkpoint_every=2, checkpoint_dir=str(tmp_path))
    resumed = fed.run(resume=True)
    assert history_without_times(resumed.history) == history_without_times(full.history)
    assert torch.equal(resumed.params, full.params)


def test_fedbn_needs_batch_norm_and_the_built_in_engine():
    from poisonlab.fl.federation import Federation, FederationConfig

    config = FederationConfig(rounds=1, quiet=True, batch_norm="local")
    with pytest.raises(ConfigError, match="batch_norm='local'.*has none"):
        Federation(nn.Sequential(nn.Linear(10, 4)), [_data(8, FEATURES, 0)], _data(8, FEATURES, 1), config)
    pytest.importorskip("flwr")
    from poisonlab.flower.prepared import Prepared

    with pytest.raises(ConfigError, match="built-in engine only"):
        Prepared(_fedbn(rounds=1), 1)


def test_fedbn_from_yaml_and_a_wrong_value_is_one_line():
    from poisonlab.builders import federation_config
    from poisonlab.config.load import parse

    doc = {"name": "bn", "data": {"dataset": "digits"}, "model": {"name": "resnet20"},
           "federated": {"clients": 4, "rounds": 1, "batch_norm": "local"}}
    assert federation_config(parse(doc), None, True, None, None).batch_norm == "local"
    with pytest.raises(ConfigError, match="batch_norm") as err:
        parse({**doc, "federated": {**doc["federated"], "batch_norm": "personal"}})
    assert "\n" not in str(err.value)


def test_batch_norm_in_chunks_of_one_client_equals_all_at_once():
    from poisonlab.fl.local import bytes_per_client

    model = _seeded(lambda: bn_cnn())
    datasets = [_data(n, IMAGE, i) for i, n in enumerate(SIZES)]
    gp = flat_params(model)
    whole = local_train(model, gp, datasets, CFG, _gens(len(SIZES)))
    one = local_train(model, gp, datasets, CFG, _gens(len(SIZES)),
                      memory_budget=bytes_per_client(model, IMAGE, CFG.batch_size))
    assert torch.allclose(whole.updates, one.updates, atol=1e-5)
    for name in whole.buffers:
        assert torch.allclose(whole.buffers[name].double(), one.buffers[name].double(), atol=1e-5), name


def test_the_bf16_program_applies_dropout_masks_and_only_batch_norm_groups_by_length():
    """autograd_program (the bf16 path) knows the dropout modules, as compile_model's program does (without them
    the masks would be drawn and silently not applied); only batch/instance norm needs padding rows kept out."""
    from torch import nn

    from poisonlab.fl.program import autograd_program, compile_model

    drop = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2))
    assert autograd_program(drop).dropout_names == compile_model(drop).dropout_names == ("2",)
    assert not autograd_program(drop).batch_stats
    assert autograd_program(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))).batch_stats
    assert not autograd_program(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))).batch_stats
