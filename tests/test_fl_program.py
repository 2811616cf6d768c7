"""The layer program (fl/program.py, fl/layers.py): what the compiler decides, each layout's gradients against
autograd, evaluation against the model's own forward, and one registered op serving training and evaluation."""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn
from torch.func import functional_call

from poisonlab.data.dataset import Dataset
from poisonlab.fl import layers
from poisonlab.fl.local import LocalConfig, flat_params, local_updates, stacked_logits, unflatten
from poisonlab.fl.program import COLUMNS_LAYOUT, ROWS_LAYOUT, AutogradProgram, LayerProgram, compile_layers, \
    compile_model
from poisonlab.fl.reference import reference_updates
from poisonlab.models import make_model
from poisonlab.rng import generator
from tests.support import assert_grads_match_autograd

CFG = LocalConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3)


def _randomized(model: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    gen = generator(seed, "init")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


def _tanh_mlp():
    return _randomized(nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 10)), seed=1)


def _tanh_cnn():
    return _randomized(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
                                     nn.Linear(3 * 3 * 4, 10)), seed=2)


MODELS = {  # name -> (model, sample shape, training layout)
    "mlp": (lambda: make_model("mlp", (1, 3, 4), 10, seed=3), (1, 3, 4), COLUMNS_LAYOUT),
    "cnn": (lambda: make_model("cnn", (1, 8, 8), 10, seed=4), (1, 8, 8), ROWS_LAYOUT),
    "tanh_mlp": (_tanh_mlp, (12,), COLUMNS_LAYOUT),
    "tanh_cnn": (_tanh_cnn, (1, 6, 8), ROWS_LAYOUT),
}


def _stacked(model, k, seed):
    flat = flat_params(model)
    noise = 0.1 * torch.randn(k, flat.numel(), generator=generator(seed, "params"))
    return [p.contiguous() for p in unflatten(model, flat + noise)]


def _one_by_one(model, params, x):
    """Each client's logits from the model's own forward (functional_call), stacked: (k, B, C)."""
    names = [n for n, _ in model.named_parameters()]
    return torch.stack([functional_call(model, {n: p[i] for n, p in zip(names, params)}, (x[i],))
                        for i in range(len(params[0]))])


def test_compiler_reorders_pool_and_decides_input_gradients_once():
    program = compile_layers(make_model("cnn", (1, 8, 8), 10))
    kinds = [type(op).__name__ for op in program.ops]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU", "Flatten", "Linear", "ReLU",
                     "Linear"]
    assert [op.needs_dx for op in program.ops] == [False] + [True] * 9  # the first conv skips its input gradient
    assert program.layout is ROWS_LAYOUT
    mlp = compile_layers(make_model("mlp", (32,), 10))
    assert mlp.layout is COLUMNS_LAYOUT and mlp.classes == 10


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Sigmoid(), nn.Linear(8, 10)),  # a module with no op
    nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 10)),   # settings outside the op
    nn.Sequential(nn.Flatten(0, -1), nn.Linear(12, 10)),
])
def test_modules_outside_the_vocabulary_get_the_autograd_program(model):
    assert compile_layers(model) is None
    assert isinstance(compile_model(model), AutogradProgram)


@pytest.mark.parametrize("name", list(MODELS))
def test_training_gradients_equal_autograd_in_each_layout(name):
    make, shape, layout = MODELS[name]
    model = make()
    program = compile_layers(model)
    assert program.layout is layout
    gen = generator(5, "grads")
    params = _stacked(model, 3, seed=5)
    x, y = torch.rand(3, 6, *shape, generator=gen), torch.randint(0, 10, (3, 6), generator=gen)
    w = torch.rand(3, 6, generator=gen)
    mine = program.grads(params, program.layout.inputs(x, y, w, program.classes))
    assert_grads_match_autograd(mine, lambda leaves: _one_by_one(model, leaves, x), params, y, w)


