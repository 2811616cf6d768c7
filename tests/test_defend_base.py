"""The backdoor-defense surface: scoring (C-Acc, ASR, RA, DER by hand), the defender's clean set, the
protocol checks, the config section, and fine-pruning as the worked example."""

import copy

import pytest
import torch
from torch import nn

from poisonlab.config.load import parse
from poisonlab.config.validate import check_components
from poisonlab.data.dataset import Dataset
from poisonlab.defend import DEFENSES, Defended, get
from poisonlab.defend.evaluate import REJECTED, BackdoorScores, backdoor_scores, der, guarded_predict
from poisonlab.defend.run import apply_defense, defender_clean_set
from poisonlab.errors import ConfigError
from poisonlab.training import TrainConfig


class Fixed(nn.Module):
    """Predicts class = the input's first feature (rounded), for hand-checked scores."""

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0].round().long(), 3).float()


def data(values, labels):
    return Dataset(torch.tensor(values, dtype=torch.float32)[:, None].repeat(1, 2), torch.tensor(labels),
                   classes=("a", "b", "c"), name="t")


def test_scores_by_hand():
    test = data([0, 1, 2, 2], [0, 1, 2, 1])              # 3 of 4 right
    trig = data([0, 0, 1, 2], [1, 2, 1, 2])              # target 0: rows of class 1, 2 count except target itself
    s = backdoor_scores(Defended(Fixed()), test, trig, target=0)
    assert s.clean_accuracy == 0.75
    assert s.attack_success_rate == 0.5                  # predictions 0, 0, 1, 2 vs target 0
    assert s.robust_accuracy == 0.5                      # rows 3, 4 keep their true class
    assert s.rejected_clean == 0.0


def test_rejected_inputs_count_as_not_classified():
    test = data([0, 1, 2, 2], [0, 1, 2, 2])
    trig = data([0, 0], [1, 2])
    guard = Defended(Fixed(), reject=lambda x: x[:, 0] == 0)
    assert guarded_predict(guard, test.x).tolist() == [REJECTED, 1, 2, 2]
    s = backdoor_scores(guard, test, trig, target=0)
    assert (s.clean_accuracy, s.attack_success_rate, s.robust_accuracy) == (0.75, 0.0, 0.0)
    assert (s.rejected_clean, s.rejected_triggered) == (0.25, 1.0)


def test_der_is_backdoorbench_formula():
    before = BackdoorScores(0.90, 0.98, 0.01)
    assert der(before, BackdoorScores(0.88, 0.10, 0.8)) == pytest.approx((0.88 - 0.02 + 1) / 2)
    assert der(before, BackdoorScores(0.95, 0.99, 0.0)) == pytest.approx(0.5)   # no gain either way
    assert der(before, BackdoorScores(0.90, None, None)) is None


def test_defender_clean_set_never_takes_poisoned_rows():
    d = data(list(range(100)), [0] * 100)
    mask = torch.zeros(100, dtype=torch.bool)
    mask[:50] = True
    clean = defender_clean_set(d, mask, 0.1, seed=3)
    assert len(clean) == 5 and (clean.x[:, 0] >= 50).all()
    assert torch.equal(clean.x, defender_clean_set(d, mask, 0.1, seed=3).x)
    with pytest.raises(ConfigError, match="clean_fraction"):
        defender_clean_set(d, mask, 0.0, seed=3)


def test_a_defense_returning_the_callers_model_is_refused():
    class Lazy:
        stage, requires = "repair", ("model",)

        def defend(self, *, model=None, **_):
            return Defended(model)

    m = Fixed()
    with pytest.raises(ValueError, match="new one"):
        apply_defense(Lazy(), model=m, data=None, clean=None, build=None, train_cfg=None, seed=0)
    with pytest.raises(ConfigError, match="needs a small clean set"):
        apply_defense(get("fine_pruning"), model=m, data=None, clean=None, build=None, train_cfg=None, seed=0)


def test_fine_pruning_leaves_the_callers_model_alone_and_zeroes_pruned_units():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    before = copy.deepcopy(model.state_dict())
    clean = Dataset(torch.rand(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g), classes=("a", "b", "c"),
                    name="c")
    out = get("fine_pruning", fraction=0.5, epochs=1).defend(model=model, clean=clean)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert int((out.model[3].weight.abs().sum(dim=0) == 0).sum()) == 4
    with pytest.raises(ConfigError, match="fraction"):
        get("fine_pruning", fraction=1.5)


def test_config_section_is_checked():
    doc = {"model": {"name": "mlp"}, "defend": {"defenses": [{"name": "fine_prunin"}]}}
    with pytest.raises(ConfigError, match="defend.defenses.0.name.*fine_pruning"):
        check_components(parse(doc))
    fed = {"federated": {"clients": 4}, "defend": {"defenses": [{"name": "fine_pruning"}]}}
    with pytest.raises(ConfigError, match="centralized"):
        check_components(parse(fed))
    assert "fine_pruning" in DEFENSES


def test_a_defense_that_changes_the_callers_model_is_caught():
    class Sloppy:
        stage, requires = "repair", ("model",)

        def defend(self, *, model=None, **_):
            with torch.no_grad():
                model[0].weight.add_(1.0)
            return Defended(copy.deepcopy(model))

    m = nn.Sequential(nn.Linear(2, 3))
    with pytest.raises(RuntimeError, match="changed the caller's model"):
        apply_defense(Sloppy(), model=m, data=None, clean=None, build=None, train_cfg=None, seed=0)


def test_a_defense_that_refuses_the_model_is_recorded_not_fatal():
    from poisonlab.defend.run import run_defenses

    d = data([0, 1, 2, 2] * 5, [0, 1, 2, 2] * 5)
    out = run_defenses([("dp_sgd", {}), ("fine_pruning", {"fraction": 0.5, "epochs": 0})],
                       model=nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)),
                       poisoned=d, mask=torch.zeros(len(d), dtype=torch.bool), test_set=d, poisons=[],
                       build=lambda: nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)),
                       train_cfg=TrainConfig(epochs=1), seed=0, clean_fraction=0.5)
    assert "batch" in out["defenses"][0]["refused"].lower()
    assert "clean_accuracy" not in out["defenses"][0]
    assert out["defenses"][1]["clean_accuracy"] is not None


def test_a_bad_defense_value_is_refused_before_any_training():
    doc = {"model": {"name": "mlp"}, "defend": {"defenses": [{"name": "fine_pruning", "params": {"fraction": 2}}]}}
    with pytest.raises(ConfigError, match=r"defend.defenses.0.name: .*fraction=2 is out of range"):
        check_components(parse(doc))
