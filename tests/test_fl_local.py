"""Vectorized local training equals the plain per-client loop (same batches), incl. unequal sizes."""

import pytest
import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError, ResourceError
from poisonlab.fl.local import LocalConfig, chunk_size, flat_params, is_fast_sequential, local_updates, plan_batches
from poisonlab.fl.reference import reference_updates
from poisonlab.models import make_model
from poisonlab.rng import generator
from tests.support import assert_grads_match_autograd

CLASSES = tuple(str(i) for i in range(10))


def _data(n, shape, seed):
    g = generator(seed, "test-data")
    return Dataset(torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g), CLASSES)


def _gens(k, seed=0):
    return [generator(seed, "local", 0, i) for i in range(k)]


CFG = LocalConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3)


@pytest.mark.parametrize("name,shape", [("mlp", (32,)), ("cnn", (1, 12, 12)), ("logistic", (20,))])
def test_vectorized_equals_reference_unequal_sizes(name, shape):
    model = make_model(name, shape, 10, seed=1)
    datasets = [_data(n, shape, i) for i, n in enumerate([50, 17, 90, 64, 33])]  # 4, 2, 6, 4, 3 steps per epoch
    gp = flat_params(model)
    fast = local_updates(model, gp, datasets, CFG, _gens(5))
    ref = reference_updates(model, gp, datasets, CFG, _gens(5))
    assert fast.shape == (5, gp.numel())
    assert torch.allclose(fast, ref, atol=2e-5, rtol=1e-4)
    assert float(ref.norm(dim=1).min()) > 1e-3  # every client really trained


def test_chunking_and_generic_vmap_path_give_the_same_updates():
    shape = (1, 8, 8)
    model = make_model("cnn", shape, 10, seed=2)
    datasets = [_data(n, shape, i) for i, n in enumerate([40, 25, 31, 40])]
    gp = flat_params(model)
    whole = local_updates(model, gp, datasets, CFG, _gens(4))
    one = chunk_size(model, shape, CFG.batch_size, 1 << 40)
    assert one >= 4
    tiny = local_updates(model, gp, datasets, CFG, _gens(4), memory_budget=_bytes_for_one(model, shape))
    assert torch.allclose(whole, tiny, atol=1e-6)

    class Wrapped(nn.Module):  # not a Sequential: goes through torch.func.functional_call + vmap
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    wrapped = Wrapped(model)
    assert not is_fast_sequential(wrapped)
    generic = local_updates(wrapped, gp, datasets, CFG, _gens(4))
    assert torch.allclose(whole, generic, atol=2e-5, rtol=1e-4)


def _bytes_for_one(model, shape):
    from poisonlab.fl.local import bytes_per_client

    return bytes_per_client(model, shape, CFG.batch_size)


def test_plan_masks_padding_and_counts_steps():
    plan = plan_batches([5, 12], LocalConfig(epochs=2, batch_size=4), _gens(2))
    assert plan.steps.tolist() == [4, 6]
    # client 0: each epoch a batch of 4 and a batch of 1 -> weights 1/4 and 1/1; steps 4, 5 are padding
    assert torch.allclose(plan.weight[:4, 0].sum(dim=1), torch.ones(4))
    assert plan.weight[4:, 0].sum() == 0
    # each epoch covers each client's own rows exactly once (client 1's rows are 5..16)
    real = plan.weight[:3, 1] > 0
    assert sorted(plan.index[:3, 1][real].tolist()) == list(range(5, 17))


def test_untrainable_model_and_budget_are_refused():
    model = nn.Sequential(nn.ReLU(), nn.Flatten())  # no parameters to train (buffers are fine: test_fl_norm_layers)
    with pytest.raises(ConfigError, match="parameters"):
        local_updates(model, torch.zeros(0), [], CFG, [])
    small = make_model("mlp", (32,), 10)
    with pytest.raises(ResourceError, match="memory_budget"):
        chunk_size(small, (32,), 16, 10)


@pytest.mark.parametrize("gather_all", [True, False])
def test_hand_written_mlp_backward_equals_reference_without_bias_and_two_hidden_layers(monkeypatch, gather_all):
    import poisonlab.fl.program as program

    if not gather_all:  # the per-step gather used for data too large to gather at once
        monkeypatch.setattr(program, "GATHER_LIMIT_BYTES", 0)
    model = _randomized(nn.Sequential(nn.Flatten(), nn.Linear(12, 16, bias=False), nn.ReLU(), nn.Linear(16, 8),
                                      nn.ReLU(), nn.Linear(8, 10, bias=False)), seed=3, scale=0.5)
    assert program.compile_layers(model).layout is program.COLUMNS_LAYOUT  # the MLP layout
    _assert_equals_reference(model, (1, 3, 4), [30, 7, 45])


def _randomized(model: nn.Module, seed: int, scale: float) -> nn.Module:
    """model with N(0, scale^2) parameters from a seeded generator (bias-free layers keep no bias)."""
    gen = generator(seed, "init")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


def _assert_equals_reference(model: nn.Module, shape: tuple, sizes: list[int]) -> None:
    """The vectorized updates of clients with these data sizes equal the plain loop's, and every client trained."""
    datasets = [_data(n, shape, i) for i, n in enumerate(sizes)]
    gp = flat_params(model)
    fast = local_updates(model, gp, datasets, CFG, _gens(len(sizes)))
    ref = reference_updates(model, gp, datasets, CFG, _gens(len(sizes)))
    assert torch.allclose(fast, ref, atol=2e-5, rtol=1e-4)
    assert float(ref.norm(dim=1).min()) > 1e-3


def test_hand_written_conv_backward_equals_reference_on_unusual_layers():
    """Strided/unpadded convs without bias, a pool with stride != kernel and ceil_mode, a pool before the first
    parameter, ReLU straight after a conv and after Flatten, a bias-free Linear: all against the plain loop."""
    model = _randomized(nn.Sequential(
        nn.MaxPool2d(2, stride=1),                               # before any parameter: no input gradient needed
        nn.Conv2d(2, 5, 3, stride=2, padding=1, bias=False), nn.ReLU(),
        nn.Conv2d(5, 6, 2, padding=0, dilation=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.Flatten(), nn.ReLU(), nn.Linear(6 * 2 * 2, 7, bias=False), nn.ReLU(), nn.Linear(7, 10)), seed=4, scale=0.4)
    assert is_fast_sequential(model)
    _assert_equals_reference(model, (2, 11, 11), [30, 9, 41])


def test_hand_written_gradients_match_autograd_for_one_step():
    """The layer program's grads against torch.autograd on the summed weighted cross-entropy of 3 stacked cnn
    clients."""

    from poisonlab.fl.local import stacked_logits, unflatten
    from poisonlab.fl.program import compile_layers

    model = make_model("cnn", (1, 8, 8), 10, seed=5)
    gen = generator(5, "grads")
    params = unflatten(model, flat_params(model) + 0.1 * torch.randn(3, flat_params(model).numel(), generator=gen))
    params = [p.contiguous() for p in params]
    x, y = torch.rand(3, 6, 1, 8, 8, generator=gen), torch.randint(0, 10, (3, 6), generator=gen)
    w = torch.rand(3, 6, generator=gen)
    mine = compile_layers(model).grads(params, (x, y, w))
    assert_grads_match_autograd(mine, lambda leaves: stacked_logits(model, leaves, x), params, y, w)