@pytest.mark.parametrize("name", list(MODELS))
def test_evaluation_equals_the_models_own_forward(name):
    make, shape, _ = MODELS[name]
    model = make()
    params = _stacked(model, 4, seed=6)
    gen = generator(6, "eval")
    x = torch.rand(4, 5, *shape, generator=gen)
    with torch.no_grad():
        assert torch.allclose(stacked_logits(model, params, x), _one_by_one(model, params, x), atol=1e-5)
        shared = x[0]
        expected = _one_by_one(model, params, shared.expand(4, *shared.shape))
        assert torch.allclose(stacked_logits(model, params, shared, shared=True), expected, atol=1e-5)


def _data(n, shape, seed):
    g = generator(seed, "test-data")
    return Dataset(torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g),
                   tuple(str(i) for i in range(10)))


def _gens(k):
    return [generator(0, "local", 0, i) for i in range(k)]


@pytest.mark.parametrize("name", ["tanh_mlp", "tanh_cnn"])
def test_tanh_training_equals_the_plain_loop(name):
    make, shape, _ = MODELS[name]
    model = make()
    datasets = [_data(n, shape, i) for i, n in enumerate([30, 7, 45])]
    gp = flat_params(model)
    fast = local_updates(model, gp, datasets, CFG, _gens(3))
    ref = reference_updates(model, gp, datasets, CFG, _gens(3))
    assert torch.allclose(fast, ref, atol=2e-5, rtol=1e-4)
    assert float(ref.norm(dim=1).min()) > 1e-3


class Cube(nn.Module):
    """A layer poisonlab does not know: x^3."""

    def forward(self, x):
        return x * x * x


CALLS: list[str] = []


@dataclass(frozen=True)
class CubeOp(layers.LayerOp):
    """The op a newcomer would add for Cube: of, forward, backward, in one class."""

    columns: ClassVar[bool] = True

    @classmethod
    def of(cls, m):
        return cls()

    def forward(self, h, params, run):
        CALLS.append("eval" if run.tape is None else "train")
        if run.tape is not None:
            run.tape.append((self, h))
        run.fresh = True
        return h * h * h

    def backward(self, g, h):
        CALLS.append("backward")
        return g * 3 * h * h, ()


@pytest.mark.parametrize("body,shape", [
    ([nn.Flatten(), nn.Linear(12, 8), Cube(), nn.Linear(8, 10)], (1, 3, 4)),                          # MLP layout
    ([nn.Conv2d(1, 2, 3, padding=1), Cube(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 3, 10)], (1, 4, 6)),
])
def test_a_registered_op_serves_training_and_evaluation(monkeypatch, body, shape):
    model = _randomized(nn.Sequential(*body), seed=7, scale=0.3)
    assert isinstance(compile_model(model), AutogradProgram)  # unknown until registered
    monkeypatch.setitem(layers.OPS, Cube, CubeOp.of)
    program = compile_model(model)
    assert isinstance(program, LayerProgram) and any(isinstance(op, CubeOp) for op in program.ops)
    CALLS.clear()
    datasets = [_data(n, shape, i) for i, n in enumerate([30, 7, 45])]
    gp = flat_params(model)
    fast = local_updates(model, gp, datasets, CFG, _gens(3))
    assert "train" in CALLS and "backward" in CALLS and "eval" not in CALLS
    assert torch.allclose(fast, reference_updates(model, gp, datasets, CFG, _gens(3)), atol=2e-5, rtol=1e-4)
    CALLS.clear()
    params = _stacked(model, 2, seed=8)
    x = torch.rand(5, *shape, generator=generator(8, "eval"))
    with torch.no_grad():
        logits = stacked_logits(model, params, x, shared=True)
    assert CALLS == ["eval"]
    assert torch.allclose(logits, _one_by_one(model, params, x.expand(2, *x.shape)), atol=1e-5)


def test_a_model_is_compiled_once_and_again_when_a_layer_is_replaced():
    model = make_model("mlp", (32,), 10)
    program = compile_layers(model)
    assert compile_layers(model) is program
    model[1] = nn.Linear(32, 64, bias=False)
    again = compile_layers(model)
    assert again is not program and again.ops[1].bias is False
