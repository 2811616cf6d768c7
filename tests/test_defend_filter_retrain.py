"""filter_retrain: a data detector turned into a training-stage defense (remove the flagged samples, retrain),
end to end on the tests' backdoored bars world (test_detect_common); the detector parameter's checks."""

import pytest
import torch

from poisonlab.defend import get
from poisonlab.defend.evaluate import backdoor_scores
from poisonlab.defend.base import Defended
from poisonlab.detect import get as get_detector
from poisonlab.errors import ConfigError
from poisonlab.models import make_model
from poisonlab.training import TrainConfig
from test_detect_common import TARGET, backdoor_world, one_thread, single_thread, stamp  # noqa: F401 (autouse)

CFG = TrainConfig(epochs=8, batch_size=32, lr=0.05)  # the world's own training


def build():
    return make_model("cnn", (1, 8, 8), 4, seed=0, channels=(8, 16), hidden=32)


def triggered(test):
    return test.replace(x=stamp(test.x))


def test_filter_retrain_removes_what_the_detector_flags_and_the_backdoor_goes():
    poisoned, mask, test, bad, _ = backdoor_world()
    before = backdoor_scores(Defended(bad), test, triggered(test), TARGET)
    defense = get("filter_retrain", detector={"name": "spectre", "params": {"epsilon": 0.3}})
    flags = get_detector("spectre", epsilon=0.3).scan(data=poisoned, model=bad).flagged
    state = {k: v.clone() for k, v in bad.state_dict().items()}
    out = defense.defend(model=bad, data=poisoned, clean=test, build=build, train_cfg=CFG, seed=0)
    assert out.details["removed"] == int(flags.sum()) and bool(flags[mask].all())
    after = backdoor_scores(out, test, triggered(test), TARGET)
    assert before.attack_success_rate > 0.9 and after.attack_success_rate < 0.1
    assert after.clean_accuracy >= before.clean_accuracy - 0.03
    assert all(torch.equal(state[k], v) for k, v in bad.state_dict().items())


def test_the_detector_parameter_is_checked():
    with pytest.raises(ConfigError, match="detector 'strip' inspects inputs; accepted here: a detector that inspects"
                                          " data"):
        get("filter_retrain", detector={"name": "strip"})
    with pytest.raises(ConfigError, match="detector 'spectre' inspects data"):
        get("input_filter", detector="spectre")
    with pytest.raises(ConfigError, match="epsilon=2"):
        get("filter_retrain", detector={"name": "spectre", "params": {"epsilon": 2}})
    with pytest.raises(ConfigError, match="detector 'spectr' is not known"):
        get("filter_retrain", detector={"name": "spectr"})
    with pytest.raises(ConfigError, match="scan_model='x'"):
        get("filter_retrain", scan_model="x")
    with pytest.raises(ConfigError, match="accepted: {name"):
        get("input_filter", detector={"nam": "strip"})
